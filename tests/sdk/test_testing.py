"""sdk.testing: the Harness drives flows through the hooks as the kernel does."""

from __future__ import annotations

from typing import Any

import pluggy
import pytest
import trio

import sdk
from sdk.testing import FakeUpstream, Harness, make_flow, make_request
from tests.conftest import basic_config
from tests.helpers.answers import REQUEST_PHASE, SetsResponse, Watches

Log = list[tuple[str, str]]

# ---------------------------------------------------------------------------
# Recording plugins: every flow hook, sync and async
# ---------------------------------------------------------------------------


class SyncRecorder:
    """Implements every flow hook with ``def`` and records each call."""

    def __init__(self, label: str, log: Log) -> None:
        self.label, self.log = label, log

    def _rec(self, hook: str, extra: str = "") -> None:
        self.log.append((self.label, hook + extra))

    @sdk.hookimpl
    def trellis_route_select(self, flow: sdk.Flow) -> None:
        self._rec("route_select")

    @sdk.hookimpl
    def trellis_request_access(self, flow: sdk.Flow) -> None:
        self._rec("request_access")

    @sdk.hookimpl
    def trellis_request(self, flow: sdk.Flow) -> None:
        self._rec("request")

    @sdk.hookimpl
    def trellis_upstream_select(self, flow: sdk.Flow) -> None:
        self._rec("upstream_select")

    @sdk.hookimpl
    def trellis_request_body(self, flow: sdk.Flow, chunk: bytes, end: bool) -> None:
        self._rec("request_body", ":end" if end else f":{chunk.decode()}")

    @sdk.hookimpl
    def trellis_response(self, flow: sdk.Flow) -> None:
        self._rec("response")

    @sdk.hookimpl
    def trellis_response_body(self, flow: sdk.Flow, chunk: bytes, end: bool) -> None:
        self._rec("response_body", ":end" if end else f":{chunk.decode()}")

    @sdk.hookimpl
    def trellis_error(self, flow: sdk.Flow, error: sdk.ProxyError) -> None:
        self._rec("error")

    @sdk.hookimpl
    def trellis_flow_done(self, flow: sdk.Flow) -> None:
        self._rec("flow_done")


class AsyncRecorder(SyncRecorder):
    """The same, with ``async def`` wherever the kernel allows it."""

    @sdk.hookimpl
    async def trellis_route_select(self, flow: sdk.Flow) -> None:  # type: ignore[override]
        await trio.lowlevel.checkpoint()
        self._rec("route_select")

    @sdk.hookimpl
    async def trellis_request_access(self, flow: sdk.Flow) -> None:  # type: ignore[override]
        await trio.lowlevel.checkpoint()
        self._rec("request_access")

    @sdk.hookimpl
    async def trellis_request(self, flow: sdk.Flow) -> None:  # type: ignore[override]
        await trio.lowlevel.checkpoint()
        self._rec("request")

    @sdk.hookimpl
    async def trellis_upstream_select(self, flow: sdk.Flow) -> None:  # type: ignore[override]
        await trio.lowlevel.checkpoint()
        self._rec("upstream_select")

    @sdk.hookimpl
    async def trellis_response(self, flow: sdk.Flow) -> None:  # type: ignore[override]
        await trio.lowlevel.checkpoint()
        self._rec("response")

    @sdk.hookimpl
    async def trellis_error(  # type: ignore[override]
        self, flow: sdk.Flow, error: sdk.ProxyError
    ) -> None:
        await trio.lowlevel.checkpoint()
        self._rec("error")

    @sdk.hookimpl
    async def trellis_flow_done(self, flow: sdk.Flow) -> None:  # type: ignore[override]
        await trio.lowlevel.checkpoint()
        self._rec("flow_done")


def _both(hooks: list[str]) -> Log:
    """The log of plugins "a" then "b" going through ``hooks``, phase by phase."""
    return [(label, hook) for hook in hooks for label in ("a", "b")]


class Answer:
    """Answers locally from ``trellis_request`` (or another first-result hook)."""

    def __init__(self, status: int = 200, body: str = "local\n") -> None:
        self.status, self.body = status, body

    @sdk.hookimpl
    def trellis_request(self, flow: sdk.Flow) -> sdk.Response:
        return sdk.Response.make(self.status, self.body)


