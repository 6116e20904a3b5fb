"""What the process is stuck in: frames described, stuck tasks, the loop watchdog.

The watchdog runs its real thread here, watching the test's own thread,
which blocks in ``time.sleep`` as a careless plugin does.
"""

from __future__ import annotations

import logging
import sys
import time
from types import FrameType

import pluggy
import pytest
import trio
import trio.testing

import sdk
import sdk.hookspecs
from kernel import dispatch, stuck
from kernel.config.model import Settings
from sdk.testing import make_flow


def _chain(**plugins: object) -> dispatch.Chain:
    pm = pluggy.PluginManager(sdk.PROJECT)
    pm.add_hookspecs(sdk.hookspecs)
    for name, obj in plugins.items():
        pm.register(obj, name=name)
    return dispatch.compile_chain(list(plugins), dispatch.collect_impls(pm), Settings())


def _stack() -> list[FrameType]:
    """The calling thread's frames, outermost first."""
    frames = []
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    return frames[::-1]


class Looks:
    """Describes the stack it is called on."""

    def __init__(self) -> None:
        self.said = ""

    @sdk.hookimpl
    def trellis_request(self, flow: sdk.Flow) -> None:
        self.said = stuck.describe_frames(_stack())

    @sdk.hookimpl
    def trellis_flow_done(self, flow: sdk.Flow) -> None:
        self.said = stuck.describe_frames(_stack())


async def test_a_dispatcher_frame_names_the_plugin_its_hook_and_its_flow() -> None:
    looks = Looks()
    chain = _chain(looks=looks)
    flow = make_flow()
    await dispatch.first_result(chain.request, "trellis_request", flow)
    assert looks.said == (
        f"plugin 'looks' in trellis_request (flow {flow.id}),"
        f" at {__file__}:{Looks.trellis_request.__code__.co_firstlineno + 2} in trellis_request"
    )
    dispatch.call_done_sync(chain.flow_done, flow)
    assert looks.said.startswith(f"plugin 'looks' in trellis_flow_done (flow {flow.id}), at ")


def test_without_a_dispatcher_frame_the_place_is_all_there_is() -> None:
    here = sys._getframe().f_lineno + 1
    said = stuck.describe_frames(_stack())
    assert (
        said == f"at {__file__}:{here} in test_without_a_dispatcher_frame_the_place_is_all_there_is"
    )
    assert stuck.describe_frames(_stack(), "f-1").startswith("flow f-1, at ")
    assert stuck.describe_frames(_stack(), "", "the task").startswith("the task, at ")
    assert stuck.describe_frames([]) == "somewhere in trio"


class Waits:
    def __init__(self) -> None:
        self.release = trio.Event()

    @sdk.hookimpl
    async def trellis_request(self, flow: sdk.Flow) -> None:
        await self.release.wait()


async def test_stuck_tasks_lists_the_leaves_of_the_first_nursery_that_has_any() -> None:
    waits = Waits()
    chain = _chain(waits=waits)
    flow = make_flow()

    async def idle() -> None:
        await trio.sleep_forever()

    async def parent() -> None:
        async with trio.open_nursery() as inner:
            inner.start_soon(dispatch.first_result, chain.request, "trellis_request", flow)

    async with trio.open_nursery() as later, trio.open_nursery() as first:
        later.start_soon(idle, name="waiting for the first")
        first.start_soon(parent)  # not a leaf: its child is
        await trio.testing.wait_all_tasks_blocked()
        (line,) = stuck.stuck_tasks([None, first, later])
        assert line.startswith(f"plugin 'waits' in trellis_request (flow {flow.id}), at ")
        assert line.endswith(" in trellis_request")
        waits.release.set()
        await trio.testing.wait_all_tasks_blocked()
        (line,) = stuck.stuck_tasks([first, later])
        assert line.startswith("waiting for the first, at ")
        later.cancel_scope.cancel()
    assert stuck.stuck_tasks([first, later]) == []


async def test_stuck_tasks_lists_twenty_and_counts_the_rest() -> None:
    async with trio.open_nursery() as nursery:
        for _ in range(25):
            nursery.start_soon(trio.sleep_forever)
        await trio.testing.wait_all_tasks_blocked()
        lines = stuck.stuck_tasks([nursery])
        assert len(lines) == 21
        assert lines[-1] == "... and 5 more"
        nursery.cancel_scope.cancel()


# ------------------------------------------------------------------ watchdog
def _blocks(seconds: float) -> None:
    time.sleep(seconds)  # noqa: TID251 - the blocking call the watchdog must name


def _wait_for(caplog: pytest.LogCaptureFixture, text: str, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in caplog.text:
        assert time.monotonic() < deadline, caplog.text
        time.sleep(0.01)  # noqa: TID251 - a sync test; the watchdog logs from its thread


def test_the_watchdog_warns_once_per_stall_naming_what_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dog = stuck.Watchdog(0.2)
    dog.start()
    try:
        with caplog.at_level(logging.WARNING, logger="kernel.stuck"):
            dog.awake()  # the sweeper runs: the thread watches
            _blocks(0.7)  # no beat for 0.7 s: one stall
            dog.beat()
            dog.parked()
            _wait_for(caplog, "turned again")
            stalls = [r.getMessage() for r in caplog.records if "has not turned" in r.message]
            (stall,) = stalls
            assert stall.startswith("the event loop has not turned for 0.")
            assert stall.endswith(
                f"(every connection waits): it runs at {__file__}:"
                f"{_blocks.__code__.co_firstlineno + 1} in _blocks"
            )
            turned = [r.getMessage() for r in caplog.records if "turned again" in r.message]
            assert turned[0].startswith("the event loop turned again after 0.")
            # Parked (nothing armed): an idle loop is no stall, however long.
            caplog.clear()
            _blocks(0.5)
            assert caplog.text == ""
    finally:
        dog.stop()
    assert dog._thread is not None
    dog._thread.join(2)
    assert not dog._thread.is_alive()


class Sleepy:
    @sdk.hookimpl
    def trellis_request(self, flow: sdk.Flow) -> None:
        time.sleep(0.6)  # noqa: TID251 - a plain def hook that blocks the loop


async def test_the_watchdog_names_the_plugin_that_blocks_the_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    chain = _chain(sleepy=Sleepy())
    flow = make_flow()
    dog = stuck.Watchdog(0.2)
    dog.start()
    try:
        with caplog.at_level(logging.WARNING, logger="kernel.stuck"):
            dog.awake()
            await dispatch.first_result(chain.request, "trellis_request", flow)
            dog.parked()
    finally:
        dog.stop()
    (stall,) = [r.getMessage() for r in caplog.records if "has not turned" in r.message]
    assert f"it runs plugin 'sleepy' in trellis_request (flow {flow.id}), at {__file__}:" in stall
    assert stall.endswith(" in trellis_request")
