"""Fixtures of the protocol tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kernel.protocol.h2_core import ENGINES, H2Core


@pytest.fixture(params=sorted(ENGINES))
def h2_engine(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run the test once per HTTP/2 engine: every H2Server/H2Client it makes uses it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(H2Core, "engine", request.param)
        yield request.param
