"""CPU cost of one exchange through the kernel, without sockets.

Runs the real connection loop, exchange, codecs, forwarding and dispatcher
over in-memory streams (each call is a trio checkpoint, like a socket call
that does not block), so the number is the kernel's own per-request Python
work, free of the network noise of a VM. Usage::

    .venv/bin/python bench/pipeline.py [--codec httptools|h11] [--requests N]
                                       [--plugins N] [--group STRATEGY] [--profile]

``--group roundrobin`` (or another builtin strategy) sends the route to a
group of two targets instead of one upstream, with the default passive
checks: the per-request cost of choosing a target and its bookkeeping.
``--observe`` puts config/reverse.toml's observability chain (metrics,
health, file traffic log into a temporary directory) in front, started as
the app starts it, so the writer thread's work is counted too.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import time
from typing import Any

import trio
from noop import Noop, NoopConfig  # bench/noop.py (the script's directory)

from kernel.config.model import (
    GroupConfig,
    KernelSection,
    ListenerConfig,
    RouteConfig,
    ServerSection,
    Settings,
    UpstreamSection,
)
from kernel.generation import build_generation
from kernel.io.connection import Http1Connection
from kernel.io.state import ServerState
from kernel.io.upstream import UpstreamConnection
from sdk import ClientInfo, StartupContext

REQUEST = (
    b"GET /index.html HTTP/1.1\r\nHost: www.example.test\r\nUser-Agent: wrk/4.2\r\n"
    b"Accept: */*\r\nAccept-Encoding: gzip\r\n\r\n"
)
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Sun, 22 Nov 2026 04:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 1024\r\nConnection: keep-alive\r\n\r\n"
    + b"x"
    * 1024
)


class FakeSocket:
    def fileno(self) -> int:
        return -1

    def close(self) -> None:
        pass


class FakeStream:
    """Feeds ``n`` copies of ``chunk`` (one per receive), then EOF; drops writes."""

    def __init__(self, chunk: bytes, n: int) -> None:
        self.chunk, self.left = chunk, n
        self.socket = FakeSocket()
        self.transport_stream = self  # what UpstreamConnection takes the socket from
        self.sent = 0

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        if self.left == 0:
            return b""
        self.left -= 1
        return self.chunk

    async def send_all(self, data: bytes) -> None:
        await trio.lowlevel.checkpoint()
        self.sent += len(data)

    # The kernel's fast calls on a stream that is not a plain socket
    # (kernel/io/tlsstream.TLSStream's): the same, and the next request is
    # already there when the connection looks, as under load.
    receive = receive_some
    send = send_all

    def read_ready(self, max_bytes: int = 65536) -> bytes:
        if self.left == 0:
            return b""
        self.left -= 1
        return self.chunk

    async def aclose(self) -> None:
        pass


class FakePool:
    """Always hands out the same upstream connection."""

    def __init__(self, conn: UpstreamConnection) -> None:
        self.conn = conn
        self.opened = 1
        self.reused = 0

    async def acquire(self, *args: Any, **kwargs: Any) -> UpstreamConnection:
        return self.conn

    async def acquire_h2_or_h1(self, *args: Any, **kwargs: Any) -> UpstreamConnection:
        return self.conn

    def put_idle(self, conn: UpstreamConnection, max_idle: int) -> None:
        pass


def build(
    codec: str, plugins: int = 0, group: str = "", observe: str = ""
) -> tuple[ServerState, Any]:
    names = [f"noop{i}" for i in range(plugins)]
    extra: dict[str, object] = {name: Noop(NoopConfig()) for name in names}
    kernel = KernelSection()
    listeners = [ListenerConfig()]
    tables: dict[str, Any] = {}
    if observe:
        chain = os.environ.get("PIPELINE_OBSERVE", "metrics,health,trafficlog").split(",")
        kernel = KernelSection(plugins=chain)
        listeners += [
            ListenerConfig(name="metrics", bind="127.0.0.1:0"),
            ListenerConfig(name="health", bind="127.0.0.1:0"),
        ]
        tables = {"trafficlog": {"directory": observe, "exclude_listeners": ["metrics", "health"]}}
        for name in ("metrics", "health", "trafficlog"):
            extra[name] = _builtin(name, tables.get(name))
    groups = []
    if group:
        route = RouteConfig(name="default", group="app", plugins=names)
        groups = [
            GroupConfig(
                name="app", strategy=group, urls="http://127.0.0.1:9000 http://127.0.0.1:9001"
            )
        ]
        extra[group] = _strategy(group)
    else:
        route = RouteConfig(name="default", upstream="http://127.0.0.1:9000", plugins=names)
    settings = Settings(
        kernel=kernel,
        listeners=listeners,
        plugins=tables,
        server=ServerSection(http1=codec),  # type: ignore[arg-type]
        upstream=UpstreamSection(http1=codec),  # type: ignore[arg-type]
        routes=[route],
        groups=groups,
    )
    gen = build_generation(settings, available={}, extra_plugins=extra)
    return ServerState(gen), gen


def _builtin(name: str, table: Any) -> object:
    """A builtin plugin instance built from ``table`` as the plugin host would."""
    import importlib.metadata

    import sdk

    (ep,) = importlib.metadata.entry_points(group=sdk.ENTRY_POINT_GROUP, name=name)
    cls = ep.load()
    config_cls = getattr(cls, "config_class", None)
    if config_cls is None:
        return cls()
    return cls(sdk.structure(table or {}, config_cls, path=f"$.plugins.{name}"))


def _strategy(name: str) -> object:
    import importlib

    module = importlib.import_module(f"plugins.builtin.balancers.{name}")
    cls = next(v for k, v in vars(module).items() if k.endswith("Plugin") and isinstance(v, type))
    return cls()


async def run(codec: str, n: int, plugins: int = 0, group: str = "", observe: str = "") -> float:
    state, gen = build(codec, plugins, group, observe)
    async with trio.open_nursery() as nursery:
        # The app always has timers sleeping (pool reaper, coarse timeouts):
        # with a deadline pending, trio polls epoll between task batches.
        nursery.start_soon(_ticker)
        if observe:
            context = StartupContext(
                gen.number, start_soon_impl=lambda fn, args: nursery.start_soon(fn, *args)
            )
            gen.host.pm.hook.trellis_startup(context=context)
        per_request = await _serve(state, gen, codec, n)
        nursery.cancel_scope.cancel()
    if observe:
        gen.host.pm.hook.trellis_shutdown()
    return per_request


async def _ticker() -> None:
    while True:
        await trio.sleep(1.0)


async def _serve(state: ServerState, gen: Any, codec: str, n: int) -> float:
    origin = gen.routes["default"].upstream or gen.groups["app"].targets[0].origin
    fake = FakeStream(RESPONSE, 10**9)
    upstream = UpstreamConnection(fake, origin, gen.upstream_http1)  # type: ignore[arg-type]
    upstream.requests = 1
    state.pool = FakePool(upstream)  # type: ignore[assignment]
    client = ClientInfo(address="127.0.0.1", port=40000, listener="main")
    stream = FakeStream(REQUEST, n)
    conn = Http1Connection(stream, state, gen.listeners["main"], client)  # type: ignore[arg-type]
    start = time.perf_counter()
    await conn.serve()
    elapsed = time.perf_counter() - start
    assert stream.sent > n * 1024, "responses were not sent"
    return elapsed / n * 1e6


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--codec", default="httptools")
    p.add_argument("--requests", type=int, default=20000)
    p.add_argument("--plugins", type=int, default=0, help="no-op plugins on the route")
    p.add_argument("--group", default="", help="a strategy: the route sends to 2 targets")
    p.add_argument("--observe", action="store_true", help="metrics, health, traffic log")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--once", action="store_true", help="one run, no warm-up (for callgrind)")
    args = p.parse_args()
    observe = ""
    if args.observe:
        import tempfile

        observe = tempfile.mkdtemp(prefix="trellis-pipeline-logs-")
    if args.once:
        trio.run(run, args.codec, args.requests, args.plugins, args.group, observe)
        return
    trio.run(run, args.codec, 2000, args.plugins, args.group, observe)  # warm-up
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        trio.run(run, args.codec, args.requests, args.plugins, args.group, observe)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)
        return
    best = min(
        trio.run(run, args.codec, args.requests, args.plugins, args.group, observe)
        for _ in range(5)
    )
    where = f"group of 2 ({args.group})" if args.group else "one upstream"
    if observe:
        where += ", metrics + health + traffic log"
    print(
        f"{args.codec}, {args.plugins} no-op plugins, {where}: {best:.1f} µs per request"
        f" (best of 5 x {args.requests})"
    )


if __name__ == "__main__":
    main()
