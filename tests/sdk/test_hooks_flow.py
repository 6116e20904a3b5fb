"""The flow hooks' part of sdk.hookspecs: every hook that is not a lifecycle
hook, by phase; the synchronous ones never return an awaitable."""

from __future__ import annotations

import inspect

import sdk
import sdk._hooks_flow
import sdk.hookspecs
import sdk.testing
from tests.sdk.hookparts import hooks_of, plugin_manager


def test_the_part_holds_every_flow_hook() -> None:
    names = hooks_of(sdk._hooks_flow)
    everything = [n for n in vars(sdk.hookspecs) if n.startswith(sdk.HOOK_PREFIX)]
    assert names == [n for n in everything if n not in sdk.hookspecs.LIFECYCLE_HOOKS]
    assert set(names) >= sdk.hookspecs.SYNC_ONLY_HOOKS
    for name in names:
        assert getattr(sdk.hookspecs, name) is getattr(sdk._hooks_flow, name)
    for name in sdk.hookspecs.SYNC_ONLY_HOOKS:
        fn = getattr(sdk._hooks_flow, name)
        assert "Awaitable" not in str(inspect.signature(fn).return_annotation), name


def test_firstresult_through_pluggy() -> None:
    class Declines:
        @sdk.hookimpl
        def trellis_route_select(self, flow: sdk.Flow) -> None:
            return None

    class Picks:
        @sdk.hookimpl
        def trellis_route_select(self, flow: sdk.Flow) -> str:
            return "api"

    pm = plugin_manager()
    pm.register(Picks())
    pm.register(Declines())  # pluggy calls the last registered first
    flow = sdk.testing.make_flow()
    assert pm.hook.trellis_route_select(flow=flow) == "api"