class Raise:
    """Raises ``exc`` in ``hook``."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    @sdk.hookimpl
    def trellis_request(self, flow: sdk.Flow) -> None:
        raise self.exc


# ---------------------------------------------------------------------------
# Order
# ---------------------------------------------------------------------------


async def test_hook_order_over_a_whole_upstream_run() -> None:
    log: Log = []
    h = Harness(SyncRecorder("a", log), AsyncRecorder("b", log))
    upstream = FakeUpstream(sdk.Response.make(200, b"resp"))
    flow = await h.run(make_flow("POST", "http://example.test/x"), upstream, body=b"req")
    assert log == _both(
        [
            "route_select",
            "request_access",
            "request",
            "upstream_select",
            "request_body:req",
            "request_body:end",
            "response",
            "response_body:resp",
            "response_body:end",
            "flow_done",
        ]
    )
    assert flow.error is None
    assert flow.response is not None
    assert flow.response.status_code == 200
    assert flow.response.body == b"resp"


async def test_async_first_then_sync_keeps_chain_order() -> None:
    log: Log = []
    h = Harness(AsyncRecorder("a", log), SyncRecorder("b", log))
    await h.run(make_flow())
    assert [hook for label, hook in log if label == "a"] == [
        hook for label, hook in log if label == "b"
    ]
    assert log[0] == ("a", "route_select")
    assert log[-2:] == [("a", "flow_done"), ("b", "flow_done")]


async def test_chain_order_is_the_given_order_not_registration_tricks() -> None:
    log: Log = []

    class First(SyncRecorder):
        @sdk.hookimpl(trylast=True)
        def trellis_request(self, flow: sdk.Flow) -> None:
            self._rec("request")

    class Last(SyncRecorder):
        @sdk.hookimpl(tryfirst=True)
        def trellis_request(self, flow: sdk.Flow) -> None:
            self._rec("request")

    h = Harness(First("a", log), Last("b", log))
    await h.call("trellis_request", make_flow())
    assert log == [("a", "request"), ("b", "request")]


# ---------------------------------------------------------------------------
# Local answers
# ---------------------------------------------------------------------------


async def test_local_answer_short_circuits_later_request_hooks_and_the_upstream() -> None:
    log: Log = []
    upstream = FakeUpstream()
    h = Harness(SyncRecorder("a", log), Answer(201, "made here\n"), AsyncRecorder("b", log))
    flow = await h.run(make_flow(), upstream, body=b"ignored")
    assert upstream.received == []
    assert flow.response is not None
    assert flow.response.status_code == 201
    assert flow.response.body == b"made here\n"
    assert flow.upstream is None
    assert flow.error is None
    # b never saw the request phase past access; response hooks still ran on both.
    assert log == [
        *_both(["route_select", "request_access"]),
        ("a", "request"),
        *_both(["response", "response_body:made here\n", "response_body:end", "flow_done"]),
    ]


async def test_access_refusal_skips_every_request_hook() -> None:
    log: Log = []

    class Refuse:
        @sdk.hookimpl
        async def trellis_request_access(self, flow: sdk.Flow) -> sdk.Response:
            return sdk.Response.make(403, "no\n")

    upstream = FakeUpstream()
    h = Harness(Refuse(), SyncRecorder("a", log))
    flow = await h.run(make_flow(), upstream)
    assert flow.response is not None
    assert flow.response.status_code == 403
    assert upstream.received == []
    hooks = [hook for _, hook in log]
    assert "request_access" not in hooks  # first result: a was never asked
    assert "request" not in hooks
    assert "upstream_select" not in hooks
    assert hooks[-4:] == ["response", "response_body:no\n", "response_body:end", "flow_done"]


async def test_response_hooks_may_change_a_local_response() -> None:
    class Tag:
        @sdk.hookimpl
        def trellis_response(self, flow: sdk.Flow) -> None:
            assert flow.response is not None
            flow.response.headers["x-tag"] = "1"
            flow.response.status_code = 202

    flow = await Harness(Answer(), Tag()).run(make_flow())
    assert flow.response is not None
    assert flow.response.status_code == 202
    assert flow.response.headers["x-tag"] == "1"


# ---------------------------------------------------------------------------
# Body transforms
# ---------------------------------------------------------------------------


class Upper:
    @sdk.hookimpl
    def trellis_request_body(self, flow: sdk.Flow, chunk: bytes, end: bool) -> bytes:
        return chunk.upper()

    @sdk.hookimpl
    def trellis_response_body(self, flow: sdk.Flow, chunk: bytes, end: bool) -> bytes | None:
        return None if end else chunk.upper()


class Trailer:
    """Holds nothing back; appends a trailer on the final call."""

    def __init__(self, trailer: bytes) -> None:
        self.trailer = trailer

    @sdk.hookimpl
    def trellis_request_body(self, flow: sdk.Flow, chunk: bytes, end: bool) -> bytes | None:
        return chunk + self.trailer if end else None

    @sdk.hookimpl
    def trellis_response_body(self, flow: sdk.Flow, chunk: bytes, end: bool) -> bytes | None:
        return chunk + self.trailer if end else None


async def test_body_transforms_are_chained_and_applied() -> None:
    upstream = FakeUpstream(sdk.Response.make(200, b"from upstream"))
    h = Harness(Upper(), Trailer(b"|t"))
    flow = await h.run(make_flow("PUT", "http://example.test/up"), upstream, body=b"payload")
    assert len(upstream.received) == 1
    request, body = upstream.received[0]
    assert body == b"PAYLOAD|t"
    assert request is flow.request
    assert flow.response is not None
    assert flow.response.body == b"FROM UPSTREAM|t"
    assert flow.bytes_in == len(b"payload")
    assert flow.bytes_out == len(b"FROM UPSTREAM|t")


async def test_transform_order_matters() -> None:
    # Trailer first: the trailer is added on the end call, after Upper saw the body.
    flow = make_flow()
    assert Harness(Trailer(b"x"), Upper()).transform("trellis_request_body", flow, b"a") == b"AX"
    assert Harness(Upper(), Trailer(b"x")).transform("trellis_request_body", flow, b"a") == b"Ax"
    assert Harness().transform("trellis_response_body", flow, b"same") == b"same"


async def test_empty_chunk_drops_data() -> None:
    class Drop:
        @sdk.hookimpl
        def trellis_response_body(self, flow: sdk.Flow, chunk: bytes, end: bool) -> bytes:
            return b""

    flow = await Harness(Drop()).run(make_flow(), sdk.Response.make(200, b"secret"))
    assert flow.response is not None
    assert flow.response.body == b""


# ---------------------------------------------------------------------------
# Errors and the terminal hook
# ---------------------------------------------------------------------------


async def test_trellis_error_supplies_the_response_for_a_proxy_error() -> None:
    log: Log = []
    exc = sdk.UpstreamTimeout("too slow")

    class Pretty:
        @sdk.hookimpl
        def trellis_error(self, flow: sdk.Flow, error: sdk.ProxyError) -> sdk.Response:
            assert isinstance(error, sdk.PluginError)
            return sdk.Response.make(error.status_hint, f"sorry: {error.__cause__}\n")

    upstream = FakeUpstream()
    h = Harness(SyncRecorder("a", log), Raise(exc), Pretty(), AsyncRecorder("b", log))
    flow = await h.run(make_flow(), upstream)
    # As at the kernel's fault boundary: the plugin's error becomes a PluginError.
    assert isinstance(flow.error, sdk.PluginError)
    assert (flow.error.plugin, flow.error.hook) == ("Raise", "trellis_request")
    assert flow.error.__cause__ is exc
    assert flow.response is not None
    assert flow.response.status_code == 502
    assert flow.response.body == b"sorry: too slow\n"
    assert upstream.received == []
    # b's error hook was not reached: first result. The response hooks see
    # the error response, as in the kernel.
    assert log[-5:] == [
        ("a", "error"),
        ("a", "response"),
        ("b", "response"),
        ("a", "flow_done"),
        ("b", "flow_done"),
    ]
    assert [hook for _, hook in log].count("flow_done") == 2


async def test_without_an_error_hook_the_status_hint_is_used() -> None:
    flow = await Harness(Raise(sdk.ProxyError("no", status_hint=418))).run(make_flow())
    assert isinstance(flow.error, sdk.PluginError)
    assert flow.response is not None
    assert flow.response.status_code == 502  # a plugin failure is always 502
    assert flow.response.body == b"502\n"

    def timeout(request: sdk.Request, body: bytes) -> sdk.Response:
        raise sdk.UpstreamTimeout("no answer")

    flow = await Harness().run(make_flow(), timeout)
    assert isinstance(flow.error, sdk.UpstreamTimeout)  # not a plugin's: kept as is
    assert flow.response is not None
    assert flow.response.status_code == 504
    assert flow.response.body == b"504\n"


async def test_upstream_failure_is_an_error_too() -> None:
    log: Log = []

    def unreachable(request: sdk.Request, body: bytes) -> sdk.Response:
        raise sdk.UpstreamConnectError("connection refused")

    flow = await Harness(SyncRecorder("a", log)).run(make_flow(), unreachable)
    assert isinstance(flow.error, sdk.UpstreamConnectError)
    assert flow.response is not None
    assert flow.response.status_code == 502
    assert ("a", "error") in log
    assert log.index(("a", "response")) > log.index(("a", "error"))  # the error page's
    assert log.count(("a", "flow_done")) == 1
    assert flow.timings.done is not None


async def test_a_failing_error_hook_is_ignored() -> None:
    class Broken:
        @sdk.hookimpl
        def trellis_error(self, flow: sdk.Flow, error: sdk.ProxyError) -> None:
            raise sdk.PluginError("broken", "trellis_error")

    flow = await Harness(Raise(sdk.ProxyError("x")), Broken()).run(make_flow())
    assert isinstance(flow.error, sdk.PluginError)
    assert flow.error.plugin == "Raise"
    assert flow.response is not None
    assert flow.response.status_code == 502
    assert flow.response.body == b"502\n"


async def test_flow_done_runs_exactly_once_even_for_a_plain_exception() -> None:
    log: Log = []
    h = Harness(Raise(RuntimeError("bug in a plugin")), SyncRecorder("a", log))
    flow = make_flow()
    with pytest.raises(RuntimeError, match="bug in a plugin"):
        await h.run(flow)
    # A plain exception is a bug: it propagates to the test, after flow_done.
    assert log.count(("a", "flow_done")) == 1
    assert ("a", "error") not in log
    assert flow.timings.done is not None


async def test_route_select_names_the_route() -> None:
    class Router:
        @sdk.hookimpl
        def trellis_route_select(self, flow: sdk.Flow) -> str | None:
            return "api" if flow.request.path.startswith("/api") else None

    h = Harness(Router())
    assert (await h.run(make_flow("GET", "http://x.test/api/1"))).route == "api"
    assert (await h.run(make_flow("GET", "http://x.test/web"))).route == "default"
    h.routes = {"web"}
    flow = await h.run(make_flow("GET", "http://x.test/api/1"))
    assert flow.error is not None
    assert flow.response is not None
    assert flow.response.status_code == 500


async def test_upstream_selection() -> None:
    class Pick:
        @sdk.hookimpl
        def trellis_upstream_select(self, flow: sdk.Flow) -> sdk.Origin:
            return sdk.Origin("http", "picked.test", 8081)

    class Preset:
        @sdk.hookimpl
        def trellis_request(self, flow: sdk.Flow) -> None:
            flow.upstream = sdk.Origin("https", "preset.test", 443)

    flow = await Harness(Pick()).run(make_flow())
    assert flow.upstream == sdk.Origin("http", "picked.test", 8081)
    flow = await Harness(Preset(), Pick()).run(make_flow())
    assert flow.upstream == sdk.Origin("https", "preset.test", 443)
    flow = await Harness().run(make_flow())
    assert flow.upstream == sdk.Origin("http", "upstream.test", 80)


async def test_timings_are_filled() -> None:
    flow = await Harness().run(make_flow())
    t = flow.timings
    assert t.started_at > 0
    assert t.response_head is not None
    assert t.done is not None
    assert t.request_head <= t.response_head <= t.done
    assert t.duration is not None
    assert t.duration >= 0


# ---------------------------------------------------------------------------
# FakeUpstream and the upstream argument
# ---------------------------------------------------------------------------


async def test_fake_upstream_records_requests_and_answers_copies() -> None:
    upstream = FakeUpstream(sdk.Response.make(200, b"ok", [("x-up", "1")]))
    h = Harness()
    first = await h.run(make_flow("POST", "http://example.test/a"), upstream, body=b"one")
    second = await h.run(make_flow("GET", "http://example.test/b"), upstream)
    assert [(r.method, r.path, body) for r, body in upstream.received] == [
        ("POST", "/a", b"one"),
        ("GET", "/b", b""),
    ]
    assert first.response is not None
    assert second.response is not None
    first.response.headers["x-up"] = "changed"
    assert second.response.headers["x-up"] == "1"
    assert upstream.response.headers["x-up"] == "1"
    assert first.response is not second.response


async def test_default_upstream_and_response_shortcut() -> None:
    flow = await Harness().run(make_flow())
    assert flow.response is not None
    assert (flow.response.status_code, flow.response.body) == (200, b"upstream\n")
    flow = await Harness().run(make_flow(), sdk.Response.make(404, b"gone"))
    assert flow.response is not None
    assert (flow.response.status_code, flow.response.body) == (404, b"gone")


def test_make_request_and_make_flow() -> None:
    r = make_request("POST", "https://Example.test:8443/a/b?c=1#frag", [("X-A", "1")])
    assert (r.method, r.scheme, r.authority, r.path) == (
        "POST",
        "https",
        "Example.test:8443",
        "/a/b?c=1",
    )
    assert list(r.headers.items()) == [("host", "Example.test:8443"), ("x-a", "1")]
    assert (r.host, r.port) == ("example.test", 8443)
    assert make_request("GET", "http://h").path == "/"
    assert make_request("GET", "http://h?q=1").path == "/?q=1"
    assert make_request("GET", "http://h?q=1").authority == "h"
    flow = make_flow("GET", "http://h/", client=("10.0.0.9", 1234), listener="edge")
    assert (flow.client.address, flow.client.port, flow.client.listener) == (
        "10.0.0.9",
        1234,
        "edge",
    )
    assert flow.timings.request_head > 0
    assert Harness.make_flow is make_flow


# ---------------------------------------------------------------------------
# Registration, names, and more whole flows (call() and the config table: test_chain.py)
# ---------------------------------------------------------------------------


def test_addhooks_is_called_once_per_plugin() -> None:
    seen: list[pluggy.PluginManager] = []

    class Extends:
        @sdk.hookimpl
        def trellis_addhooks(self, pluginmanager: pluggy.PluginManager) -> None:
            seen.append(pluginmanager)

    h = Harness(Extends(), Extends(), SyncRecorder("a", []))
    assert seen == [h.pm, h.pm]


async def test_proxy_error_in_a_body_transform_ends_the_flow() -> None:
    class Refuse:
        @sdk.hookimpl
        def trellis_request_body(self, flow: sdk.Flow, chunk: bytes, end: bool) -> None:
            if b"virus" in chunk:
                raise sdk.ProxyError("infected")

    upstream = FakeUpstream()
    flow = await Harness(Refuse()).run(make_flow("POST"), upstream, body=b"a virus")
    assert upstream.received == []
    assert isinstance(flow.error, sdk.PluginError)
    assert flow.error.hook == "trellis_request_body"
    assert "infected" in str(flow.error)


def test_plugins_are_named_like_instances() -> None:
    h = Harness(Upper(), Trailer(b""), Trailer(b""))
    assert [h.pm.get_name(p) for p in h.plugins] == ["Upper", "Trailer#1", "Trailer#2"]


async def test_the_harness_runs_flows_as_the_kernel_does() -> None:
    """Where it differed: response hooks on error pages, every terminal hook
    after a failing one, the same plugin twice, async lifecycle hooks."""
    log: Log = []

    class FailingDone:
        @sdk.hookimpl
        def trellis_flow_done(self, flow: sdk.Flow) -> None:
            raise RuntimeError("bookkeeping bug")

    a = SyncRecorder("a", log)
    h = Harness(a, FailingDone(), a, AsyncRecorder("b", log))
    assert len(h.plugins) == 3  # a once, at its first place
    with pytest.raises(RuntimeError, match="bookkeeping bug"):
        await h.run(make_flow())
    assert log[-2:] == [("a", "flow_done"), ("b", "flow_done")]  # b still ran

    class AsyncStart:
        @sdk.hookimpl
        async def trellis_startup(self, context: sdk.StartupContext) -> None:
            pass

    with pytest.raises(TypeError, match="trellis_startup must not be async"):
        Harness(AsyncStart())


async def test_a_request_without_a_body_runs_no_body_hooks() -> None:
    """As in the kernel: they used to be called with an empty chunk and the end."""
    log: Log = []
    h = Harness(SyncRecorder("a", log))
    await h.run(make_flow("GET", "http://example.test/x"))
    assert ("a", "request_body:end") not in log
    assert ("a", "upstream_select") in log


async def test_every_flow_done_runs_after_one_raised_a_base_exception() -> None:
    """As in the kernel; a SystemExit in the first used to skip the others."""
    log: Log = []

    class Exits(SyncRecorder):
        @sdk.hookimpl
        def trellis_flow_done(self, flow: sdk.Flow) -> None:
            self._rec("flow_done")
            raise SystemExit(3)

    h = Harness(Exits("a", log), SyncRecorder("b", log))
    with pytest.raises(SystemExit):
        await h.run(make_flow())
    assert log[-2:] == [("a", "flow_done"), ("b", "flow_done")]


# ---------------------------------------------------------------------------
# Results the kernel refuses, fail_open, and whose timeout it was
# ---------------------------------------------------------------------------


class Returns:
    """Returns ``result`` from every first-result and body hook it has."""

    def __init__(self, result: object) -> None:
        self.result = result

    @sdk.hookimpl
    def trellis_route_select(self, flow: sdk.Flow) -> object:
        return self.result if isinstance(self.result, list) else None

    @sdk.hookimpl
    def trellis_upstream_select(self, flow: sdk.Flow) -> object:
        return self.result if self.result == "http://a" else None

    @sdk.hookimpl
    def trellis_request(self, flow: sdk.Flow) -> object:
        return self.result if not isinstance(self.result, list | bytearray) else None

    @sdk.hookimpl
    def trellis_response_body(self, flow: sdk.Flow, chunk: bytes, end: bool) -> object:
        return self.result if isinstance(self.result, bytearray) else None


@pytest.mark.parametrize(
    ("result", "hook", "said"),
    [
        (["r"], "trellis_route_select", "returned list, not str or None"),
        ({"status": 200}, "trellis_request", "returned dict, not Response or None"),
        ("deny", "trellis_request", "returned str, not Response or None"),
        (
            sdk.Response(101),
            "trellis_request",
            "returned a Response whose status_code is 101, not 200-599",
        ),
        (
            sdk.Response(200, body="text"),  # type: ignore[arg-type]
            "trellis_request",
            "returned a Response whose body is str, not bytes",
        ),
    ],
    ids=["route-list", "request-dict", "request-str", "status-101", "str-body"],
)
async def test_a_result_the_kernel_refuses_is_the_plugins_failure(
    result: object, hook: str, said: str
) -> None:
    """It used to be used as is: an AttributeError deep inside the harness,
    or a flow the kernel would never have sent."""
    upstream = FakeUpstream()
    h = Harness(Returns(result))
    flow = await h.run(make_flow(), upstream)
    assert isinstance(flow.error, sdk.PluginError)
    assert (flow.error.plugin, flow.error.hook) == ("Returns", hook)
    assert str(flow.error) == f"plugin 'Returns' raised TypeError in {hook}: {said}"
    assert isinstance(flow.error.__cause__, TypeError)
    assert flow.response is not None
    assert flow.response.status_code == 502
    assert upstream.received == []
    assert h.failures == [flow.error]
    with pytest.raises(sdk.PluginError, match=said):
        await h.call(hook, make_flow(), firstresult=True)


async def test_a_wrong_upstream_choice_and_body_result() -> None:
    flow = await Harness(Returns("http://a")).run(make_flow())
    # trellis_request returned the str first: that is the failure reported.
    assert isinstance(flow.error, sdk.PluginError)
    assert flow.error.hook == "trellis_request"
    with pytest.raises(sdk.PluginError, match="returned str, not Origin or None"):
        await Harness(Returns("http://a")).call("trellis_upstream_select", make_flow())

    class Text:
        @sdk.hookimpl
        def trellis_response_body(self, chunk: bytes) -> str:
            return chunk.decode()

    with pytest.raises(sdk.PluginError, match="returned str, not bytes or None"):
        Harness(Text()).transform("trellis_response_body", make_flow(), b"x")
    flow = await Harness(Text()).run(make_flow())
    assert isinstance(flow.error, sdk.PluginError)
    assert flow.error.hook == "trellis_response_body"
    # A bytearray is taken and copied to bytes, as in the kernel.
    out = Harness(Returns(bytearray(b"ok"))).transform("trellis_response_body", make_flow(), b"x")
    assert (out, type(out)) == (b"okok", bytes)


async def test_a_response_a_response_hook_spoils_is_a_500_without_response_hooks() -> None:
    """As in the kernel: refused before a byte would go out, and the error
    page skips the response hooks, which would spoil it the same way."""
    log: Log = []

    class Spoil(SyncRecorder):
        @sdk.hookimpl
        def trellis_response(self, flow: sdk.Flow) -> None:
            self._rec("response")
            assert flow.response is not None
            flow.response.status_code = "200"  # type: ignore[assignment]

    h = Harness(Spoil("a", log))
    flow = await h.run(make_flow())
    assert isinstance(flow.error, sdk.LocalProtocolError)
    assert str(flow.error) == (
        "after the response hooks of 'Spoil', the response's status_code is '200', not 200-599"
    )
    assert flow.response is not None
    assert flow.response.status_code == 500
    assert [hook for _, hook in log].count("response") == 1  # not on the page
    assert ("a", "error") in log
    assert h.failures == []  # no plugin failed: the kernel reports none either
    flow = await Harness(Answer(), Spoil("a", [])).run(make_flow())
    # A local answer the same (the kernel words both alike).
    assert str(flow.error).startswith("after the response hooks of 'Spoil', the response's")

    class Replace:
        @sdk.hookimpl
        def trellis_response(self, flow: sdk.Flow) -> None:
            flow.response = "no"  # type: ignore[assignment]

    flow = await Harness(Spoil("a", []), Replace()).run(make_flow())
    assert str(flow.error) == (
        "after the response hooks of 'Spoil', 'Replace', flow.response is str, not sdk.Response"
    )
    assert flow.response is not None
    assert flow.response.status_code == 500


async def test_an_upstream_stand_in_answering_nonsense_is_the_tests_bug() -> None:
    with pytest.raises(TypeError, match="the upstream returned str"):
        await Harness().run(make_flow(), lambda request, body: "ok")  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match="the upstream's response status_code is 101"):
        await Harness().run(make_flow(), sdk.Response(101))


class Boom:
    @sdk.hookimpl
    def trellis_request(self, flow: sdk.Flow) -> None:
        raise KeyError("nope")


async def test_fail_open_skips_a_failing_plugin_and_records_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    upstream = FakeUpstream()
    h = Harness(
        Raise(sdk.ProxyError("refused")),
        Boom(),
        on_error={"Raise": "fail_open", "Boom": "fail_open"},
    )
    flow = await h.run(make_flow(), upstream)
    assert flow.error is None
    assert flow.response is not None
    assert flow.response.status_code == 200
    assert len(upstream.received) == 1
    assert [(e.plugin, e.hook, str(e)) for e in h.failures] == [
        (
            "Raise",
            "trellis_request",
            "plugin 'Raise' raised ProxyError in trellis_request: refused",
        ),
        ("Boom", "trellis_request", "plugin 'Boom' raised KeyError in trellis_request: 'nope'"),
    ]
    assert "plugin 'Boom' raised KeyError in trellis_request" in caplog.text
    # Counts as None: the next plugin answers.
    h = Harness(Boom(), Answer(201), on_error="fail_open")
    none, answer = await h.call("trellis_request", make_flow())
    assert none is None
    assert answer.status_code == 201
    # A wrong result fails open too.
    flow = await Harness(Returns("deny"), on_error="fail_open").run(make_flow())
    assert flow.response is not None
    assert flow.response.status_code == 200


async def test_fail_open_is_per_plugin() -> None:
    h = Harness(Boom(), Raise(sdk.ProxyError("x")), on_error={"Boom": "fail_open"})
    flow = await h.run(make_flow())
    assert isinstance(flow.error, sdk.PluginError)
    assert flow.error.plugin == "Raise"
    assert [e.plugin for e in h.failures] == ["Boom", "Raise"]
    # Names with "#i" for equal class names, as the plugins are named.
    h = Harness(Boom(), Boom(), on_error={"Boom#1": "fail_open"})
    with pytest.raises(KeyError):  # Boom#0 fails closed: a plain bug reaches the test
        await h.call("trellis_request", make_flow())


def test_on_error_is_checked() -> None:
    with pytest.raises(ValueError, match="no plugin is named 'Bom'"):
        Harness(Boom(), on_error={"Bom": "fail_open"})
    with pytest.raises(ValueError, match="'open' for 'Boom' is not one of"):
        Harness(Boom(), on_error={"Boom": "open"})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="'fail-open' for 'Boom' is not one of"):
        Harness(Boom(), on_error="fail-open")  # type: ignore[arg-type]


class OwnTimeout:
    @sdk.hookimpl
    async def trellis_request(self, flow: sdk.Flow) -> None:
        with trio.fail_after(0.1):
            await trio.sleep(1)


async def test_a_plugins_own_timeout_is_not_the_harness_deadline(
    autojump_clock: trio.abc.Clock,
) -> None:
    """It used to be reported as "missed its 5s deadline" after 0.1 s."""
    with pytest.raises(trio.TooSlowError) as info:  # a plain exception, as any other
        await Harness(OwnTimeout()).run(make_flow())
    assert not isinstance(info.value, sdk.PluginError)
    h = Harness(OwnTimeout(), on_error="fail_open")
    flow = await h.run(make_flow())
    assert flow.error is None
    (failure,) = h.failures
    assert str(failure) == "plugin 'OwnTimeout' raised TooSlowError in trellis_request: "
    assert "missed its" not in str(failure)


async def test_a_missed_deadline_fails_open_too(autojump_clock: trio.abc.Clock) -> None:
    class Slow:
        @sdk.hookimpl
        async def trellis_request(self, flow: sdk.Flow) -> None:
            await trio.sleep(10)

    h = Harness(Slow(), deadline=1.0, on_error="fail_open")
    flow = await h.run(make_flow())
    assert flow.error is None
    assert [str(e) for e in h.failures] == [
        "plugin 'Slow' missed its 1s deadline in trellis_request"
    ]


# ---------------------------------------------------------------------------
# The same misbehaving plugin through the kernel (real sockets) and the harness
# ---------------------------------------------------------------------------


class SpoilsStatus:
    @sdk.hookimpl
    def trellis_response(self, flow: sdk.Flow) -> None:
        assert flow.response is not None
        flow.response.status_code = "200"  # type: ignore[assignment]


class HearsFailures:
    """What the kernel's fault boundary reports (``trellis_plugin_error``)."""

    def __init__(self) -> None:
        self.heard: list[tuple[str, str]] = []

    @sdk.hookimpl
    def trellis_plugin_error(
        self, plugin: str, hook: str, error: sdk.PluginError, fail_open: bool
    ) -> None:
        self.heard.append((hook, str(error)))


