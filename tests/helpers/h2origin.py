"""A real HTTP/2-only origin server for upstream tests (the ``h2`` library over trio).

It speaks h2c with prior knowledge, or HTTP/2 over TLS when given a server
context (it offers ALPN ``h2`` only and drops connections that did not pick
it). Every request body is read completely (and its flow-control window given
back) before the answer, which is chosen by path:

- ``/echo``: JSON with method, path, authority, scheme, headers, body length
  and sha256, request trailers, stream id and connection number;
- ``/bytes/N``: N bytes of :func:`pattern` sent within the client's windows,
  with ``x-request-sha256``/``x-request-length`` of the request body;
- ``/sleep/S``: waits S seconds, then 200;
- ``/drip/N``: N chunks of 16 KiB, 20 ms apart (a long, slow response);
- ``/status/N``: status N, no body (the head ends the stream);
- ``/hints/N``: N ``103 Early Hints`` (``link: </styleI.css>; rel=preload``),
  then the answer as for any other path;
- ``/early/N``: status N with body ``no`` as soon as the head is in, before
  any of the body (``?reset=1``: then RST_STREAM NO_ERROR, RFC 9113 §8.1);
- ``/reset``: RST_STREAM (``?code=N``, default INTERNAL_ERROR) instead of an answer;
- ``/barrier/N``: waits until N streams are open at once, then 200;
- ``/die``: closes the connection at once (no GOAWAY), with any streams on it;
- anything else: 200 ``ok``.

``?trailers=1`` adds response trailers (``x-origin-trailer: done`` and
``x-body-sha256`` of the response body); ``?slow=S`` waits S seconds first.
``goaway_after=N`` sends GOAWAY (NO_ERROR, last stream = the Nth) once a
connection received its Nth stream, ignores later streams, and closes the
connection when the ones it took are answered (with ``linger=True`` it
leaves closing to the client, as RFC 9113 §6.8 allows).

It counts connections and processed streams, the most streams open at once,
and records each request and every RST_STREAM a client sent (``resets``), so
tests assert what the origin really saw.
"""

from __future__ import annotations

import hashlib
import json
import ssl
from collections.abc import Callable
from typing import Any

import trio
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RemoteSettingsChanged,
    RequestReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from h2.exceptions import ProtocolError
from hyperframe.frame import GoAwayFrame

__all__ = ["H2Origin", "pattern", "server_context"]

CANCEL = int(ErrorCodes.CANCEL)
INTERNAL_ERROR = int(ErrorCodes.INTERNAL_ERROR)


def pattern(n: int) -> bytes:
    """``n`` deterministic, non-repeating bytes (sha256 in counter mode)."""
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(i.to_bytes(8, "big")).digest()
        i += 1
    return bytes(out[:n])


