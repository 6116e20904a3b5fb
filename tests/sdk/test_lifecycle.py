"""sdk._lifecycle: the StartupContext handed to ``trellis_startup``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import pytest
import trio

import sdk


def test_start_soon_delegates_fn_and_args() -> None:
    calls: list[tuple[Callable[..., Awaitable[Any]], tuple[Any, ...]]] = []

    async def task(a: int, b: str) -> None:
        pass

    ctx = sdk.StartupContext(3, start_soon_impl=lambda fn, args: calls.append((fn, args)))
    ctx.start_soon(task, 1, "x")
    ctx.start_soon(task)
    assert calls == [(task, (1, "x")), (task, ())]
    assert ctx.generation == 3


async def test_start_soon_runs_in_a_real_nursery() -> None:
    seen: list[int] = []

    async def worker(n: int, done: trio.Event) -> None:
        seen.append(n)
        done.set()

    async with trio.open_nursery() as nursery:
        ctx = sdk.StartupContext(1, start_soon_impl=lambda fn, args: nursery.start_soon(fn, *args))
        done = trio.Event()
        ctx.start_soon(worker, 7, done)
        await done.wait()
    assert seen == [7]


def test_frozen_and_impl_hidden_from_repr() -> None:
    ctx = sdk.StartupContext(2, start_soon_impl=lambda fn, args: None)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        ctx.generation = 3  # type: ignore[misc]
    assert repr(ctx) == "StartupContext(generation=2)"


def test_is_final() -> None:
    assert getattr(sdk.StartupContext, "__final__", False) is True
