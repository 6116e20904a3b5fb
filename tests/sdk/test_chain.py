"""The harness's plugin host and dispatcher (sdk._chain): instantiation from a
config table, registration as the kernel registers, one hook called through
the fault boundary (deadlines, refused implementations)."""

from __future__ import annotations

from typing import Any

import attrs
import pluggy
import pytest
import trio

import sdk
from sdk.testing import Harness, make_flow

# ---------------------------------------------------------------------------
# call(), deadlines, validation
# ---------------------------------------------------------------------------


async def test_call_returns_all_results_or_the_first() -> None:
    class One:
        @sdk.hookimpl
        def trellis_config_check(self, routes: tuple[str, ...]) -> list[str]:
            return [] if "api" in routes else ["rules[0].route: no route named 'api'"]

    class Two:
        @sdk.hookimpl
        async def trellis_route_select(self, flow: sdk.Flow) -> str:
            return "two"

    h = Harness(One(), Two())
    assert await h.call("trellis_config_check", ("web",)) == [
        ["rules[0].route: no route named 'api'"]
    ]
    assert await h.call("trellis_config_check", ("api",)) == [[]]
    assert await h.call("trellis_route_select", make_flow(), firstresult=True) == "two"
    assert await h.call("trellis_upstream_select", make_flow(), firstresult=True) is None
    assert await h.call("trellis_response", make_flow()) == []


@pytest.mark.parametrize("how", ["swallows", "shields"])
async def test_a_hook_returning_after_its_deadline_missed_it(
    autojump_clock: trio.abc.Clock, how: str
) -> None:
    """As in the kernel: catching the Cancelled, or a shield, buys no time."""

    class Late:
        @sdk.hookimpl
        async def trellis_request(self, flow: sdk.Flow) -> sdk.Response:
            if how == "shields":
                with trio.CancelScope(shield=True):
                    await trio.sleep(3)
            else:
                try:
                    await trio.sleep(10)
                except trio.Cancelled:
                    pass
            return sdk.Response.make(200, b"late")

    with pytest.raises(sdk.PluginError, match="missed its 1s deadline"):
        await Harness(Late(), deadline=1.0).call("trellis_request", make_flow())
    flow = await Harness(Late(), deadline=1.0).run(make_flow())
    assert flow.response is not None
    assert flow.response.status_code == 502


async def test_call_refuses_an_unknown_hook_name() -> None:
    with pytest.raises(ValueError, match="trellis_requets"):
        await Harness().call("trellis_requets", make_flow())


async def test_deadline_applies_to_awaited_hooks(autojump_clock: trio.abc.Clock) -> None:
    class Slow:
        @sdk.hookimpl
        async def trellis_request(self, flow: sdk.Flow) -> None:
            await trio.sleep(10)

    with pytest.raises(sdk.PluginError, match="missed its 1s deadline") as info:
        await Harness(Slow(), deadline=1.0).call("trellis_request", make_flow())
    assert isinstance(info.value.__cause__, trio.TooSlowError)
    flow = await Harness(Slow(), deadline=1.0).run(make_flow())
    assert isinstance(flow.error, sdk.PluginError)
    assert flow.response is not None
    assert flow.response.status_code == 502


def test_misspelled_hook_is_refused() -> None:
    class Typo:
        @sdk.hookimpl
        def trellis_requets(self, flow: sdk.Flow) -> None:
            return None

    with pytest.raises(pluggy.PluginValidationError, match="trellis_requets"):
        Harness(Typo())


def test_unknown_argument_is_refused() -> None:
    class Wrong:
        @sdk.hookimpl
        def trellis_request(self, request: sdk.Request) -> None:
            return None

    with pytest.raises(pluggy.PluginValidationError):
        Harness(Wrong())


def test_async_body_transform_is_refused() -> None:
    class AsyncBody:
        @sdk.hookimpl
        async def trellis_response_body(
            self, flow: sdk.Flow, chunk: bytes, end: bool
        ) -> bytes | None:
            return None

    with pytest.raises(TypeError, match="trellis_response_body must not be async"):
        Harness(AsyncBody())


