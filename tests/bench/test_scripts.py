"""The benchmark scripts still run against the current kernel.

They are not timed here (speed is measured by ``make bench``), only kept
working: the pipeline drives the real connection loop, so a kernel change
that breaks it must fail a test, not the next benchmark run.
"""

from __future__ import annotations

import argparse
import http.server
import importlib
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import trio

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.mark.parametrize("codec", ["httptools", "h11"])
@pytest.mark.parametrize("plugins", ["0", "3"])
def test_pipeline_runs(codec: str, plugins: str) -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH / "pipeline.py"), "--once", "--requests", "200",
         "--codec", codec, "--plugins", plugins],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("codec", ["httptools", "h11"])
def test_pipeline_runs_an_h2c_client(codec: str) -> None:
    # 200 requests in batches of 10 streams; the script asserts the responses went out.
    out = subprocess.run(
        [sys.executable, str(BENCH / "pipeline.py"), "--once", "--h2", "--requests", "200",
         "--codec", codec],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr


def test_h2load_report_is_read() -> None:
    sys.path.insert(0, str(BENCH))
    try:
        import run_h2
    finally:
        sys.path.remove(str(BENCH))
    report = """
finished in 4.00s, 2537.25 req/s, 2.71MB/s
requests: 10149 total, 10149 started, 10149 done, 10147 succeeded, 2 failed, 0 errored, 0 timeout
                     min         max         mean         sd        +/- sd
time for request:     1.23ms     98.10ms     39.22ms     10.01ms    70.00%
"""
    rps, mean, failed = run_h2.parse_h2load(report)
    assert rps == pytest.approx(2537.25)
    assert mean == pytest.approx(39.22)
    assert failed == 2


def test_lb_report_compares_with_reverse() -> None:
    """bench/run_lb.py: its flags, and the table's ratio to the single-upstream row."""
    sys.path.insert(0, str(BENCH))
    try:
        import run
        import run_lb
    finally:
        sys.path.remove(str(BENCH))
    assert run_lb.parse_args([]).lb == ["roundrobin"]
    assert run_lb.parse_args(["--lb", "all"]).lb == list(run_lb.STRATEGIES)
    assert run_lb.parse_args(["--lb", "p2c, hash"]).lb == ["p2c", "hash"]
    with pytest.raises(SystemExit):
        run_lb.parse_args(["--lb", "fastest"])
    results = [
        run_lb.LbResult("reverse", rps=10_000.0, p50_ms=1.0, p99_ms=3.0, cpu_us=100.0),
        run_lb.LbResult("lb-roundrobin", rps=8_000.0, p50_ms=1.2, p99_ms=3.5, cpu_us=125.0),
        run_lb.LbResult("lb-p2c", skipped="kernel check failed\nmore"),
    ]
    assert isinstance(results[0], run.Result)  # bench/run.py's, with the CPU added
    lines = run_lb.table(results)
    row = next(line for line in lines if line.startswith("lb-roundrobin"))
    assert "8,000" in row
    assert "0.80x" in row  # req/s
    assert "125us" in row
    assert "1.25x" in row  # CPU per request
    assert "skipped: kernel check failed" in lines[-1]
    assert run_lb.connections_to(1) >= 0
    assert run_lb.cpu_seconds(os.getpid()) > 0


class _Origin(http.server.BaseHTTPRequestHandler):
    """Keep-alive HTTP/1.1 origin: 200 with a small body, or 503 on /fail."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        status = 503 if self.path == "/fail" else 200
        body = b"x" * 100
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.server.served += 1  # type: ignore[attr-defined]

    def log_message(self, *args: object) -> None:
        pass


def test_server_instructions_client_sends_exactly_n() -> None:
    """bench/server_instructions.py's client: N requests over C connections, all answered."""
    sys.path.insert(0, str(BENCH))
    try:
        import server_instructions
    finally:
        sys.path.remove(str(BENCH))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Origin)
    server.served = 0  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        server_instructions.drive(port, 57, 5, timeout=30)
        assert server.served == 57  # type: ignore[attr-defined]
        with pytest.raises(RuntimeError, match="unexpected response"):
            server_instructions.drive(
                port, 3, 1, timeout=30, request=b"GET /fail HTTP/1.1\r\nHost: x\r\n\r\n"
            )
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


async def test_server_instructions_h2_client_sends_exactly_n() -> None:
    """bench/server_instructions.py's h2c load (h2load -n) against a real HTTP/2 origin."""
    from tests.helpers.h2origin import H2Origin

    sys.path.insert(0, str(BENCH))
    try:
        import server_instructions
    finally:
        sys.path.remove(str(BENCH))
    async with trio.open_nursery() as nursery:
        origin = await nursery.start(H2Origin().serve)
        await trio.to_thread.run_sync(server_instructions.drive_h2, origin.port, 57)
        assert origin.streams == 57
        nursery.cancel_scope.cancel()
    with pytest.raises(RuntimeError, match="did not complete"):
        await trio.to_thread.run_sync(server_instructions.drive_h2, origin.port, 3)


