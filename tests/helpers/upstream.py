"""A real HTTP/1.1 origin server for end-to-end tests (h11 over trio).

It listens on 127.0.0.1:0 and answers by path:

- ``/echo``: JSON with the method, target, headers, body length/sha256 (and trailers) it got;
- ``/bytes/N``: N bytes (``?chunked=1`` for chunked framing, ``?slow=S`` to wait S s first);
- ``/stream/N``: N bytes in 64 KiB chunks, generated on the fly (never in memory);
- ``/status/N``: an empty response with status N;
- ``/sleep/S``: waits S seconds, then 200 (or stops early when the proxy closes
  the connection, counted in ``abandoned``);
- ``/upload``: reads the body in a streaming way and returns its length and sha256;
- ``/close``: answers with ``Connection: close``;
- ``/flaky/N/S?id=X``: the first N requests with id X get status S (999: the
  connection is dropped), the next ones 200;
- anything else: 200 with a 1 KiB body.

It counts connections (opened and closed), the bytes ``/stream`` handed to
the socket so far, and records request heads so tests can assert what the
upstream really saw (for example that a refused request never arrived).
"""

from __future__ import annotations

import functools
import hashlib
import json
from typing import Any

import h11
import trio


class Upstream:
    def __init__(self) -> None:
        self.port = 0
        self.connections = 0
        #: Connections that ended (closed by either side).
        self.closed = 0
        #: ``/sleep`` requests whose connection the proxy closed before the answer.
        self.abandoned = 0
        #: Body bytes of ``/stream`` responses written to the socket so far.
        self.streamed = 0
        self.requests: list[dict[str, Any]] = []
        #: Requests seen per id by /flaky.
        self.flaky: dict[str, int] = {}
        self.body_1k = b"x" * 1024

    async def serve(
        self, *, task_status: trio.TaskStatus[Upstream] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            task_status.started(self)
            await trio.serve_listeners(self._handle, listeners, handler_nursery=nursery)

    async def _handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        try:
            while True:
                event = await _next(conn, stream)
                if isinstance(event, h11.ConnectionClosed) or event is None:
                    return
                assert isinstance(event, h11.Request)
                await self._respond(conn, stream, event)
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return  # closing, or the answer was abandoned
                conn.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
            return
        finally:
            self.closed += 1
            await stream.aclose()

    async def _respond(
        self, conn: h11.Connection, stream: trio.SocketStream, req: h11.Request
    ) -> None:
        target = req.target.decode()
        path, _, query = target.partition("?")
        params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        record: dict[str, Any] = {
            "method": req.method.decode(),
            "target": target,
            "headers": [[n.decode(), v.decode("latin-1")] for n, v in req.headers],
        }
        self.requests.append(record)
        digest = hashlib.sha256()
        length = 0
        while True:  # read the whole body, streaming
            event = await _next(conn, stream)
            if isinstance(event, h11.Data):
                digest.update(event.data)
                length += len(event.data)
            elif isinstance(event, h11.EndOfMessage):
                if event.headers:
                    record["trailers"] = [
                        [n.decode(), v.decode("latin-1")] for n, v in event.headers
                    ]
                break
            else:
                return
        record["body_length"] = length
        record["body_sha256"] = digest.hexdigest()
        if "slow" in params:
            await trio.sleep(float(params["slow"]))
        send = functools.partial(_send, head_only=req.method == b"HEAD")
        parts = path.strip("/").split("/")
        if parts[0] in ("echo", "upload"):
            body = json.dumps(record).encode()
            await send(conn, stream, 200, [("content-type", "application/json")], body)
        elif parts[0] == "bytes":
            n = int(parts[1])
            await send(conn, stream, 200, [], b"b" * n, chunked=bool(params.get("chunked")))
        elif parts[0] == "stream":
            n = int(parts[1])
            await _send_head(conn, stream, 200, [("content-length", str(n))])
            chunk = b"s" * 65536
            left = n
            while left:
                piece = chunk[: min(left, len(chunk))]
                await stream.send_all(conn.send(h11.Data(data=piece)))
                left -= len(piece)
                self.streamed += len(piece)
            await stream.send_all(conn.send(h11.EndOfMessage()))
        elif parts[0] == "status":
            await send(conn, stream, int(parts[1]), [], b"")
        elif parts[0] == "flaky":
            # /flaky/N/STATUS?id=X: the first N requests with this id get
            # STATUS (999: the connection is dropped instead), later ones 200.
            key = params.get("id", "")
            self.flaky[key] = seen = self.flaky.get(key, 0) + 1
            if seen > int(parts[1]):
                await send(conn, stream, 200, [], b"ok after %d\n" % (seen - 1))
            elif parts[2] == "999":
                return  # the caller closes the connection without an answer
            else:
                await send(conn, stream, int(parts[2]), [], b"flaky\n")
        elif parts[0] == "sleep":
            # The proxy sends nothing more on this connection until it has
            # the answer: a read that returns means it went away.
            with trio.move_on_after(float(parts[1])):
                try:
                    await stream.receive_some(1)
                except trio.BrokenResourceError:
                    pass
                self.abandoned += 1
                return
            await send(conn, stream, 200, [], b"slept\n")
        elif parts[0] == "close":
            await send(conn, stream, 200, [("connection", "close")], b"bye\n")
        else:
            await send(conn, stream, 200, [("content-type", "text/plain")], self.body_1k)


async def _next(conn: h11.Connection, stream: trio.SocketStream) -> Any:
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(65536))
            continue
        return event


async def _send_head(
    conn: h11.Connection, stream: trio.SocketStream, status: int, headers: list[tuple[str, str]]
) -> None:
    await stream.send_all(conn.send(h11.Response(status_code=status, headers=headers)))


async def _send(
    conn: h11.Connection,
    stream: trio.SocketStream,
    status: int,
    headers: list[tuple[str, str]],
    body: bytes,
    *,
    chunked: bool = False,
    head_only: bool = False,
) -> None:
    """One whole response; framed by content-length unless ``chunked``."""
    headers = list(headers)
    if (
        not chunked
        and status not in (204, 304)
        and not any(n == "content-length" for n, _ in headers)
    ):
        headers.append(("content-length", str(len(body))))
    data = conn.send(h11.Response(status_code=status, headers=headers))
    if body and status not in (204, 304) and not head_only:
        data += conn.send(h11.Data(data=body))
    data += conn.send(h11.EndOfMessage())
    await stream.send_all(data)


async def raw_upstream(nursery: trio.Nursery, reply: bytes, *, hold_s: float = 0.0) -> int:
    """An origin that answers every request head with ``reply`` verbatim, then
    keeps the connection ``hold_s`` seconds and closes it; returns its port.

    For answers :class:`Upstream` will not give: a body shorter than its
    ``Content-Length`` (closed early), a body that stalls (held open).
    """

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            data = b""
            while b"\r\n\r\n" not in data:
                more = await stream.receive_some(65536)
                if not more:
                    return
                data += more
            try:
                await stream.send_all(reply)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            await trio.sleep(hold_s)

    listeners = await nursery.start(functools.partial(trio.serve_tcp, host="127.0.0.1"), handle, 0)
    return int(listeners[0].socket.getsockname()[1])
