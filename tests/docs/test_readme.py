"""The README's tour works as written (only the ports are changed).

Every ``curl`` and ``kernel`` line of the tour is run for real against a
proxy started from the README's configs, and the outputs the README shows
are compared with what the commands print.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import session_log_dir
from tests.helpers.sockets import free_port

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
KERNEL = str(Path(sys.executable).with_name("kernel"))

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


def _fences() -> list[tuple[str, str]]:
    """Every fenced block of the README as (language, text), in order."""
    out: list[tuple[str, str]] = []
    lang: str | None = None
    lines: list[str] = []
    for line in README.splitlines():
        if line.startswith("```"):
            if lang is None:
                lang, lines = line[3:].strip(), []
            else:
                out.append((lang, "\n".join(lines) + "\n"))
                lang = None
        elif lang is not None:
            lines.append(line)
    return out


def _blocks(lang: str) -> list[str]:
    return [text for fence_lang, text in _fences() if fence_lang == lang]


def _wait_port(port: int) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)  # noqa: TID251 - a sync test polling a subprocess
    raise AssertionError(f"nothing listens on {port}")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRELLIS_")}
    env.update(extra, TRELLIS_LOG="warning", TRELLIS_KERNEL_WATCH_CONFIG="false")
    # config/reverse.toml's metrics and health listeners, and its traffic log.
    env.setdefault("TRELLIS_METRICS_LISTEN", f"127.0.0.1:{free_port()}")
    env.setdefault("TRELLIS_HEALTH_LISTEN", f"127.0.0.1:{free_port()}")
    env.setdefault("TRELLIS_LOG_DIR", str(session_log_dir()))
    return env


def _run(line: str, port: int) -> subprocess.CompletedProcess[str]:
    line = line.replace("127.0.0.1:8080", f"127.0.0.1:{port}").replace(".venv/bin/kernel", KERNEL)
    return subprocess.run(
        shlex.split(line), cwd=ROOT, capture_output=True, text=True, timeout=30, check=False
    )


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def default_proxy() -> Iterator[int]:
    port = free_port()
    proc = _start(
        [KERNEL, "run", "-c", "config/default.toml"], _env(TRELLIS_LISTEN=f"127.0.0.1:{port}")
    )
    try:
        _wait_port(port)
        yield port
    finally:
        _stop(proc)


def test_make_run_uses_the_default_config() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "kernel run -c config/default.toml" in makefile


def test_first_curl_shows_the_welcome_route(default_proxy: int) -> None:
    line = next(b for b in _blocks("sh") if b.startswith("curl -i http://127.0.0.1:8080/\n"))
    out = _run(line.strip(), default_proxy)
    assert out.returncode == 0, out.stderr
    shown = next(b for b in _blocks("") if b.startswith("HTTP/1.1 200 OK"))
    for expected in shown.splitlines():
        if expected.strip() and "..." not in expected:
            assert expected.strip() in out.stdout.replace("\r", ""), expected


def test_explain_and_plugins_commands_run(default_proxy: int) -> None:
    block = next(b for b in _blocks("sh") if "kernel explain" in b)
    for line in block.strip().splitlines():
        out = _run(line, default_proxy)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip()
    explain = _run(block.strip().splitlines()[0], default_proxy).stdout
    assert "chain: headers.welcome -> respond.welcome" in explain


def test_reverse_proxy_tour(tmp_path: Path) -> None:
    block = next(b for b in _blocks("sh") if "http.server" in b)
    server_line, kernel_line, curl_line = (line.rstrip(" &") for line in block.strip().splitlines())
    up_port, port = free_port(), free_port()
    server_args = shlex.split(server_line.replace("9000", str(up_port)))
    server_args[0] = sys.executable
    server = _start(server_args, _env())
    kernel_args = shlex.split(kernel_line.replace(".venv/bin/kernel", KERNEL))
    proxy = _start(
        kernel_args,
        _env(TRELLIS_LISTEN=f"127.0.0.1:{port}", TRELLIS_UPSTREAM=f"http://127.0.0.1:{up_port}"),
    )
    try:
        _wait_port(up_port)
        _wait_port(port)
        out = _run(curl_line, port)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("HTTP/1.1 200")
        assert "via: 1.0 trellis" in out.stdout.lower()  # http.server answers in 1.0
        assert "# Architecture" in out.stdout
        smuggle = next(b for b in _blocks("sh") if "Transfer-Encoding: chunked" in b)
        refused = _run(smuggle.strip(), port)
        assert refused.stdout.startswith("HTTP/1.1 400 Bad Request")
        h2 = next(b for b in _blocks("sh") if "--http2-prior-knowledge" in b)
        answered = _run(h2.strip(), port)
        assert answered.returncode == 0, answered.stderr
        assert answered.stdout.startswith("HTTP/2 200")
        assert "via: 1.0 trellis" in answered.stdout.lower()
    finally:
        _stop(proxy)
        _stop(server)


def test_broken_config_output_is_as_shown(tmp_path: Path) -> None:
    block = next(b for b in _blocks("sh") if "bad.toml" in b)
    printf_line, check_line = block.strip().splitlines()
    bad = tmp_path / "bad.toml"
    content = shlex.split(printf_line.split(">")[0])[1].encode().decode("unicode_escape")
    bad.write_text(content)
    out = _run(check_line.replace("/tmp/bad.toml", str(bad)), 8080)
    assert out.returncode == 1
    shown = next(b for b in _blocks("") if "problem(s)" in b)
    assert out.stderr.replace(str(bad), "/tmp/bad.toml") == shown
