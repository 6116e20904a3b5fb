"""Fixtures of the traffic-log tests: a real PostgreSQL server, a fresh database, a clock.

``spawn_proxy`` (a ``kernel run`` child process) comes from tests/e2e/conftest.py.

Helpers shared by the test modules are in :mod:`.support`.
"""

from __future__ import annotations

import pytest

from tests.e2e.conftest import spawn_proxy
from tests.helpers.postgres import postgres_server, postgres_url
from tests.plugins.builtin.trafficlog.support import FakeClock

__all__ = ["clock", "postgres_server", "postgres_url", "spawn_proxy"]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
