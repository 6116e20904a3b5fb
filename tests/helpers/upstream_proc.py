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


class _Tagged:
    """An ``h11.Connection`` whose responses carry ``x-upstream: NAME``.

    :class:`Upstream` builds every response itself; wrapping the connection it
    writes to adds the header without touching it.
    """

    def __init__(self, conn: h11.Connection, name: str) -> None:
        self._conn = conn
        self._header = (b"x-upstream", name.encode())

    def send(self, event: Any) -> bytes | None:
        if isinstance(event, h11.Response):
            event = h11.Response(
                status_code=event.status_code,
                headers=[*event.headers, self._header],
                reason=event.reason,
                http_version=event.http_version,
            )
        return self._conn.send(event)

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
            self.counted += 1
            method = req.method.decode()
            self.methods[method] = self.methods.get(method, 0) + 1
            if self.first_at is None:
                self.first_at = now
            self.last_at = now
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
