"""Process-wide server state (kernel/io/state.py): flow counting and draining."""

from __future__ import annotations

from typing import Any

import trio

from kernel.config.model import ListenerConfig, RouteConfig, Settings
from kernel.generation import build_generation
from kernel.io.state import ServerState
from tests.conftest import basic_config


def state() -> ServerState:
    settings = Settings(
        listeners=[ListenerConfig(name="main", bind="127.0.0.1:0")],
        routes=[RouteConfig(name="r")],
    )
    return ServerState(build_generation(settings))


async def test_fresh_state() -> None:
    s = state()
    assert not s.draining
    assert s.active_flows == 0
    assert s.no_active_flows.is_set()
    assert s.connections == 0
    assert s.pool.statistics().idle == 0
    assert [next(s.connection_ids) for _ in range(3)] == [1, 2, 3]


async def test_flow_counting_sets_no_active_flows_at_zero() -> None:
    s = state()
    s.flow_started()
    first = s.no_active_flows
    assert not first.is_set()
    s.flow_started()
    assert s.no_active_flows is first  # one event per busy period
    s.flow_ended()
    assert s.active_flows == 1
    assert not first.is_set()
    s.flow_ended()
    assert s.active_flows == 0
    assert first.is_set()
    s.flow_started()  # a new busy period gets a new event
    assert s.no_active_flows is not first
    assert not s.no_active_flows.is_set()
    s.flow_ended()
    assert s.no_active_flows.is_set()


async def test_waiting_for_no_active_flows() -> None:
    s = state()
    s.flow_started()
    s.flow_started()
    done: list[float] = []

    async def waiter() -> None:
        await s.no_active_flows.wait()
        done.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.sleep(0.01)
        s.flow_ended()
        await trio.sleep(0.01)
        assert done == []
        s.flow_ended()
    assert len(done) == 1


async def test_begin_drain_cancels_idle_scopes_only() -> None:
    s = state()
    outcome: dict[str, bool] = {}

    async def idle(name: str) -> None:
        with trio.CancelScope() as scope:
            s.idle_scopes.add(scope)
            try:
                await trio.sleep(10)
            finally:
                s.idle_scopes.discard(scope)
        outcome[name] = scope.cancelled_caught

    async def busy() -> None:
        await trio.sleep(0.05)
        outcome["busy"] = False

    async with trio.open_nursery() as nursery:
        nursery.start_soon(idle, "a")
        nursery.start_soon(idle, "b")
        nursery.start_soon(busy)
        await trio.sleep(0.01)
        assert len(s.idle_scopes) == 2
        with trio.fail_after(1):
            s.begin_drain()
    assert s.draining
    assert outcome == {"a": True, "b": True, "busy": False}
    assert s.idle_scopes == set()


# -- draining a real proxy -----------------------------------------------------------
async def test_drain_closes_idle_keepalive_connections_at_once(
    start_proxy: Any, upstream: Any, codec: str
) -> None:
    app = await start_proxy(basic_config(upstream.port, http1=codec))
    stream = await trio.open_tcp_stream("127.0.0.1", app.port())
    async with stream:
        await stream.send_all(b"GET /bytes/3 HTTP/1.1\r\nHost: a\r\n\r\n")
        got = b""
        with trio.fail_after(2):
            while not got.endswith(b"bbb"):
                got += await stream.receive_some(65536)
        await trio.sleep(0.05)  # now idle, waiting for a next request
        assert len(app.state.idle_scopes) == 1
        app.state.begin_drain()
        with trio.fail_after(1):  # keepalive_timeout_s is 10 s: this is the drain
            assert await stream.receive_some(65536) == b""
    assert app.state.idle_scopes == set()


async def test_drain_lets_the_flow_in_progress_finish_then_closes(
    start_proxy: Any, upstream: Any, client: Any, codec: str
) -> None:
    app = await start_proxy(basic_config(upstream.port, http1=codec))
    stream = await trio.open_tcp_stream("127.0.0.1", app.port())
    got = b""
    async with stream:
        await stream.send_all(
            b"GET /sleep/0.2 HTTP/1.1\r\nHost: a\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        await trio.sleep(0.05)
        assert app.state.active_flows == 1
        app.state.begin_drain()
        with trio.fail_after(2):
            while chunk := await stream.receive_some(65536):
                got += chunk
    (resp,) = client.parse_responses(got)
    assert resp["status"] == 200
    assert resp["body"] == b"slept\n"
    assert resp["headers"]["connection"] == "close"
    assert [r["target"] for r in upstream.requests] == ["/sleep/0.2"]
    assert app.state.active_flows == 0
    assert app.state.no_active_flows.is_set()
