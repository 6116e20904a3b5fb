"""Contributed plugins: same shape as the builtins, in no default chain, extras as optional deps.

Empty on purpose: importing one plugin must not import the others.

May import: nothing.
"""
