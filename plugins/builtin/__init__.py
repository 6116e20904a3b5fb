"""Builtin plugins: ordinary plugins that ship with Trellis (router, headers, respond, ...).

Empty on purpose: importing one plugin must not import the others. A builtin
plugin imports only ``sdk`` (and stdlib, attrs, trio), never the kernel and
never another plugin package; import-linter enforces both.

May import: nothing.
"""
