"""Example plugins for Trellis: small, tested (tests/examples) and type-checked.

May import: nothing.
"""
