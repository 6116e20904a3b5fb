"""HeadersPlugin through sdk.testing.Harness: both phases, never answers."""

from __future__ import annotations

from typing import Any

import pluggy

import sdk
import sdk.hookspecs
from plugins.builtin.headers import HeadersPlugin
from plugins.builtin.headers.config import HeadersConfig
from sdk.testing import FakeUpstream, Harness

TABLE: dict[str, Any] = {
    "request_remove": ["cookie"],
    "request_set": {"x-env": "prod"},
    "request_add": {"x-trace": ["a", "b"]},
    "response_remove": ["server"],
    "response_set": {"cache-control": "no-store"},
    "response_add": {"x-served-by": "trellis"},
}


async def test_request_and_response_are_edited() -> None:
    h = Harness(HeadersPlugin, config=TABLE)
    upstream = FakeUpstream(
        sdk.Response.make(200, "hi", [("server", "nginx"), ("cache-control", "max-age=60")])
    )
    flow = h.make_flow("GET", "http://h.test/", [("Cookie", "s=1"), ("X-Env", "dev")])
    flow = await h.run(flow, upstream)
    sent, _ = upstream.received[0]
    assert list(sent.headers.items()) == [
        ("host", "h.test"),
        ("x-env", "prod"),
        ("x-trace", "a"),
        ("x-trace", "b"),
    ]
    assert flow.response is not None
    assert list(flow.response.headers.items()) == [
        ("cache-control", "no-store"),
        ("content-type", "text/plain; charset=utf-8"),
        ("x-served-by", "trellis"),
    ]


async def test_never_answers() -> None:
    h = Harness(HeadersPlugin, config=TABLE)
    flow = h.make_flow()
    assert await h.call("trellis_request", flow, firstresult=True) is None


async def test_local_responses_are_edited_too() -> None:
    class Answer:
        @sdk.hookimpl
        def trellis_request(self, flow: sdk.Flow) -> sdk.Response:
            return sdk.Response.make(503, "down", [("server", "x")])

    h = Harness(HeadersPlugin(sdk.structure(TABLE, HeadersConfig)), Answer())
    flow = await h.run(h.make_flow())
    assert flow.response is not None
    assert "server" not in flow.response.headers
    assert flow.response.headers["x-served-by"] == "trellis"


async def test_response_hook_tolerates_a_missing_response() -> None:
    plugin = HeadersPlugin()
    flow = Harness.make_flow()
    plugin.trellis_response(flow)
    assert flow.response is None


async def test_no_config_is_a_no_op() -> None:
    h = Harness(HeadersPlugin, config={})
    up = FakeUpstream()
    flow = await h.run(h.make_flow("GET", "http://h.test/", [("a", "1")]), up)
    assert list(up.received[0][0].headers.items()) == [("host", "h.test"), ("a", "1")]
    assert flow.response is not None
    assert flow.response.status_code == 200


def test_hookimpls_match_the_specs() -> None:
    pm = pluggy.PluginManager(sdk.PROJECT)
    pm.add_hookspecs(sdk.hookspecs)
    pm.register(HeadersPlugin())  # validates every hookimpl's name and arguments
