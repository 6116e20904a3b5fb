"""Every metrics test starts from an empty, in-process metric store; ``kernels`` runs
real ``kernel run`` processes (multiprocess mode needs processes of its own)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from plugins.builtin.metrics import Store, reset_store
from tests.e2e.conftest import KERNEL, ProxyProcess, start_process

SpawnKernel = Callable[..., Awaitable[ProxyProcess]]


@pytest.fixture(autouse=True)
def fresh_store() -> Iterator[Store]:
    """A new process-wide store (and registry) for the test, dropped after it."""
    yield reset_store()
    reset_store()


@pytest.fixture
async def kernels(tmp_path: Path) -> AsyncIterator[SpawnKernel]:
    """Start ``kernel run -c FILE`` children; each is killed by PID and reaped at teardown.

    ``spawn(toml, ready_port, env)`` writes the config, starts the process and
    waits until ``ready_port`` answers HTTP.
    """
    started: list[ProxyProcess] = []

    async def spawn(toml_text: str, ready_port: int, env: dict[str, str] | None = None) -> Any:
        n = len(started) + 1
        config = tmp_path / f"kernel{n}.toml"
        config.write_text(toml_text)
        stderr_path = tmp_path / f"kernel{n}.stderr"
        proc = await start_process(
            [KERNEL, "run", "-c", str(config)], stderr_path=stderr_path, env=env
        )
        p = ProxyProcess(proc, ready_port, config, stderr_path)
        started.append(p)
        await p.wait_ready()
        return p

    try:
        yield spawn
    finally:
        for p in started:
            await p.kill()
