"""The lifecycle hooks' part of sdk.hookspecs: exactly the hooks pluggy calls
itself (LIFECYCLE_HOOKS), all plain ``def``."""

from __future__ import annotations

import inspect

import pluggy

import sdk
import sdk._hooks_lifecycle
import sdk.hookspecs
from tests.sdk.hookparts import hooks_of, plugin_manager


def test_the_part_holds_exactly_the_lifecycle_hooks_in_their_order() -> None:
    assert hooks_of(sdk._hooks_lifecycle) == list(sdk.hookspecs.LIFECYCLE_HOOKS)
    for name in sdk.hookspecs.LIFECYCLE_HOOKS:
        fn = getattr(sdk.hookspecs, name)
        assert fn is getattr(sdk._hooks_lifecycle, name)
        assert "Awaitable" not in str(inspect.signature(fn).return_annotation), name


def test_historic_addhooks_reaches_late_plugins() -> None:
    seen: list[str] = []

    class Extender:
        def __init__(self, label: str) -> None:
            self.label = label

        @sdk.hookimpl
        def trellis_addhooks(self, pluginmanager: pluggy.PluginManager) -> None:
            seen.append(self.label)

    pm = plugin_manager()
    pm.register(Extender("early"))
    pm.hook.trellis_addhooks.call_historic(kwargs={"pluginmanager": pm})
    pm.register(Extender("late"))
    assert seen == ["early", "late"]
