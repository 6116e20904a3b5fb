"""Shared fixtures: a real upstream and a real proxy on loopback.

``upstream`` starts :class:`tests.e2e.upstream.Upstream` in the test's
nursery. ``start_proxy(toml_text)`` writes a config to ``tmp_path`` and runs
:class:`kernel.app.App` in the same trio run, bound to ephemeral ports; it
returns the app (``app.port()`` is the main listener's port).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import trio

from tests.helpers import client as helpers_client
from tests.helpers import upstream as helpers_upstream

if TYPE_CHECKING:
    from kernel.app import App

upstream_mod = helpers_upstream
client_mod = helpers_client


@pytest.fixture(autouse=True)
def _fresh_log_limiter(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no repeated-line counts (kernel/lograte.py): the
    process-wide limiter would otherwise carry one test's failures into the
    next test's log assertions."""
    from kernel import lograte

    monkeypatch.setattr(lograte, "LIMITER", lograte.process_limiter())


@pytest.fixture
def client() -> Any:
    return client_mod


@pytest.fixture
async def upstream(nursery: trio.Nursery) -> Any:
    return await nursery.start(upstream_mod.Upstream().serve)


StartProxy = Callable[..., Awaitable["App"]]


@pytest.fixture
async def start_proxy(nursery: trio.Nursery, tmp_path: Path) -> StartProxy:
    counter = 0

    async def start(
        toml_text: str,
        *,
        extra_plugins: Mapping[str, object] | None = None,
        environ: Mapping[str, str] | None = None,
        plugins: list[str] | None = None,
    ) -> App:
        from kernel.app import App

        nonlocal counter
        counter += 1
        path = tmp_path / f"proxy{counter}.toml"
        path.write_text(toml_text)
        app = App(
            path,
            extra_plugins=extra_plugins,
            environ=dict(environ or {}),
            handle_signals=False,
            plugins=plugins,
        )
        started = await nursery.start(_run, app)
        return started

    return start


async def _run(app: App, *, task_status: trio.TaskStatus[App] = trio.TASK_STATUS_IGNORED) -> None:
    code = await app.run(task_status=task_status)
    if code:
        raise RuntimeError(f"proxy exited with {code}")


def basic_config(upstream_port: int, extra: str = "", *, http1: str = "h11") -> str:
    """A reverse proxy on an ephemeral port in front of the test upstream."""
    return f"""
[kernel]
watch_config = false
shutdown_grace_s = 2

[server]
http1 = "{http1}"

[upstream]
http1 = "{http1}"

[[listeners]]
name = "main"
bind = "127.0.0.1:0"

[[routes]]
name = "default"
upstream = "http://127.0.0.1:{upstream_port}"
{extra}
"""


@pytest.fixture(params=["h11", "httptools"])
def codec(request: pytest.FixtureRequest) -> str:
    """Run a test once per HTTP/1.1 codec."""
    return str(request.param)


# ------------------------------------------------------------------ TLS material
@pytest.fixture(scope="session")
def tls_ca() -> Any:
    """One trustme CA for the session (a CA key is slow to make; leaves are quick)."""
    import trustme

    return trustme.CA()


@pytest.fixture
def cert_factory(tls_ca: Any, tmp_path: Path) -> Any:
    """Issues certificates from ``tls_ca`` as PEM files under ``tmp_path``."""
    from tests.helpers.certs import CertFactory

    return CertFactory(tls_ca, tmp_path)
