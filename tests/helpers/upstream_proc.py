"""The test upstream (:mod:`tests.helpers.upstream`) as an OS process of its own.

Load-balancing tests need upstreams they can kill (SIGKILL) and start again
on the same port, which an upstream inside the test's trio loop cannot do::

    python -m tests.helpers.upstream_proc --port 9001 --name a [--delay 0.05] [--status 503]

It answers like :class:`~tests.helpers.upstream.Upstream` (``/echo``,
``/status/N``, a 1 KiB body for anything else...), and also:

- every response carries ``x-upstream: NAME``, so a client sees which
  server answered;
- ``/health`` answers 200 (``--health-status N`` changes that status);
- ``--delay S`` waits S seconds before answering *every* request
  (``/health`` included: a slow server is slow for all paths);
- ``--status N`` answers every request but ``/health`` with an empty N;
- ``GET /_upstream/stats`` answers JSON counters, never counted itself:
  ``requests`` (everything but ``/health`` and the stats), ``methods``
  (per method), ``health`` (probes), ``health_times`` and the
  ``first_at``/``last_at`` of the counted requests, in ``time.monotonic()``
  seconds (system-wide on Linux, so comparable with the test's clock);
- ``POST /_upstream/reset`` zeroes the counters.

It prints ``ready NAME PORT`` on stdout once it listens. The listener is
bound with ``SO_REUSEADDR`` (trio's default), so a restart on the port of a
killed instance works at once.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import h11
import trio

from tests.helpers.upstream import Upstream, _next, _send

__all__ = ["NamedUpstream", "main"]

STATS_PATH = "/_upstream/stats"
RESET_PATH = "/_upstream/reset"
HEALTH_PATH = "/health"
#: Fields that take a ``GET /`` off the fast path (lower-cased).
_NOT_PLAIN = (b"content-length:", b"transfer-encoding:", b"connection:", b"expect:")


class _Tagged:
    """An ``h11.Connection`` whose responses carry ``x-upstream: NAME``.

    :class:`Upstream` builds every response itself; wrapping the connection it
    writes to adds the field to the bytes of each response head, without
    touching it (and without building the event again: this is the hot path
    of the load tests).
    """

    def __init__(self, conn: h11.Connection, name: str) -> None:
        self._conn = conn
        self._field = b"x-upstream: " + name.encode() + b"\r\n"
        self.next_event = conn.next_event
        self.receive_data = conn.receive_data

    def send(self, event: Any) -> bytes | None:
        data: bytes | None = self._conn.send(event)
        if data is not None and type(event) is h11.Response:
            eol = data.index(b"\r\n") + 2  # after the status line
            data = data[:eol] + self._field + data[eol:]
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


class NamedUpstream(Upstream):
    """:class:`Upstream` on a fixed port, naming itself, with a delay and counters."""

    def __init__(
        self,
        name: str,
        port: int,
        *,
        host: str = "127.0.0.1",
        delay: float = 0.0,
        status: int | None = None,
        health_status: int = 200,
    ) -> None:
        super().__init__()
        self.name = name
        self.port = port
        self.host = host
        self.delay = delay
        self.status = status
        self.health_status = health_status
        #: What ``Upstream`` answers to ``GET /``, with ``x-upstream``.
        self._plain = (
            b"HTTP/1.1 200 \r\nx-upstream: %s\r\ncontent-type: text/plain\r\n"
            b"content-length: %d\r\n\r\n%s" % (name.encode(), len(self.body_1k), self.body_1k)
        )
        self.reset()

    def reset(self) -> None:
        self.counted = 0
        self.methods: dict[str, int] = {}
        self.health = 0
        self.health_times: list[float] = []
        self.first_at: float | None = None
        self.last_at: float | None = None
        self.requests.clear()

    def stats(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "port": self.port,
            "requests": self.counted,
            "methods": self.methods,
            "health": self.health,
            "health_times": self.health_times,
            "first_at": self.first_at,
            "last_at": self.last_at,
            "connections": self.connections,
        }

    async def serve(
        self, *, task_status: trio.TaskStatus[Upstream] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listeners = await trio.open_tcp_listeners(self.port, host=self.host)
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            task_status.started(self)
            await trio.serve_listeners(self._handle, listeners, handler_nursery=nursery)

    def _count(self, method: str, now: float) -> None:
        self.counted += 1
        self.methods[method] = self.methods.get(method, 0) + 1
        if self.first_at is None:
            self.first_at = now
        self.last_at = now

    async def _handle(self, stream: trio.SocketStream) -> None:
        """Serve one connection: plain ``GET /`` without h11, anything else with it.

        The load tests send tens of thousands of ``GET /``; h11 would make
        the upstreams, not the proxy, what the machine spends its time on.
        Such a request (no body, no ``Connection``/``Expect`` field) gets
        the bytes :class:`Upstream` would send for it (200, ``text/plain``,
        1 KiB) plus ``x-upstream``, but is not added to ``requests``. At the
        first other request the rest of the connection goes to h11 (a new
        ``h11.Connection`` starts cleanly at a request boundary).
        """
        self.connections += 1
        buf = b""
        try:
            while True:
                end = buf.find(b"\r\n\r\n")
                while end < 0:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        return
                    buf += chunk
                    end = buf.find(b"\r\n\r\n")
                line, _, fields = buf[:end].partition(b"\r\n")
                if line != b"GET / HTTP/1.1" or any(f in fields.lower() for f in _NOT_PLAIN):
                    await self._serve_h11(stream, buf)
                    return
                buf = buf[end + 4 :]
                self._count("GET", time.monotonic())
                if self.delay:
                    await trio.sleep(self.delay)
                await stream.send_all(self._plain)
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
            return
        finally:
            self.closed += 1
            await stream.aclose()

    async def _serve_h11(self, stream: trio.SocketStream, data: bytes) -> None:
        """:meth:`Upstream._handle`'s loop, from bytes already received."""
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        conn.receive_data(data)
        while True:
            event = await _next(conn, stream)
            if isinstance(event, h11.ConnectionClosed) or event is None:
                return
            assert isinstance(event, h11.Request)
            await self._respond(conn, stream, event)
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()

    async def _respond(
        self, conn: h11.Connection, stream: trio.SocketStream, req: h11.Request
    ) -> None:
        path = req.target.decode().partition("?")[0]
        tagged: Any = _Tagged(conn, self.name)
        if path in (STATS_PATH, RESET_PATH):
            await _drain(conn, stream)
            if path == RESET_PATH:
                self.reset()
            body = json.dumps(self.stats()).encode()
            await _send(tagged, stream, 200, [("content-type", "application/json")], body)
            return
        now = time.monotonic()
        if path == HEALTH_PATH:
            self.health += 1
            self.health_times.append(now)
        else:
            self._count(req.method.decode(), now)
        if self.delay:
            await trio.sleep(self.delay)
        if path == HEALTH_PATH:
            await _drain(conn, stream)
            await _send(tagged, stream, self.health_status, [], b"ok\n")
        elif self.status is not None:
            await _drain(conn, stream)
            await _send(tagged, stream, self.status, [], b"")
        else:
            await super()._respond(tagged, stream, req)


async def _drain(conn: h11.Connection, stream: trio.SocketStream) -> None:
    """Read the request body to its end (a keep-alive connection needs that)."""
    while True:
        event = await _next(conn, stream)
        if not isinstance(event, h11.Data):
            return


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--delay", type=float, default=0.0, help="seconds before every answer")
    p.add_argument("--status", type=int, default=None, help="answer every request with it")
    p.add_argument("--health-status", type=int, default=200, help="status of /health")
    args = p.parse_args(argv)
    server = NamedUpstream(
        args.name,
        args.port,
        host=args.host,
        delay=args.delay,
        status=args.status,
        health_status=args.health_status,
    )

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            print(f"ready {server.name} {server.port}", flush=True)

    try:
        trio.run(run)
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
