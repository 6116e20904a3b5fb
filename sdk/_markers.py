"""The pluggy markers and the project's distinctive names.

``PROJECT`` is the pluggy project name and the hook prefix; it lives here and
nowhere else. Plugins decorate hook implementations with :data:`hookimpl`.

May import: pluggy.
"""

from __future__ import annotations

from typing import Final

import pluggy

__all__ = ["ENTRY_POINT_GROUP", "HOOK_PREFIX", "PROJECT", "hookimpl", "hookspec"]

#: pluggy project name.
PROJECT: Final = "trellis"
#: Every hook name starts with this.
HOOK_PREFIX: Final = "trellis_"
#: The entry-point group third-party (and builtin) plugins are declared under.
ENTRY_POINT_GROUP: Final = "trellis.plugins"

#: Marks a hook specification (used by :mod:`sdk.hookspecs` only).
hookspec: Final = pluggy.HookspecMarker(PROJECT)
#: Marks a hook implementation in a plugin.
hookimpl: Final = pluggy.HookimplMarker(PROJECT)
