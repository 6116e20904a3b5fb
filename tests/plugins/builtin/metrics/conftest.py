"""Every metrics test starts from an empty, in-process metric store; ``kernels`` runs
real ``kernel run`` processes (multiprocess mode needs processes of its own)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator

import pytest

from plugins.builtin.metrics import Store, reset_store
from tests.e2e.conftest import ProxyProcess, SpawnProxy, spawn_proxy

SpawnKernel = Callable[..., Awaitable[ProxyProcess]]

__all__ = ["spawn_proxy"]  # the fixture, imported so that this directory sees it


@pytest.fixture(autouse=True)
def fresh_store() -> Iterator[Store]:
    """A new process-wide store (and registry) for the test, dropped after it."""
    yield reset_store()
    reset_store()


@pytest.fixture
def kernels(spawn_proxy: SpawnProxy) -> SpawnKernel:
    """Start ``kernel run -c FILE`` children (``spawn_proxy`` of tests/e2e: each is
    killed by PID and reaped at teardown).

    ``spawn(toml, ready_port, env)`` writes the config, starts the process and
    waits until ``ready_port`` answers HTTP.
    """

    async def spawn(
        toml_text: str, ready_port: int, env: dict[str, str] | None = None
    ) -> ProxyProcess:
        return await spawn_proxy(toml_text, port=ready_port, env=env)

    return spawn
