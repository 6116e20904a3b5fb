"""``sdk.hookspecs`` is the plugin author's reference (L4): every hook is
prefixed, documented (when / may change / return), and accepted by pluggy."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

import pluggy
import pytest

import sdk
import sdk.hookspecs
import sdk.testing

#: Every hook, in the order a plugin meets them. Adding or removing a hook is
#: an API change: update this list, docs/hooks.md and the CHANGELOG together.
EXPECTED_HOOKS = [
    "trellis_addhooks",
    "trellis_config_check",
    "trellis_startup",
    "trellis_shutdown",
    "trellis_balancer",
    "trellis_target_health",
    "trellis_health_probe",
    "trellis_plugin_error",
    "trellis_tls_passthrough",
    "trellis_tls_certificate",
    "trellis_route_select",
    "trellis_request_access",
    "trellis_request",
    "trellis_upstream_select",
    "trellis_request_body",
    "trellis_response",
    "trellis_response_body",
    "trellis_error",
    "trellis_flow_done",
]
FIRSTRESULT = {
    "trellis_tls_passthrough",
    "trellis_tls_certificate",
    "trellis_route_select",
    "trellis_request_access",
    "trellis_request",
    "trellis_upstream_select",
    "trellis_error",
}
HISTORIC = {"trellis_addhooks"}


def _specs() -> list[tuple[str, Callable[..., Any]]]:
    """The functions sdk.hookspecs offers as its own, in its order (they are
    defined in its private parts, and say they are sdk.hookspecs's)."""
    return [
        (name, fn)
        for name, fn in vars(sdk.hookspecs).items()
        if inspect.isfunction(fn) and fn.__module__ == sdk.hookspecs.__name__
    ]


def _opts(fn: Callable[..., Any]) -> dict[str, Any]:
    opts: dict[str, Any] = getattr(fn, f"{sdk.PROJECT}_spec")
    return opts


def _pm() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(sdk.PROJECT)
    pm.add_hookspecs(sdk.hookspecs)
    return pm


SPECS = _specs()
SPEC_IDS = [name for name, _ in SPECS]


def test_the_hook_list_is_pinned() -> None:
    assert SPEC_IDS == EXPECTED_HOOKS


@pytest.mark.parametrize(("name", "fn"), SPECS, ids=SPEC_IDS)
def test_spec_is_marked_and_prefixed(name: str, fn: Callable[..., Any]) -> None:
    assert name.startswith(sdk.HOOK_PREFIX)
    assert isinstance(_opts(fn), dict), f"{name} lacks @hookspec"


@pytest.mark.parametrize(("name", "fn"), SPECS, ids=SPEC_IDS)
def test_spec_docstring_documents_every_parameter(name: str, fn: Callable[..., Any]) -> None:
    doc = inspect.getdoc(fn)
    assert doc, f"{name} has no docstring"
    summary = doc.splitlines()[0]
    assert summary.endswith("."), f"{name}: the first line should be a sentence"
    params = list(inspect.signature(fn).parameters)
    for param in params:
        assert f":param {param}:" in doc, f"{name}: docstring lacks ':param {param}:'"
    # ... and documents no parameter that does not exist.
    documented = re.findall(r":param (\w+):", doc)
    assert sorted(documented) == sorted(params), f"{name}: stale :param lines"
    # More docstring than code (pytest's ratio): the body is the docstring alone.
    body = inspect.getsource(fn).split('"""')[-1].strip()
    assert body == "", f"{name}: a hookspec has no code"


@pytest.mark.parametrize(("name", "fn"), SPECS, ids=SPEC_IDS)
def test_spec_documents_its_return(name: str, fn: Callable[..., Any]) -> None:
    annotation = inspect.signature(fn).return_annotation
    doc = inspect.getdoc(fn) or ""
    if annotation in ("None", "Awaitable[None] | None"):
        assert ":return:" not in doc, f"{name} returns nothing but documents a return"
    else:
        assert ":return:" in doc, f"{name} returns {annotation} but has no ':return:'"


@pytest.mark.parametrize(("name", "fn"), SPECS, ids=SPEC_IDS)
def test_flags_are_as_documented(name: str, fn: Callable[..., Any]) -> None:
    opts = _opts(fn)
    doc = " ".join((inspect.getdoc(fn) or "").split())
    assert opts["firstresult"] is (name in FIRSTRESULT)
    assert opts["historic"] is (name in HISTORIC)
    # The flags are spelled out in prose too, for readers of docs/hooks.md.
    assert ("First result" in doc) is (name in FIRSTRESULT), name
    assert ("historic" in doc.lower()) is (name in HISTORIC), name


def test_flags_seen_through_pluggy() -> None:
    pm = _pm()
    for name in (
        "trellis_route_select",
        "trellis_request_access",
        "trellis_request",
        "trellis_upstream_select",
        "trellis_error",
    ):
        caller = getattr(pm.hook, name)
        assert caller.spec is not None
        assert caller.spec.opts["firstresult"] is True, name
    assert pm.hook.trellis_addhooks.spec.opts["historic"] is True
    assert pm.hook.trellis_response.spec.opts["firstresult"] is False
    assert pm.hook.trellis_flow_done.spec.opts["firstresult"] is False
    assert pm.hook.trellis_startup.spec.opts["historic"] is False


def test_spec_argument_names() -> None:
    pm = _pm()
    assert pm.hook.trellis_request.spec.argnames == ("flow",)
    assert pm.hook.trellis_request_body.spec.argnames == ("flow", "chunk", "end")
    assert pm.hook.trellis_error.spec.argnames == ("flow", "error")
    assert pm.hook.trellis_startup.spec.argnames == ("context",)
    assert pm.hook.trellis_shutdown.spec.argnames == ()
    assert pm.hook.trellis_tls_passthrough.spec.argnames == ("server_name", "client")
    assert pm.hook.trellis_tls_certificate.spec.argnames == ("server_name",)


def test_types_are_imported_for_type_checking_only() -> None:
    # The module stays light: the data model is named in annotations only.
    assert "Flow" not in vars(sdk.hookspecs)
    assert "Response" not in vars(sdk.hookspecs)


class _GoodPlugin:
    @sdk.hookimpl
    def trellis_request(self, flow: sdk.Flow) -> None:
        return None

    @sdk.hookimpl
    async def trellis_response(self, flow: sdk.Flow) -> None:
        return None

    @sdk.hookimpl
    def trellis_request_body(self, flow: sdk.Flow, chunk: bytes) -> None:
        # A hookimpl may take a subset of the spec's arguments (pluggy).
        return None


def test_pluggy_accepts_the_module_and_a_good_plugin() -> None:
    pm = _pm()
    assert {n for n in dir(pm.hook) if n.startswith(sdk.HOOK_PREFIX)} == set(EXPECTED_HOOKS)
    pm.register(_GoodPlugin(), name="good")
    pm.check_pending()
    assert [i.plugin_name for i in pm.hook.trellis_request.get_hookimpls()] == ["good"]


def test_misspelled_hook_is_rejected() -> None:
    class Typo:
        @sdk.hookimpl
        def trellis_requets(self, flow: sdk.Flow) -> None:
            return None

    pm = _pm()
    pm.register(Typo(), name="typo")
    with pytest.raises(pluggy.PluginValidationError, match="trellis_requets"):
        pm.check_pending()


def test_unknown_argument_is_rejected_at_register() -> None:
    class WrongArg:
        @sdk.hookimpl
        def trellis_request(self, flw: sdk.Flow) -> None:
            return None

    pm = _pm()
    with pytest.raises(pluggy.PluginValidationError, match="flw"):
        pm.register(WrongArg(), name="wrong")