@pytest.mark.parametrize("load", ["h1", "tls-h1"])
def test_ab_loads_two_builds_in_alternation(load: str) -> None:
    """bench/ab.py, here with this tree as both builds (no worktree), one short round."""
    root = str(BENCH.parent)
    out = subprocess.run(
        [sys.executable, str(BENCH / "ab.py"), "--load", load, "--rounds", "1", "--duration",
         "1", root, root],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"load {load}" in out.stdout
    assert " 0 req/s" not in out.stdout  # each build answered
    assert "round 1: A " in out.stdout
    assert " B " in out.stdout.split("round 1:")[1]
    assert "B/A = " in out.stdout
    if load == "h1":  # wrk's latency percentiles
        assert re.search(r"A = .*p99 median \d+\.\d\d ms", out.stdout)


def test_ab_refuses_what_is_neither_a_tree_nor_a_revision() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH / "ab.py"), "no-such-revision-xyz", str(BENCH.parent)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode != 0
    assert "neither a Trellis tree nor a git revision" in out.stderr


def _bench_module(name: str) -> Any:
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCH))


def _server_instructions() -> Any:
    return _bench_module("server_instructions")


@pytest.mark.parametrize("cache", [False, True])
def test_server_instructions_reads_real_valgrind_totals(tmp_path: Path, cache: bool) -> None:
    """The totals of a real callgrind / cachegrind run, by event, and the cycle estimate."""
    si = _server_instructions()
    out = tmp_path / "valgrind.out"
    argv = [*si.valgrind_argv(out, cache), sys.executable, "-S", "-c", "sum(range(20000))"]
    subprocess.run(argv, capture_output=True, timeout=120, check=True)
    totals = si.parse_totals(out.read_text())
    assert totals["Ir"] > 1_000_000
    if not cache:
        assert set(totals) == {"Ir"}
        return
    assert {"I1mr", "D1mr", "D1mw", "ILmr", "DLmr", "Bcm", "Bim"} <= set(totals)
    assert totals["I1mr"] > 0
    assert totals["Bcm"] > 0
    assert si.estimate_cycles(totals) > totals["Ir"]


def test_server_instructions_report_ranks_by_estimated_cycles() -> None:
    si = _server_instructions()
    base = {"Ir": 100_000, "I1mr": 1_000, "D1mr": 1_000, "D1mw": 0, "Bcm": 1_000, "Bim": 0}
    # Fewer instructions, more misses: more estimated cycles all the same.
    more_code = {**base, "Ir": 90_000, "I1mr": 3_000}
    assert si.estimate_cycles(base) == 100_000 + 10 * 2_000 + 15 * 1_000
    assert si.estimate_cycles(more_code) > si.estimate_cycles(base)
    lines = si.report({"bare-relay": base, "trellis-httptools": more_code}, 1000, 5000, True)
    assert lines[-1].split()[:2] == ["trellis-httptools", "90,000"]
    assert lines[-1].endswith("145,000  1.07x bare-relay")
    plain = si.report({"bare-relay": base, "trellis-httptools": more_code}, 1000, 5000, False)
    assert plain[-1].split() == ["trellis-httptools", "90,000", "0.90x", "bare-relay"]


def test_rounds_rotate_so_no_target_is_always_last() -> None:
    run = _bench_module("run")
    assert run.rotations(["a", "b", "c"], 4) == [
        ["a", "b", "c"],
        ["b", "c", "a"],
        ["c", "a", "b"],
        ["a", "b", "c"],
    ]
    assert run.rotations([], 3) == []


class _KiBOrigin(_Origin):
    """As _Origin, with bench/run.py's 1 KiB body on GET /."""

    def do_GET(self) -> None:
        run = _bench_module("run")
        status = 503 if self.server.server_address[1] in _FAILING else 200  # type: ignore[attr-defined]
        body = run.BODY.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.server.served += 1  # type: ignore[attr-defined]


_FAILING: set[int] = set()


def test_measure_rounds_takes_every_target_in_each_round() -> None:
    """bench/run.py's rounds, with real wrk runs against two real origins and a broken one."""
    run = _bench_module("run")
    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), _KiBOrigin) for _ in range(3)]
    threads = []
    for server in servers:
        server.served = 0  # type: ignore[attr-defined]
        threads.append(threading.Thread(target=server.serve_forever, daemon=True))
        threads[-1].start()
    ports = [server.server_address[1] for server in servers]
    _FAILING.add(ports[2])
    try:
        loaded = [
            run.Loaded("one", "first origin", ports[0], None),
            run.Loaded("two", "second origin", ports[1], None),
            run.Loaded("broken", "answers 503", ports[2], None),
        ]
        args = argparse.Namespace(duration=1, connections=2, repeat=2)
        results = run.measure_rounds(loaded, args)
    finally:
        _FAILING.discard(ports[2])
        for server in servers:
            server.shutdown()
            server.server_close()
        for thread in threads:
            thread.join(5)
    assert [r.target for r in results] == ["one", "two", "broken"]
    for result, server in zip(results[:2], servers[:2], strict=True):
        assert len(result.runs_rps) == 2  # one run per round
        assert result.rps in result.runs_rps
        assert result.rps > 0
        assert server.served > result.rps  # type: ignore[attr-defined]  # warm-up + 2 runs
    assert results[2].skipped
    assert "503" in results[2].skipped
