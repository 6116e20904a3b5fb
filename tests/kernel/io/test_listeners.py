"""Binding listeners and their accept loops (kernel/io/listeners.py)."""

from __future__ import annotations

import errno
import logging
from typing import Any

import pytest
import trio

from kernel.config.model import ListenerConfig, RouteConfig, Settings
from kernel.generation import Generation, build_generation
from kernel.io.listeners import BindError, BoundListener, bind
from kernel.io.state import ServerState


def generation(listener: str = "main") -> Generation:
    """A generation whose only route answers locally with "hi"."""
    settings = Settings(
        listeners=[ListenerConfig(name=listener, bind="127.0.0.1:0")],
        routes=[RouteConfig(name="local", plugins=["respond"])],
        plugins={"respond": {"body": "hi"}},
    )
    return build_generation(settings)


async def get(port: int, client: Any) -> dict[str, Any]:
    raw = await client.exchange(port, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    (resp,) = client.parse_responses(raw)
    return dict(resp)


async def test_binding_a_port_in_use_is_a_bind_error() -> None:
    first = await bind("main", "127.0.0.1:0")
    try:
        addr = f"127.0.0.1:{first.port}"
        with pytest.raises(BindError) as info:
            await bind("admin", addr)
        message = str(info.value)
        assert message.startswith(f"cannot bind listener 'admin' to {addr}: ")
        assert "in use" in message.lower()  # the OS reason, not an errno number
        assert isinstance(info.value.__cause__, OSError)
        assert info.value.__cause__.errno == errno.EADDRINUSE
    finally:
        await first.listener.aclose()


async def test_bind_keeps_the_address_and_reports_the_port() -> None:
    bound = await bind("main", "127.0.0.1:0")
    async with bound.listener:
        assert bound.name == "main"
        assert bound.bind == "127.0.0.1:0"
        assert bound.port > 0
        assert bound.same_address("127.0.0.1:0")
        assert bound.same_address(f"127.0.0.1:{bound.port}")
        assert not bound.same_address(f"127.0.0.1:{bound.port + 1}")


async def test_accept_loop_serves_concurrent_connections(client: Any) -> None:
    state = ServerState(generation())
    bound = await bind("main", "127.0.0.1:0")
    results: list[dict[str, Any]] = []
    async with trio.open_nursery() as conns:
        conns.start_soon(bound.serve, state, conns)

        async def one() -> None:
            results.append(await get(bound.port, client))

        async with trio.open_nursery() as clients:
            for _ in range(5):
                clients.start_soon(one)
        assert [r["body"] for r in results] == [b"hi"] * 5
        assert state.connections == 0  # each was counted and uncounted
        assert next(state.connection_ids) == 6  # ids 1..5 were handed out
        bound.scope.cancel()
    # Cancelling the accept loop closed the listening socket.
    assert bound.listener.socket.fileno() == -1


async def test_connections_are_counted_while_open(client: Any) -> None:
    state = ServerState(generation())
    bound = await bind("main", "127.0.0.1:0")
    async with trio.open_nursery() as conns:
        conns.start_soon(bound.serve, state, conns)
        stream = await trio.open_tcp_stream("127.0.0.1", bound.port)
        async with stream:
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            with trio.fail_after(2):
                got = await stream.receive_some(65536)
            assert got.startswith(b"HTTP/1.1 200 ")
            assert state.connections == 1  # kept alive
        with trio.fail_after(2):
            while state.connections:
                await trio.sleep(0.01)
        bound.scope.cancel()


async def test_listener_gone_from_the_generation_closes_at_once(client: Any) -> None:
    """A reload removed this listener between accept and serve: no answer."""
    state = ServerState(generation("other"))
    bound = await bind("main", "127.0.0.1:0")
    async with trio.open_nursery() as conns:
        conns.start_soon(bound.serve, state, conns)
        raw = await client.exchange(bound.port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", timeout=2)
        assert raw == b""
        bound.scope.cancel()


class FlakyListener:
    """Stands in for a trio listener: accept() fails with the given errnos first."""

    def __init__(self, real: trio.SocketListener, errnos: list[int]) -> None:
        self.real = real
        self.errnos = errnos
        self.socket = real.socket

    async def accept(self) -> trio.SocketStream:
        if self.errnos:
            await trio.sleep(0)
            code = self.errnos.pop(0)
            raise OSError(code, "simulated")
        return await self.real.accept()

    async def aclose(self) -> None:
        await self.real.aclose()


async def test_accept_backs_off_when_out_of_descriptors(
    client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    state = ServerState(generation())
    real = await bind("main", "127.0.0.1:0")
    flaky = BoundListener("main", real.bind, FlakyListener(real.listener, [errno.EMFILE]))  # type: ignore[arg-type]
    caplog.set_level(logging.ERROR, logger="kernel.listeners")
    async with trio.open_nursery() as conns:
        conns.start_soon(flaky.serve, state, conns)
        start = trio.current_time()
        resp = await get(real.port, client)
        assert resp["body"] == b"hi"  # served once the pause was over
        assert trio.current_time() - start >= 0.09
        flaky.scope.cancel()
    assert any("pausing" in r.getMessage() for r in caplog.records)


async def test_other_accept_errors_propagate() -> None:
    state = ServerState(generation())
    real = await bind("main", "127.0.0.1:0")
    flaky = BoundListener("main", real.bind, FlakyListener(real.listener, [errno.EBADF]))  # type: ignore[arg-type]
    with pytest.RaisesGroup(pytest.RaisesExc(OSError, match="simulated")):
        async with trio.open_nursery() as conns:
            await flaky.serve(state, conns)
    # The listening socket is closed on the way out.
    assert real.listener.socket.fileno() == -1
