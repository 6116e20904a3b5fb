"""Trellis's kernel: connections, protocols, the plugin host and the dispatcher.

Layers (ARCHITECTURE.md; import-linter enforces the arrows)::

    plugins ──► sdk ◄── kernel.protocol   (sans-IO: bytes in, events out)
                          ▲
                    kernel.io             (trio: sockets, timeouts, pools)
                          ▲
    kernel.pluginhost, kernel.dispatch, kernel.generation
                          ▲
                    kernel.app ◄── kernel.cli

The kernel never imports a plugin module: it knows plugin *names*, found
through the ``trellis.plugins`` entry-point group. Nothing here is public
API; plugin authors import :mod:`sdk`.
"""
