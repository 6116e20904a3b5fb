"""RespondPlugin through sdk.testing.Harness: answers, upstream never contacted."""

from __future__ import annotations

import pluggy

import sdk
import sdk.hookspecs
from plugins.builtin.respond import RespondPlugin
from sdk.testing import FakeUpstream, Harness


async def test_answers_without_the_upstream() -> None:
    h = Harness(
        RespondPlugin,
        config={"status": 503, "body": "maintenance\n", "headers": {"retry-after": "120"}},
    )
    up = FakeUpstream()
    flow = await h.run(h.make_flow("POST", "http://h.test/anything"), up)
    assert up.received == []
    assert flow.response is not None
    assert flow.response.status_code == 503
    assert flow.response.body == b"maintenance\n"
    assert flow.response.headers["retry-after"] == "120"
    assert flow.response.headers["content-type"] == "text/plain; charset=utf-8"


async def test_later_plugins_may_edit_the_response_safely() -> None:
    class Stamp:
        @sdk.hookimpl
        def trellis_response(self, flow: sdk.Flow) -> None:
            assert flow.response is not None
            flow.response.headers.add("x-stamp", "1")

    h = Harness(RespondPlugin(), Stamp())
    one = await h.run(h.make_flow())
    two = await h.run(h.make_flow())
    assert one.response is not None
    assert two.response is not None
    assert two.response.headers.get_all("x-stamp") == ["1"]
    assert one.response.status_code == 200
    assert one.response.body == b""


def test_default_instance() -> None:
    flow = Harness.make_flow()
    resp = RespondPlugin().trellis_request(flow)
    assert resp.status_code == 200


def test_hookimpls_match_the_specs() -> None:
    pm = pluggy.PluginManager(sdk.PROJECT)
    pm.add_hookspecs(sdk.hookspecs)
    pm.register(RespondPlugin())  # validates every hookimpl's name and arguments
