"""Example plugins: each module stands alone and imports only ``sdk`` (and stdlib, attrs, trio).

Load one with ``[kernel.modules]`` (see examples/README.md).

May import: nothing.
"""