def server_context(
    leaf: Any, *, alpn: list[str] | None = None, client_ca: Any = None
) -> ssl.SSLContext:
    """A server context for a trustme ``leaf``; with ``client_ca``, a client certificate
    signed by it is required."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    leaf.configure_cert(ctx)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if client_ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        client_ca.configure_trust(ctx)
    return ctx


class _Request:
    __slots__ = ("digest", "ended", "headers", "length", "reset", "scope", "stream_id", "trailers")

    def __init__(self, stream_id: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.stream_id = stream_id
        self.headers = headers
        self.digest = hashlib.sha256()
        self.length = 0
        self.trailers: list[tuple[bytes, bytes]] = []
        self.ended = trio.Event()
        self.reset = False
        self.scope = trio.CancelScope()


class H2Origin:
    def __init__(
        self,
        *,
        tls: ssl.SSLContext | None = None,
        goaway_after: int | None = None,
        linger: bool = False,
        hold_window: bool = False,
    ) -> None:
        self.tls = tls
        self.goaway_after = goaway_after
        self.linger = linger
        #: Never give request bodies their window back (a stalled origin).
        self.hold_window = hold_window
        self.port = 0
        #: TCP connections accepted.
        self.connections = 0
        #: Connections the client closed (EOF or error on read), and all that ended.
        self.closed_by_client = 0
        self.closed = 0
        #: Streams processed (answered or reset by us), over all connections.
        self.streams = 0
        #: Streams ignored after our GOAWAY (never processed).
        self.ignored = 0
        self.open_streams = 0
        self.max_open_streams = 0
        self.requests: list[dict[str, Any]] = []
        #: (stream id, error code) of every RST_STREAM a client sent.
        self.resets: list[tuple[int, int]] = []
        #: ALPN protocol of each TLS connection; SNI names the clients sent.
        self.alpn: list[str | None] = []
        self.server_names: list[str | None] = []
        self._changed = trio.Event()

    async def serve(
        self, *, task_status: trio.TaskStatus[H2Origin] = trio.TASK_STATUS_IGNORED
    ) -> None:
        if self.tls is not None:
            self.tls.sni_callback = self._on_sni
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            task_status.started(self)
            await trio.serve_listeners(self._handle, listeners, handler_nursery=nursery)

    def _on_sni(self, _obj: Any, name: str | None, _ctx: ssl.SSLContext) -> None:
        self.server_names.append(name)

    def changed(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 2.0) -> None:
        """Wait until ``predicate()`` holds (checked on every change); fails after ``timeout``."""
        with trio.fail_after(timeout):
            while not predicate():
                await self._changed.wait()

    async def _handle(self, tcp: trio.SocketStream) -> None:
        self.connections += 1
        number = self.connections
        self.changed()
        stream: trio.SocketStream | trio.SSLStream[trio.SocketStream] = tcp
        try:
            if self.tls is not None:
                tls = trio.SSLStream(tcp, self.tls, server_side=True)
                await tls.do_handshake()
                self.alpn.append(tls.selected_alpn_protocol())
                if tls.selected_alpn_protocol() != "h2":
                    return
                stream = tls
            await _Connection(self, stream, number).run()
        except (trio.BrokenResourceError, trio.ClosedResourceError, ProtocolError):
            pass
        finally:
            tcp.socket.close()
            self.closed += 1
            self.changed()


class _Connection:
    """One HTTP/2 connection of the origin."""

    def __init__(
        self,
        origin: H2Origin,
        stream: trio.SocketStream | trio.SSLStream[trio.SocketStream],
        number: int,
    ) -> None:
        self.origin = origin
        self.stream = stream
        self.number = number
        self.h2 = H2Connection(H2Configuration(client_side=False, header_encoding=None))
        self.requests: dict[int, _Request] = {}
        self.windows: dict[int, trio.Event] = {}
        self.pending = bytearray()
        self.write_lock = trio.Lock()
        self.received = 0
        self.goaway_last: int | None = None
        self.active = 0
        self.done = trio.Event()

    async def run(self) -> None:
        self.h2.initiate_connection()
        await self.flush()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._read_loop, nursery)
            await self.done.wait()
            nursery.cancel_scope.cancel()

    async def _read_loop(self, nursery: trio.Nursery) -> None:
        try:
            while not self.done.is_set():
                data = await self.stream.receive_some(65536)
                if not data:
                    self.origin.closed_by_client += 1
                    break
                for event in self.h2.receive_data(data):
                    self._dispatch(event, nursery)
                await self.flush()
        except trio.BrokenResourceError:
            self.origin.closed_by_client += 1
        except (trio.ClosedResourceError, ProtocolError):
            pass
        self.done.set()

    def _dispatch(self, event: Any, nursery: trio.Nursery) -> None:
        origin = self.origin
        if isinstance(event, RequestReceived):
            sid = event.stream_id
            if self.goaway_last is not None and sid > self.goaway_last:
                origin.ignored += 1
                return
            req = _Request(sid, list(event.headers))
            self.requests[sid] = req
            self.received += 1
            if origin.goaway_after is not None and self.received == origin.goaway_after:
                self.goaway_last = sid
                self.pending += self.h2.data_to_send()
                self.pending += GoAwayFrame(0, last_stream_id=sid, error_code=0).serialize()
            origin.streams += 1
            origin.open_streams += 1
            origin.max_open_streams = max(origin.max_open_streams, origin.open_streams)
            self.active += 1
            origin.changed()
            nursery.start_soon(self._respond, req)
        elif isinstance(event, DataReceived):
            known = self.requests.get(event.stream_id)
            if known is not None:
                known.digest.update(event.data)
                known.length += len(event.data)
            if not origin.hold_window:
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, TrailersReceived):
            known = self.requests.get(event.stream_id)
            if known is not None:
                known.trailers = list(event.headers)
        elif isinstance(event, StreamEnded):
            known = self.requests.get(event.stream_id)
            if known is not None:
                known.ended.set()
        elif isinstance(event, StreamReset):
            origin.resets.append((event.stream_id, int(event.error_code)))
            origin.changed()
            known = self.requests.get(event.stream_id)
            if known is not None:
                known.reset = True
                known.ended.set()
                known.scope.cancel()
            self._wake(event.stream_id)
        elif isinstance(event, WindowUpdated):
            self._wake(event.stream_id)
        elif isinstance(event, RemoteSettingsChanged):
            self._wake(0)
        elif isinstance(event, ConnectionTerminated):
            self.done.set()

    def _wake(self, stream_id: int) -> None:
        if stream_id == 0:
            for ev in self.windows.values():
                ev.set()
            self.windows.clear()
        elif stream_id in self.windows:
            self.windows.pop(stream_id).set()

    async def flush(self) -> None:
        async with self.write_lock:
            data = bytes(self.pending) + self.h2.data_to_send()
            self.pending.clear()
            if data:
                await self.stream.send_all(data)

    async def _send_body(self, sid: int, data: bytes) -> None:
        """Send ``data`` within the client's windows (waiting for WINDOW_UPDATE)."""
        view = memoryview(data)
        while view:
            window = min(self.h2.local_flow_control_window(sid), self.h2.max_outbound_frame_size)
            if window <= 0:
                event = self.windows.setdefault(sid, trio.Event())
                await event.wait()
                continue
            self.h2.send_data(sid, bytes(view[:window]))
            view = view[window:]
            await self.flush()

    async def _respond(self, req: _Request) -> None:
        origin = self.origin
        try:
            with req.scope:
                if dict(req.headers).get(b":path", b"").startswith(b"/early/"):
                    await self._answer_early(req)
                    return
                await req.ended.wait()
                if not req.reset:
                    await self._answer(req)
        except (trio.BrokenResourceError, trio.ClosedResourceError, ProtocolError):
            pass
        finally:
            origin.open_streams -= 1
            self.active -= 1
            origin.changed()
            if self.goaway_last is not None and not self.active and not origin.linger:
                self.done.set()

    async def _answer_early(self, req: _Request) -> None:
        """``/early/N``: status N (body ``no``) as soon as the head is in, whatever
        the body; ``?reset=1`` then resets the stream with NO_ERROR (RFC 9113 §8.1)."""
        target = dict(req.headers)[b":path"].decode()
        path, _, query = target.partition("?")
        sid = req.stream_id
        self.h2.send_headers(
            sid, [(b":status", path.split("/")[2].encode()), (b"content-length", b"2")]
        )
        self.h2.send_data(sid, b"no", end_stream=True)
        if "reset=1" in query:
            self.h2.reset_stream(sid, 0)
        await self.flush()

    async def _answer(self, req: _Request) -> None:
        origin = self.origin
        pseudo = {n: v for n, v in req.headers if n.startswith(b":")}
        target = pseudo.get(b":path", b"/").decode()
        path, _, query = target.partition("?")
        params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        record: dict[str, Any] = {
            "method": pseudo.get(b":method", b"").decode(),
            "path": target,
            "authority": pseudo.get(b":authority", b"").decode(),
            "scheme": pseudo.get(b":scheme", b"").decode(),
            "headers": [[n.decode(), v.decode("latin-1")] for n, v in req.headers],
            "body_length": req.length,
            "body_sha256": req.digest.hexdigest(),
            "trailers": [[n.decode(), v.decode("latin-1")] for n, v in req.trailers],
            "stream_id": req.stream_id,
            "connection": self.number,
        }
        origin.requests.append(record)
        origin.changed()
        if "slow" in params:
            await trio.sleep(float(params["slow"]))
        parts = path.strip("/").split("/")
        sid = req.stream_id
        body = b"ok"
        if parts[0] == "hints":  # /hints/N: N "103 Early Hints" before the answer
            for i in range(int(parts[1])):
                link = b"</style%d.css>; rel=preload" % i
                self.h2.send_headers(sid, [(b":status", b"103"), (b"link", link)])
            await self.flush()
        if parts[0] == "echo":
            body = json.dumps(record).encode()
        elif parts[0] == "bytes":
            body = pattern(int(parts[1]))
        elif parts[0] == "sleep":
            await trio.sleep(float(parts[1]))
            body = b"slept"
        elif parts[0] == "status":
            self.h2.send_headers(sid, [(b":status", parts[1].encode())], end_stream=True)
            await self.flush()
            return
        elif parts[0] == "reset":
            self.h2.reset_stream(sid, int(params.get("code", INTERNAL_ERROR)))
            await self.flush()
            return
        elif parts[0] == "barrier":
            await origin.wait_for(lambda: origin.open_streams >= int(parts[1]), timeout=5)
        elif parts[0] == "die":
            self.stream_socket().close()
            self.done.set()
            return
        elif parts[0] == "drip":
            self.h2.send_headers(sid, [(b":status", b"200")])
            await self.flush()
            for _ in range(int(parts[1])):
                await self._send_body(sid, b"d" * 16384)
                await trio.sleep(0.02)
            self.h2.end_stream(sid)
            await self.flush()
            return
        trailers = params.get("trailers") == "1"
        headers = [
            (b":status", b"200"),
            (b"x-request-sha256", req.digest.hexdigest().encode()),
            (b"x-request-length", str(req.length).encode()),
        ]
        if not trailers:
            headers.append((b"content-length", str(len(body)).encode()))
        if record["method"] == "HEAD":
            self.h2.send_headers(sid, headers, end_stream=True)
            await self.flush()
            return
        self.h2.send_headers(sid, headers)
        await self._send_body(sid, body)
        if trailers:
            digest = hashlib.sha256(body).hexdigest().encode()
            self.h2.send_headers(
                sid, [(b"x-origin-trailer", b"done"), (b"x-body-sha256", digest)], end_stream=True
            )
        else:
            self.h2.end_stream(sid)
        await self.flush()

    def stream_socket(self) -> trio.socket.SocketType:
        s = self.stream
        return s.socket if isinstance(s, trio.SocketStream) else s.transport_stream.socket


def proxy_config(
    url: str, *, upstream: str = "", transport: str = "", tls: str | None = None, extra: str = ""
) -> str:
    """A proxy with one route to ``url``: ``upstream`` goes in ``[upstream]``,
    ``transport`` in ``[routes.transport]``, ``tls`` (when not None) in
    ``[routes.transport.tls]``, ``extra`` at the end."""
    tls_table = "" if tls is None else f"[routes.transport.tls]\n{tls}\n"
    return f"""
[kernel]
watch_config = false
shutdown_grace_s = 1

[upstream]
{upstream}

[[listeners]]
name = "main"
bind = "127.0.0.1:0"

[[routes]]
name = "default"
upstream = "{url}"

[routes.transport]
{transport}
{tls_table}
{extra}
"""
