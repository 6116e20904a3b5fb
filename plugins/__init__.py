"""Trellis plugins: ``plugins.builtin`` ships with Trellis, ``plugins.contrib`` is optional.

Empty on purpose: importing one plugin must not import the others. Each plugin
is declared under the ``trellis.plugins`` entry-point group in pyproject.toml
and loaded by name.

May import: nothing.
"""
