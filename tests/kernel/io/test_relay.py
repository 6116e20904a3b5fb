"""The upstream half of an exchange, over real sockets: failures, deadlines,
interim responses, and what happens when an upstream dies mid-body; the TLS
target of an https origin; HTTP/2 streams the upstream refused."""

from __future__ import annotations

import logging
import ssl
import time
from typing import Any

import attrs
import pytest
import trio

import sdk
from kernel.io.relay import _REFUSED_RETRIES, _tls_target
from kernel.io.timers import TICK
from kernel.io.upstream import UpstreamConnection
from kernel.routes import RouteRuntime
from kernel.tls import default_client_context
from sdk import Origin
from tests.conftest import basic_config
from tests.helpers.h2client import H2Client
from tests.helpers.h2origin import CANCEL, H2Origin, pattern, proxy_config
from tests.helpers.yields import YieldsByTask


async def test_unreachable_upstream_is_502(start_proxy: Any, client: Any) -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now
    app = await start_proxy(basic_config(port))
    (resp,) = client.parse_responses(
        await client.exchange(app.port(), b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    )
    assert resp["status"] == 502
    assert b"127.0.0.1" not in resp["body"]  # no internal addresses in the page


async def test_slow_upstream_is_504(start_proxy: Any, upstream: Any, client: Any) -> None:
    cfg = basic_config(upstream.port).replace(
        "[upstream]\n", "[upstream]\nresponse_timeout_s = 0.3\n"
    )
    app = await start_proxy(cfg)
    (resp,) = client.parse_responses(
        await client.exchange(
            app.port(), b"GET /sleep/3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
    )
    assert resp["status"] == 504


async def test_response_deadline_is_kept_within_a_timer_tick(
    start_proxy: Any, upstream: Any, client: Any
) -> None:
    cfg = basic_config(upstream.port).replace(
        "[upstream]\n", "[upstream]\nresponse_timeout_s = 0.2\n"
    )
    app = await start_proxy(cfg)
    start = time.monotonic()
    (resp,) = client.parse_responses(
        await client.exchange(
            app.port(), b"GET /sleep/2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
    )
    elapsed = time.monotonic() - start
    assert resp["status"] == 504
    assert 0.2 <= elapsed < 0.2 + 2 * TICK + 0.3


async def _raw_upstream(nursery: trio.Nursery, reply: bytes, *, then_close: bool) -> int:
    """An upstream that answers every request with ``reply`` verbatim."""

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            data = b""
            while b"\r\n\r\n" not in data:
                data += await stream.receive_some(65536)
            await stream.send_all(reply)
            if not then_close:
                await trio.sleep(5)

    listeners = await nursery.start(trio.serve_tcp, handle, 0)
    return int(listeners[0].socket.getsockname()[1])


async def test_upstream_dying_mid_body_cuts_the_client_connection(
    nursery: trio.Nursery, start_proxy: Any, client: Any, codec: str
) -> None:
    port = await _raw_upstream(
        nursery, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly-part", then_close=True
    )
    app = await start_proxy(basic_config(port, http1=codec))
    raw = await client.exchange(app.port(), b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    # The head and the part that arrived were relayed; then the connection was
    # cut, so the client sees a truncated body, never a "complete" short one.
    assert raw.startswith(b"HTTP/1.1 200 ")
    assert raw.endswith(b"only-part")
    assert client.parse_responses(raw) == []


# -- the TLS target of an https origin --------------------------------------------------------
def test_tls_target_is_the_routes_context_and_server_name() -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    route = RouteRuntime(
        name="r", upstream=None, base_path="", connect_timeout_s=1, response_timeout_s=1,
        read_timeout_s=1, max_body_bytes=0, client_tls=ctx, tls_server_name="origin.test",
    )  # fmt: skip
    assert _tls_target(route, Origin("http", "a", 80)) is None
    assert _tls_target(route, Origin("https", "a", 443)) == (ctx, "origin.test")
    # An https origin a plugin picked on a route without a TLS context of its own.
    bare = attrs.evolve(route, client_tls=None, tls_server_name="")
    target = _tls_target(bare, Origin("https", "a", 443))
    assert target == (default_client_context(), "")
    assert target is not None
    assert target[0].verify_mode == ssl.CERT_REQUIRED
    assert target[0].check_hostname


# -- HTTP/2 upstreams: refused streams, bodyless answers ----------------------------------------
async def h2c(nursery: trio.Nursery, start_proxy: Any) -> tuple[H2Origin, Any]:
    origin = await nursery.start(H2Origin().serve)
    cfg = proxy_config(f"http://127.0.0.1:{origin.port}", transport="force_http2 = true")
    return origin, await start_proxy(cfg)


async def test_refused_streams_are_retried_a_bounded_number_of_times(
    nursery: trio.Nursery, start_proxy: Any, client: Any
) -> None:
    origin, app = await h2c(nursery, start_proxy)
    raw = await client.exchange(
        app.port(), b"GET /reset?code=7 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    )
    assert client.parse_responses(raw)[0]["status"] == 502
    assert origin.streams == 1 + _REFUSED_RETRIES  # REFUSED_STREAM: not processed, resent


async def test_a_refused_stream_with_a_body_is_not_resent(
    nursery: trio.Nursery, start_proxy: Any, client: Any
) -> None:
    origin, app = await h2c(nursery, start_proxy)
    raw = await client.exchange(
        app.port(),
        b"POST /reset?code=7 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n"
        b"Connection: close\r\n\r\nhi",
    )
    assert client.parse_responses(raw, [b"POST"])[0]["status"] == 502
    assert origin.streams == 1  # the body was read from the client: it cannot be sent again


async def test_bodyless_h2_answers_are_relayed(
    nursery: trio.Nursery, start_proxy: Any, client: Any
) -> None:
    origin, app = await h2c(nursery, start_proxy)
    raw = await client.exchange(
        app.port(),
        b"GET /status/204 HTTP/1.1\r\nHost: a\r\n\r\n"
        b"HEAD /bytes/10 HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /bytes/10 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    r204, head, get = client.parse_responses(raw, [b"GET", b"HEAD", b"GET"])
    assert (r204["status"], r204["body"]) == (204, b"")
    assert (head["status"], head["body"], head["headers"]["content-length"]) == (200, b"", "10")
    assert (get["status"], get["body"]) == (200, pattern(10))
    assert origin.streams == 3
    assert origin.connections == 1


# -- retries ([upstream.retry]) ---------------------------------------------------


async def fetch(client: Any, port: int, method: str, path: str, body: bytes = b"") -> int:
    head = f"{method} {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n"
    if body:
        head += f"Content-Length: {len(body)}\r\n"
    raw = await client.exchange(port, head.encode() + b"\r\n" + body)
    (resp,) = client.parse_responses(raw)
    return int(resp["status"])


async def test_no_retry_by_default(start_proxy: Any, upstream: Any, client: Any) -> None:
    app = await start_proxy(basic_config(upstream.port))
    assert await fetch(client, app.port(), "GET", "/flaky/1/503?id=a") == 503
    assert upstream.flaky["a"] == 1


async def test_a_status_is_retried_until_it_passes(
    start_proxy: Any, upstream: Any, client: Any, codec: str
) -> None:
    app = await start_proxy(
        basic_config(upstream.port, http1=codec).replace(
            "[[routes]]", "[upstream.retry]\nattempts = 3\nbackoff_s = 0.001\n\n[[routes]]", 1
        )
    )
    assert await fetch(client, app.port(), "GET", "/flaky/2/503?id=a") == 200
    assert upstream.flaky["a"] == 3
    # Out of tries: the last answer is the client's.
    assert await fetch(client, app.port(), "GET", "/flaky/5/502?id=b") == 502
    assert upstream.flaky["b"] == 3
    # 500 is not in the default statuses: never retried.
    assert await fetch(client, app.port(), "GET", "/flaky/1/500?id=c") == 500
    assert upstream.flaky["c"] == 1


async def test_a_post_is_never_sent_twice_unless_configured(
    start_proxy: Any, upstream: Any, client: Any
) -> None:
    retry = "[upstream.retry]\nattempts = 3\nbackoff_s = 0.001\n\n[[routes]]"
    app = await start_proxy(basic_config(upstream.port).replace("[[routes]]", retry, 1))
    assert await fetch(client, app.port(), "POST", "/flaky/1/503?id=p") == 503
    assert upstream.flaky["p"] == 1
    # Even a configured POST with a body is not: the body was streamed away.
    retry = retry.replace("attempts", 'methods = ["POST"]\nattempts')
    app = await start_proxy(basic_config(upstream.port).replace("[[routes]]", retry, 1))
    assert await fetch(client, app.port(), "POST", "/flaky/1/503?id=q", b"body") == 503
    assert upstream.flaky["q"] == 1
    # Without a body it may be.
    assert await fetch(client, app.port(), "POST", "/flaky/1/503?id=r") == 200
    assert upstream.flaky["r"] == 2


async def test_a_dropped_connection_and_a_timeout_are_retried(
    start_proxy: Any, upstream: Any, client: Any
) -> None:
    retry = "[upstream.retry]\nattempts = 2\nbackoff_s = 0.001\n\n[[routes]]"

    def cfg(retry: str) -> str:
        base = basic_config(upstream.port).replace("[[routes]]", retry, 1)
        return base.replace("[upstream]\n", "[upstream]\nresponse_timeout_s = 0.3\n", 1)

    app = await start_proxy(cfg(retry))
    assert await fetch(client, app.port(), "GET", "/flaky/1/999?id=d") == 200
    assert upstream.flaky["d"] == 2
    before = len(upstream.requests)
    assert await fetch(client, app.port(), "GET", "/sleep/2") == 504
    assert len(upstream.requests) - before == 2  # the timeout was retried once
    app = await start_proxy(cfg(retry.replace("backoff_s", "on_connect_error = false\nbackoff_s")))
    assert await fetch(client, app.port(), "GET", "/flaky/1/999?id=e") == 502
    assert upstream.flaky["e"] == 1


async def test_the_retry_budget_stops_a_retry_storm(
    start_proxy: Any, upstream: Any, client: Any
) -> None:
    retry = "[upstream.retry]\nattempts = 2\nbackoff_s = 0\nbudget_ratio = 0\n\n[[routes]]"
    app = await start_proxy(basic_config(upstream.port).replace("[[routes]]", retry, 1))
    statuses = [await fetch(client, app.port(), "GET", f"/flaky/1/503?id={i}") for i in range(14)]
    # The reserve of 10 retries is spent, and with ratio 0 never refilled.
    assert statuses == [200] * 10 + [503] * 4


async def test_the_upstream_answer_is_read_after_a_yield(
    start_proxy: Any, upstream: Any, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between sending the request upstream and reading the answer, the
    exchange yields: the upstream needs a moment, and after the other tasks'
    turns the answer is usually there, read without a wait in epoll."""
    app = await start_proxy(basic_config(upstream.port))
    yields = YieldsByTask()
    seen: list[tuple[str, int]] = []
    real_send, real_receive = UpstreamConnection.send, UpstreamConnection.receive
    real_read_ready = UpstreamConnection.read_ready

    async def send(self: UpstreamConnection, data: bytes) -> None:
        seen.append(("sent", yields.counts[trio.lowlevel.current_task()]))
        await real_send(self, data)

    async def receive(self: UpstreamConnection) -> bytes:
        seen.append(("read", yields.counts[trio.lowlevel.current_task()]))
        return await real_receive(self)

    def read_ready(self: UpstreamConnection) -> bytes | None:
        seen.append(("read", yields.counts[trio.lowlevel.current_task()]))
        return real_read_ready(self)

    monkeypatch.setattr(UpstreamConnection, "send", send)
    monkeypatch.setattr(UpstreamConnection, "read_ready", read_ready)
    monkeypatch.setattr(UpstreamConnection, "receive", receive)
    trio.lowlevel.add_instrument(yields)
    try:
        (resp,) = client.parse_responses(
            await client.exchange(
                app.port(), b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
            )
        )
    finally:
        trio.lowlevel.remove_instrument(yields)
    assert resp["status"] == 200
    (sent, at_send), (read, at_read) = seen[:2]
    assert (sent, read) == ("sent", "read")
    assert at_read > at_send


class Spoiler:
    """Spoils every response it sees, the upstream's and the error page alike."""

    def __init__(self, how: str) -> None:
        self.how = how
        self.calls = 0

    @sdk.hookimpl
    def trellis_response(self, flow: sdk.Flow) -> None:
        self.calls += 1
        assert flow.response is not None
        if self.how == "negative":
            flow.response.status_code = -1
        else:
            flow.response.status_code = "200"  # type: ignore[assignment]


@pytest.mark.parametrize("how", ["negative", "str"])
async def test_a_response_spoilt_by_a_hook_is_a_500_not_silence(
    start_proxy: Any, upstream: Any, client: Any, codec: str, how: str
) -> None:
    """The spoilt head used to fail while it was written, and the error page
    ran the same hook and failed again: the client got no answer. Now it is
    refused before a byte goes out, and the page skips the response hooks."""
    spoiler = Spoiler(how)
    cfg = basic_config(upstream.port, http1=codec).replace(
        "[kernel]\n", '[kernel]\nplugins = ["spoiler"]\n'
    )
    app = await start_proxy(cfg, extra_plugins={"spoiler": spoiler})
    for _ in range(2):  # and the next request is served the same way
        raw = await client.exchange(
            app.port(), b"GET /echo HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        (resp,) = client.parse_responses(raw)
        assert resp["status"] == 500
    assert spoiler.calls == 2  # once per upstream response, never on the page


class Redirects:
    """Sends every request to ``origin`` (set before the upstream is chosen)."""

    def __init__(self, scheme: str, port: int) -> None:
        self.scheme, self.port = scheme, port

    @sdk.hookimpl
    def trellis_request(self, flow: sdk.Flow) -> None:
        flow.upstream = sdk.Origin(self.scheme, "127.0.0.1", self.port)


async def test_an_upstream_the_kernel_cannot_speak_to_is_a_502(
    start_proxy: Any, upstream: Any, client: Any
) -> None:
    """A plugin's ``Origin("ftp", ...)`` used to be spoken to as http."""
    cfg = basic_config(upstream.port).replace("[kernel]\n", '[kernel]\nplugins = ["to"]\n')
    app = await start_proxy(cfg, extra_plugins={"to": Redirects("ftp", upstream.port)})
    raw = await client.exchange(
        app.port(), b"GET /echo HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    )
    (resp,) = client.parse_responses(raw)
    assert resp["status"] == 502
    assert upstream.requests == []


# -- a response hook's own response -----------------------------------------------------------
class Swaps:
    """Answers ``/stream`` and ``/status`` with a response of its own: a new
    one (``"replace"``), a body set on the upstream's (``"body"``), or
    something that cannot be sent (``"str"``, ``"status"``)."""

    def __init__(self, how: str = "replace") -> None:
        self.how = how

    @sdk.hookimpl
    def trellis_response(self, flow: sdk.Flow) -> None:
        assert flow.response is not None
        if not flow.request.path.startswith(("/stream", "/status", "/bytes")):
            return
        if self.how == "replace":
            flow.response = sdk.Response.make(203, b"replaced", [("x-by", "swap")])
        elif self.how == "body":
            flow.response.body = b"replaced"
        elif self.how == "str":
            flow.response = "replaced"  # type: ignore[assignment]
        else:
            flow.response = sdk.Response(status_code=700)


def with_plugin(port: int, codec: str = "h11") -> str:
    return basic_config(port, http1=codec).replace("[kernel]\n", '[kernel]\nplugins = ["swap"]\n')


BIG = 16 * 1024 * 1024


@pytest.mark.parametrize("how", ["replace", "body"])
async def test_a_response_a_hook_put_in_place_is_the_answer(
    start_proxy: Any, upstream: Any, client: Any, codec: str, how: str
) -> None:
    """It used to be ignored: the client got the upstream's 16 MiB. Now the
    plugin's response goes out with its own body and framing, and the
    upstream connection, its body unread, is closed rather than pooled."""
    app = await start_proxy(with_plugin(upstream.port, codec), extra_plugins={"swap": Swaps(how)})
    raw = await client.exchange(
        app.port(),
        b"GET /stream/%d HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /echo HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n" % BIG,
    )
    replaced, echo = client.parse_responses(raw)
    assert replaced["status"] == (203 if how == "replace" else 200)
    assert replaced["body"] == b"replaced"
    assert replaced["headers"]["content-length"] == "8"
    if how == "replace":
        assert replaced["headers"]["x-by"] == "swap"
    assert b"sss" not in raw  # nothing of the upstream's body
    assert echo["status"] == 200  # the client's connection went on
    # The next request did not get the connection whose body was unread.
    assert upstream.connections == 2
    with trio.fail_after(5):
        while upstream.closed < 1:
            await trio.sleep(0.01)
    assert upstream.streamed < BIG


async def test_an_upstream_answer_read_to_its_end_is_pooled_when_replaced(
    start_proxy: Any, upstream: Any, client: Any, codec: str
) -> None:
    app = await start_proxy(with_plugin(upstream.port, codec), extra_plugins={"swap": Swaps()})
    raw = await client.exchange(
        app.port(),
        b"GET /status/200 HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /echo HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    replaced, echo = client.parse_responses(raw)
    assert (replaced["status"], replaced["body"]) == (203, b"replaced")
    assert echo["status"] == 200
    assert upstream.connections == 1  # an empty body is all read: the connection is reused


@pytest.mark.parametrize("how", ["str", "status"])
async def test_a_replacement_that_cannot_be_sent_is_a_500_naming_the_plugin(
    start_proxy: Any, upstream: Any, client: Any, codec: str, how: str, caplog: Any
) -> None:
    app = await start_proxy(with_plugin(upstream.port, codec), extra_plugins={"swap": Swaps(how)})
    with caplog.at_level(logging.WARNING):
        raw = await client.exchange(app.port(), b"GET /stream/%d HTTP/1.1\r\nHost: a\r\n\r\n" % BIG)
    (resp,) = client.parse_responses(raw)
    assert resp["status"] == 500
    assert b"sss" not in raw
    assert "after the response hooks of 'swap', " in caplog.text
    with trio.fail_after(5):
        while upstream.closed < 1:
            await trio.sleep(0.01)


async def test_a_replacement_reaches_an_http2_client(start_proxy: Any, upstream: Any) -> None:
    app = await start_proxy(with_plugin(upstream.port), extra_plugins={"swap": Swaps()})
    async with await H2Client.connect(app.port()) as h2c:
        r = await h2c.get(b"/stream/%d" % BIG)
        assert (r.status, bytes(r.body), r.reset) == (203, b"replaced", None)
        assert r.header(b"content-length") == b"8"
        assert r.header(b"x-by") == b"swap"
        r = await h2c.get(b"/echo")  # the connection goes on
        assert r.status == 200
    assert upstream.connections == 2
    assert upstream.streamed < BIG


async def test_a_replacement_of_an_http2_upstream_s_answer_resets_only_its_stream(
    nursery: trio.Nursery, start_proxy: Any, client: Any
) -> None:
    origin = await nursery.start(H2Origin().serve)
    cfg = proxy_config(f"http://127.0.0.1:{origin.port}", transport="force_http2 = true")
    cfg = cfg.replace("[kernel]\n", '[kernel]\nplugins = ["swap"]\n', 1)
    app = await start_proxy(cfg, extra_plugins={"swap": Swaps()})
    raw = await client.exchange(
        app.port(),
        b"GET /bytes/%d HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /echo HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n" % (5 * 1024 * 1024),
    )
    replaced, echo = client.parse_responses(raw)
    assert (replaced["status"], replaced["body"]) == (203, b"replaced")
    assert echo["status"] == 200
    await origin.wait_for(lambda: bool(origin.resets))
    assert origin.resets == [(1, CANCEL)]
    assert origin.connections == 1  # the connection itself went on


class SetsField:
    """Adds a field the codec must refuse (CR LF in its value) to every
    response, bypassing ``Headers``' checks."""

    @sdk.hookimpl
    def trellis_response(self, flow: sdk.Flow) -> None:
        assert flow.response is not None
        flow.response.headers.fields.append((b"x-a", b"1\r\nx-b: 2"))


async def test_a_field_the_codec_refuses_after_the_response_hooks_names_them(
    start_proxy: Any, upstream: Any, client: Any, codec: str, caplog: Any
) -> None:
    """Before, a 500 whose log line named no plugin."""
    app = await start_proxy(with_plugin(upstream.port, codec), extra_plugins={"swap": SetsField()})
    with caplog.at_level(logging.WARNING):
        raw = await client.exchange(
            app.port(), b"GET /echo HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
    (resp,) = client.parse_responses(raw)
    assert resp["status"] == 500
    assert b"x-b" not in raw
    assert "after the response hooks of 'swap', the response cannot be sent" in caplog.text


async def test_a_field_an_http2_client_cannot_get_is_a_500_page_not_a_reset(
    start_proxy: Any, upstream: Any, caplog: Any
) -> None:
    """HTTP/2 refuses the head when the stream flushes it: the stream used
    to be reset (the head was no longer ours to take back), unattributed."""
    app = await start_proxy(with_plugin(upstream.port), extra_plugins={"swap": SetsField()})
    async with await H2Client.connect(app.port()) as h2c:
        with caplog.at_level(logging.WARNING):
            r = await h2c.get(b"/echo")
        assert (r.status, r.reset) == (500, None)
        assert r.body.startswith(b"500 Internal Server Error\n")
        assert r.header(b"x-a") is None
        assert "after the response hooks of 'swap', the response cannot be sent" in caplog.text
        r = await h2c.get(b"/echo")  # only the stream ended
        assert r.status == 500
