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

import hpack
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
from kernel.io.h2connection import H2Connection
from kernel.io.state import ServerState
from kernel.io.upstream import UpstreamConnection
from sdk import ClientInfo, StartupContext

#: --h2: the client speaks h2c (FakeH2Client) instead of HTTP/1.1.
H2 = False

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

    def limit_writes(self, seconds: float) -> None:
        pass  # writes never wait here

    async def aclose(self) -> None:
        pass


class FakeH2Client(FakeStream):
    """An h2c client keeping ``streams`` GETs in flight, as ``h2load -m`` does.

    The next batch of HEADERS (and a connection WINDOW_UPDATE for the
    responses' bodies) is read only once every stream of the last batch
    ended in what the server wrote; EOF after ``n`` requests.
    """

    def __init__(self, n: int, streams: int = 10) -> None:
        super().__init__(b"", 0)
        encoder = hpack.Encoder()
        fields = [
            (b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"www.example.test"),
            (b":path", b"/index.html"), (b"user-agent", b"h2load"), (b"accept", b"*/*"),
        ]  # fmt: skip
        refill = _h2_frame(0x8, 0, 0, (streams * 2048).to_bytes(4, "big"))
        self.batches: list[bytes] = []
        sid = 1
        for _ in range(0, n, streams):
            batch = bytearray()
            for _ in range(streams):
                batch += _h2_frame(0x1, 0x5, sid, encoder.encode(fields))  # END_STREAM|END_HEADERS
                sid += 2
            self.batches.append(bytes(batch + refill))
        self.batches.reverse()
        self.first = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _h2_frame(0x4, 0, 0, b"")
        self.streams = streams
        self.outstanding = 0
        self.answered = trio.Event()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        if self.first:
            data, self.first = self.first, b""
            return data
        if self.outstanding:
            await self.answered.wait()
        if not self.batches:
            return b""
        self.outstanding = self.streams
        self.answered = trio.Event()
        return self.batches.pop()

    receive = receive_some

    async def send_all(self, data: bytes) -> None:
        await trio.lowlevel.checkpoint()
        self.sent += len(data)
        pos = 0
        while pos + 9 <= len(data):
            length = int.from_bytes(data[pos : pos + 3], "big")
            ftype, flags = data[pos + 3], data[pos + 4]
            if ftype in (0x0, 0x1) and flags & 0x1:  # DATA or HEADERS with END_STREAM
                self.outstanding -= 1
                if not self.outstanding:
                    self.answered.set()
            pos += 9 + length

    send = send_all


def _h2_frame(ftype: int, flags: int, sid: int, payload: bytes) -> bytes:
    return (
        len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + sid.to_bytes(4, "big") + payload
    )


class FakePool:
    """Always hands out the same upstream connection."""

    def __init__(self, conn: UpstreamConnection) -> None:
        self.conn = conn
        self.opened = 1
        self.reused = 0

    async def acquire_h2_or_h1(self, *args: Any, **kwargs: Any) -> UpstreamConnection:
        return self.conn

    def put_idle(self, conn: UpstreamConnection, max_idle: int, idle_timeout: float = 0.0) -> None:
        pass


class FakeManyPool(FakePool):
    """A connection per concurrent flow (HTTP/2 streams run at once), reused."""

    def __init__(self, origin: Any, codec: str) -> None:
        self.origin, self.codec = origin, codec
        self.idle: list[UpstreamConnection] = []
        self.opened = self.reused = 0

    async def acquire_h2_or_h1(self, *args: Any, **kwargs: Any) -> UpstreamConnection:
        if self.idle:
            return self.idle.pop()
        self.opened += 1
        conn = UpstreamConnection(FakeStream(RESPONSE, 10**9), self.origin, self.codec)  # type: ignore[arg-type]
        conn.requests = 1
        return conn

    def put_idle(self, conn: UpstreamConnection, max_idle: int, idle_timeout: float = 0.0) -> None:
        self.idle.append(conn)


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
    client = ClientInfo(address="127.0.0.1", port=40000, listener="main")
    listener = gen.listeners["main"]
    stream: FakeStream
    conn: Http1Connection | H2Connection
    if H2:
        state.pool = FakeManyPool(origin, gen.upstream_http1)  # type: ignore[assignment]
        stream = FakeH2Client(n)
        conn = H2Connection(stream, state, listener, client)  # type: ignore[arg-type]
    else:
        fake = FakeStream(RESPONSE, 10**9)
        upstream = UpstreamConnection(fake, origin, gen.upstream_http1)  # type: ignore[arg-type]
        upstream.requests = 1
        state.pool = FakePool(upstream)  # type: ignore[assignment]
        stream = FakeStream(REQUEST, n)
        conn = Http1Connection(stream, state, listener, client)  # type: ignore[arg-type]
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
    p.add_argument("--h2", action="store_true", help="an h2c client, 10 streams in flight")
    p.add_argument("--once", action="store_true", help="one run, no warm-up (for callgrind)")
    args = p.parse_args()
    global H2
    H2 = args.h2
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
    if H2:
        where += ", h2c client (10 streams in flight)"
    if observe:
        where += ", metrics + health + traffic log"
    print(
        f"{args.codec}, {args.plugins} no-op plugins, {where}: {best:.1f} µs per request"
        f" (best of 5 x {args.requests})"
    )


if __name__ == "__main__":
    main()