class QuickOwnTimeout:
    @sdk.hookimpl
    async def trellis_request(self, flow: sdk.Flow) -> None:
        with trio.fail_after(0.01):
            await trio.sleep(1)


MISBEHAVING: dict[str, tuple[Any, str]] = {
    "request-str": (lambda: Returns("deny"), "fail_closed"),
    "request-101": (lambda: Returns(sdk.Response(101)), "fail_closed"),
    "str-body": (lambda: Returns(sdk.Response(200, body="text")), "fail_closed"),
    "route-list": (lambda: Returns(["r"]), "fail_closed"),
    "proxy-error": (lambda: Raise(sdk.ProxyError("no", status_hint=418)), "fail_closed"),
    "spoilt": (SpoilsStatus, "fail_closed"),
    "open-key-error": (Boom, "fail_open"),
    "open-wrong-type": (lambda: Returns("deny"), "fail_open"),
    "open-own-timeout": (QuickOwnTimeout, "fail_open"),
    "set-101": (lambda: SetsResponse("trellis_request", lambda: sdk.Response(101)), "fail_closed"),
    "set-str": (lambda: SetsResponse("trellis_route_select", lambda: "no"), "fail_closed"),
    "open-set-101": (
        lambda: SetsResponse("trellis_upstream_select", lambda: sdk.Response(101)),
        "fail_open",
    ),
}


