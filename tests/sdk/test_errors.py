"""sdk._errors: the error vocabulary and its status hints."""

from __future__ import annotations

import pytest

import sdk
from sdk import (
    ClientDisconnected,
    ConfigError,
    LocalProtocolError,
    PluginError,
    ProtocolError,
    ProxyError,
    RemoteProtocolError,
    UpstreamConnectError,
    UpstreamError,
    UpstreamTimeout,
)


@pytest.mark.parametrize(
    ("cls", "parent", "status"),
    [
        (ProxyError, Exception, 500),
        (ClientDisconnected, ProxyError, 499),
        (ConfigError, ProxyError, 500),
        (PluginError, ProxyError, 502),
        (ProtocolError, ProxyError, 400),
        (LocalProtocolError, ProtocolError, 500),
        (RemoteProtocolError, ProtocolError, 400),
        (UpstreamError, ProxyError, 502),
        (UpstreamConnectError, UpstreamError, 502),
        (UpstreamTimeout, UpstreamError, 504),
    ],
)
def test_hierarchy_and_status_hints(cls: type[ProxyError], parent: type, status: int) -> None:
    assert cls.__bases__ == (parent,)
    assert cls.status_hint == status


def test_every_public_error_is_a_proxy_error() -> None:
    errors = [getattr(sdk, n) for n in sdk.__all__ if n.endswith("Error") or n.endswith("Timeout")]
    assert len(errors) == 9
    assert all(issubclass(e, ProxyError) for e in errors)


def test_status_hint_override_is_per_instance() -> None:
    exc = RemoteProtocolError("header block too large", status_hint=431)
    assert exc.status_hint == 431
    assert RemoteProtocolError.status_hint == 400
    assert RemoteProtocolError("bad").status_hint == 400


def test_message() -> None:
    assert ProxyError("boom").message == "boom"
    assert str(UpstreamTimeout("no answer in 30s")) == "no answer in 30s"
    assert ProxyError().message == ""


def test_config_error_lists_every_problem() -> None:
    problems = ["$.routes[0].upstream: not a URL", "$.kernel.plugins[1]: unknown plugin 'x'"]
    exc = ConfigError(problems, source="trellis.toml")
    assert exc.problems == problems
    assert exc.problems is not problems  # a copy
    assert exc.source == "trellis.toml"
    assert str(exc) == (
        "invalid configuration in trellis.toml:\n"
        "  $.routes[0].upstream: not a URL\n"
        "  $.kernel.plugins[1]: unknown plugin 'x'"
    )


def test_config_error_without_source() -> None:
    exc = ConfigError(("$.a: bad",))
    assert exc.problems == ["$.a: bad"]
    assert exc.source == ""
    assert str(exc) == "invalid configuration:\n  $.a: bad"


def test_plugin_error_carries_plugin_and_hook() -> None:
    cause = RuntimeError("db down")

    def hook_call() -> None:
        try:
            raise cause
        except RuntimeError as inner:
            raise PluginError("ratelimit.strict", "trellis_request_access") from inner

    with pytest.raises(PluginError) as info:
        hook_call()
    exc = info.value
    assert exc.plugin == "ratelimit.strict"
    assert exc.hook == "trellis_request_access"
    assert exc.__cause__ is cause
    assert str(exc) == "plugin 'ratelimit.strict' failed in trellis_request_access"
    assert exc.status_hint == 502


def test_plugin_error_custom_message() -> None:
    exc = PluginError("auth", "trellis_request", "missed its 5s deadline")
    assert str(exc) == "missed its 5s deadline"
    assert (exc.plugin, exc.hook) == ("auth", "trellis_request")


def test_errors_are_catchable_by_family() -> None:
    with pytest.raises(UpstreamError):
        raise UpstreamTimeout("slow")
    with pytest.raises(ProtocolError):
        raise LocalProtocolError("bad header")
