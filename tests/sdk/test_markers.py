"""sdk._markers: the pluggy markers and the project's distinctive names."""

from __future__ import annotations

import pluggy

import sdk
import sdk.hookspecs
from sdk._markers import hookspec


def test_markers_are_bound_to_the_project() -> None:
    assert isinstance(sdk.hookimpl, pluggy.HookimplMarker)
    assert isinstance(hookspec, pluggy.HookspecMarker)
    assert sdk.hookimpl.project_name == "trellis"
    assert hookspec.project_name == "trellis"


def test_hookimpl_records_its_options() -> None:
    class P:
        @sdk.hookimpl(tryfirst=True)
        def trellis_response(self, flow: sdk.Flow) -> None:
            pass

        @sdk.hookimpl
        def trellis_flow_done(self, flow: sdk.Flow) -> None:
            pass

    assert P.trellis_response.trellis_impl["tryfirst"] is True  # type: ignore[attr-defined]
    assert P.trellis_flow_done.trellis_impl["tryfirst"] is False  # type: ignore[attr-defined]


def test_other_projects_markers_are_ignored() -> None:
    other = pluggy.HookimplMarker("pytest")

    class P:
        @other
        def trellis_request(self, flow: sdk.Flow) -> None:
            pass

    pm = pluggy.PluginManager(sdk.PROJECT)
    pm.add_hookspecs(sdk.hookspecs)
    pm.register(P())
    assert pm.hook.trellis_request.get_hookimpls() == []


def test_names() -> None:
    assert sdk.PROJECT == "trellis"
    assert sdk.HOOK_PREFIX == sdk.PROJECT + "_"
    assert sdk.ENTRY_POINT_GROUP == sdk.PROJECT + ".plugins"