@pytest.mark.parametrize("case", list(MISBEHAVING))
async def test_the_harness_and_the_kernel_agree(
    case: str,
    start_proxy: Any,
    upstream: Any,
    client: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Status, the failures the fault boundary reported, word for word."""
    make, policy = MISBEHAVING[case]
    name = type(make()).__name__  # the harness names an instance by its class
    hears = HearsFailures()
    cfg = basic_config(upstream.port, f'[kernel.policy.{name}]\non_error = "{policy}"\n')
    cfg = cfg.replace("[kernel]\n", f'[kernel]\nplugins = ["hears", "{name}"]\n')
    app = await start_proxy(cfg, extra_plugins={"hears": hears, name: make()})
    raw = await client.exchange(
        app.port(), b"GET /echo HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    )
    (resp,) = client.parse_responses(raw)

    h = Harness(make(), on_error=policy)
    flow = await h.run(make_flow("GET", "http://a/echo"))
    assert flow.response is not None
    assert flow.response.status_code == resp["status"]
    assert len(hears.heard) == (0 if case == "spoilt" else 1)
    assert [(e.hook, str(e)) for e in h.failures] == hears.heard
    if isinstance(flow.error, sdk.LocalProtocolError):  # no plugin named: the kernel logs it
        assert str(flow.error) in caplog.text
    assert (flow.error is None) == (resp["status"] == 200)


@pytest.mark.parametrize(
    ("hook", "returns"),
    [(hook, None) for hook in REQUEST_PHASE]
    + [("trellis_request_access", "response"), ("trellis_request", "response")],
)
async def test_a_set_response_the_harness_and_the_kernel_agree(
    hook: str, returns: str | None, start_proxy: Any, upstream: Any, client: Any
) -> None:
    """The answer, and which hooks ran, for a response a request-phase hook
    set (and, with ``returns``, another one it returned, which wins)."""

    def make() -> SetsResponse:
        answer = (lambda: sdk.Response.make(202, b"returned")) if returns else None
        return SetsResponse(hook, returns=answer)

    kernel_watch = Watches()
    cfg = basic_config(upstream.port).replace(
        "[kernel]\n", '[kernel]\nplugins = ["SetsResponse", "Watches"]\n'
    )
    app = await start_proxy(cfg, extra_plugins={"SetsResponse": make(), "Watches": kernel_watch})
    raw = await client.exchange(
        app.port(), b"GET /echo HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    )
    (resp,) = client.parse_responses(raw)
    await trio.sleep(0.05)

    watch = Watches()
    fake = FakeUpstream()
    flow = await Harness(make(), watch).run(make_flow("GET", "http://a/echo"), fake)
    assert flow.response is not None
    assert (flow.response.status_code, flow.response.body) == (resp["status"], resp["body"])
    assert flow.response.headers["x-seen"] == resp["headers"]["x-seen"] == "yes"
    assert watch.ran == kernel_watch.ran
    assert fake.received == upstream.requests == []


# ---------------------------------------------------------------------------
# Answering by setting flow.response in the request phase
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("hook", REQUEST_PHASE)
async def test_a_response_a_request_phase_hook_sets_is_the_answer(hook: str) -> None:
    """It used to be ignored: the upstream was asked, and its answer replaced it."""
    watch, fake = Watches(), FakeUpstream()
    flow = await Harness(SetsResponse(hook), watch).run(make_flow(), fake)
    assert flow.error is None
    assert flow.response is not None
    assert (flow.response.status_code, flow.response.body) == (
        201,
        b"SET IN " + hook.upper().encode(),
    )
    assert fake.received == []
    assert flow.upstream is None
    before = list(REQUEST_PHASE[: REQUEST_PHASE.index(hook)])
    assert watch.ran == [*before, "trellis_response", "trellis_flow_done"]


async def test_a_returned_response_wins_over_a_set_one() -> None:
    sets = SetsResponse("trellis_request", returns=lambda: sdk.Response.make(202, "mine"))
    flow = await Harness(sets).run(make_flow())
    assert flow.response is not None
    assert (flow.response.status_code, flow.response.body) == (202, b"mine")
    # A route name or an origin returned along with it: the set one answers.
    origin = sdk.Origin("http", "a.test", 80)
    for hook, returns in (("trellis_route_select", "api"), ("trellis_upstream_select", origin)):
        h = Harness(SetsResponse(hook, returns=returns))
        h.routes = {"api"}
        fake = FakeUpstream()
        flow = await h.run(make_flow(), fake)
        assert flow.response is not None
        assert flow.response.status_code == 201
        assert fake.received == []
        assert flow.route == ("api" if hook == "trellis_route_select" else "default")


@pytest.mark.parametrize("hook", REQUEST_PHASE)
async def test_a_set_response_that_cannot_be_sent_is_the_setting_plugin_s_failure(
    hook: str,
) -> None:
    fake = FakeUpstream()
    h = Harness(SetsResponse(hook, lambda: sdk.Response(101)), Watches())
    flow = await h.run(make_flow(), fake)
    assert isinstance(flow.error, sdk.PluginError)
    assert (flow.error.plugin, flow.error.hook) == ("SetsResponse", hook)
    assert str(flow.error) == (
        f"plugin 'SetsResponse' raised TypeError in {hook}: "
        "set flow.response to a Response whose status_code is 101, not 200-599"
    )
    assert flow.response is not None
    assert flow.response.status_code == 502
    assert fake.received == []
    flow = await Harness(SetsResponse(hook, lambda: b"x")).run(make_flow())
    assert str(flow.error).endswith(f"in {hook}: set flow.response to bytes, not Response")


@pytest.mark.parametrize("hook", REQUEST_PHASE)
async def test_a_set_response_of_a_plugin_failing_open_is_dropped(hook: str) -> None:
    watch, fake = Watches(), FakeUpstream()
    h = Harness(SetsResponse(hook, lambda: "no"), watch, on_error="fail_open")
    flow = await h.run(make_flow(), fake)
    assert flow.error is None
    assert flow.response is not None
    assert flow.response.status_code == 200
    assert len(fake.received) == 1
    assert [e.plugin for e in h.failures] == ["SetsResponse"]  # the next one is not blamed
    assert hook in watch.ran