async def test_only_hookimpl_marked_methods_are_hooks() -> None:
    class Unmarked:
        called = False

        def trellis_request(self, flow: sdk.Flow) -> sdk.Response:
            Unmarked.called = True
            return sdk.Response.make(500, "unmarked")

    flow = await Harness(Unmarked()).run(make_flow())
    assert Unmarked.called is False
    assert flow.response is not None
    assert flow.response.status_code == 200


async def test_an_implementation_may_take_fewer_arguments() -> None:
    seen: list[Any] = []

    class Subset:
        @sdk.hookimpl
        def trellis_response_body(self, chunk: bytes) -> bytes:
            seen.append(chunk)
            return chunk[::-1]

        @sdk.hookimpl
        def trellis_error(self, error: sdk.ProxyError) -> None:
            seen.append(error)

    flow = await Harness(Subset()).run(make_flow(), sdk.Response.make(200, b"abc"))
    assert flow.response is not None
    assert flow.response.body == b"cba"
    assert seen == [b"abc", b""]


# ---------------------------------------------------------------------------
# Plugin classes with a config table
# ---------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class GreetConfig:
    greeting: str = "hello"
    status: int = 200


class Greet:
    config_class = GreetConfig

    def __init__(self, config: GreetConfig) -> None:
        self.config = config

    @sdk.hookimpl
    def trellis_request(self, flow: sdk.Flow) -> sdk.Response:
        return sdk.Response.make(self.config.status, self.config.greeting)


class NoConfig:
    @sdk.hookimpl
    def trellis_response(self, flow: sdk.Flow) -> None:
        assert flow.response is not None
        flow.response.headers["x-no-config"] = "1"


async def test_class_and_config_are_instantiated_like_the_kernel_does() -> None:
    h = Harness(Greet, NoConfig, config={"greeting": "bonjour", "status": 203})
    greet, plain = h.plugins
    assert isinstance(greet, Greet)
    assert greet.config == GreetConfig(greeting="bonjour", status=203)
    assert isinstance(plain, NoConfig)
    flow = await h.run(make_flow())
    assert flow.response is not None
    assert (flow.response.status_code, flow.response.body) == (203, b"bonjour")
    assert flow.response.headers["x-no-config"] == "1"


def test_config_defaults_apply() -> None:
    (greet,) = Harness(Greet).plugins
    assert isinstance(greet, Greet)
    assert greet.config == GreetConfig()


def test_bad_config_is_a_config_error_listing_every_problem() -> None:
    with pytest.raises(sdk.ConfigError) as info:
        Harness(Greet, config={"greting": "hi", "status": "200"})
    problems = info.value.problems
    assert len(problems) == 2
    assert any(p.startswith("$.plugins.greting: unknown key") for p in problems)
    assert any(p.startswith("$.plugins.status: ") for p in problems)


def test_async_certificate_hook_is_refused() -> None:
    class AsyncCert:
        @sdk.hookimpl
        async def trellis_tls_certificate(self, server_name: str) -> None:
            return None

    with pytest.raises(TypeError, match="trellis_tls_certificate must not be async"):
        Harness(AsyncCert())


async def test_tls_hooks_can_be_called_without_a_flow() -> None:
    class Both:
        @sdk.hookimpl
        def trellis_tls_certificate(self, server_name: str) -> sdk.TlsCertificate | None:
            return None

        @sdk.hookimpl
        async def trellis_tls_passthrough(
            self, server_name: str, client: sdk.ClientInfo
        ) -> sdk.Origin | None:
            return sdk.Origin("tls", server_name, 443)

    h = Harness(Both())
    client = sdk.ClientInfo(address="::1", port=1, listener="edge", tls=True)
    got = await h.call("trellis_tls_passthrough", "db.example", client, firstresult=True)
    assert got == sdk.Origin("tls", "db.example", 443)
    assert await h.call("trellis_tls_certificate", "db.example") == [None]
