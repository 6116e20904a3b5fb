#!/usr/bin/env python3
"""Instructions per request of the running server, sockets included (callgrind).

``bench/run.py`` measures wall-clock throughput, which swings by a third
from one run to the next on a shared VM; ``bench/pipeline.py`` counts the
kernel's instructions without sockets, so it cannot see what the socket calls,
the epoll waits and trio's scheduling around them cost. This script counts the
whole server: it starts the nginx backend (core 0), then each target under
``valgrind --tool=callgrind`` (core 1), sends it exactly N requests over C
keep-alive connections (one in flight on each, as wrk does), stops it with
SIGTERM and reads the instruction total. Two runs per target (N1 and N2
requests) cancel start-up and shut-down out::

    instructions per request = (total(N2) - total(N1)) / (N2 - N1)

Under callgrind the server runs ~50x slower than the clients and the backend,
so the next request and the upstream's answer are nearly always waiting when
the server reads: the count is that of a saturated server, the case the
throughput targets are about.

Targets: ``bare-relay`` (bench/bare_relay.py, the Python ceiling),
``trellis-httptools`` and ``trellis-chain`` (as in bench/run.py); and for
HTTP/2 with prior knowledge, driven by ``h2load -n N -c 10 -m 10``,
``bare-h2-relay`` (bench/bare_h2_relay.py) and ``trellis-h2c``
(config/reverse.toml without its plugin chain, as bench/run_h2.py runs it).

    .venv/bin/python bench/server_instructions.py [--requests 1000,5000]
        [--connections 50] [--only bare-relay,trellis-httptools] [--cache]

With ``--cache`` the server runs under ``valgrind --tool=cachegrind
--cache-sim=yes --branch-sim=yes`` instead, and each target also gets its
simulated first-level instruction and data cache misses, last-level misses
and branch mispredictions per request, and an *estimated cycles* figure
that weighs them (:func:`estimate_cycles`). Instructions alone can mislead:
compiling ``kernel/protocol`` with Cython (tried, not kept: docs/benchmarks.md)
took 14-17% of the instructions away but added 20% instruction-cache misses,
and estimated cycles fell only 6-7%, as the wall-clock runs found. Use it
for any change that trades fewer instructions for more code.

Takes about a minute per target and run (``--cache``: about twice that).
Every process it starts is stopped by PID. Stdlib only (and the helpers of
bench/run.py).
"""

from __future__ import annotations

import argparse
import os
import re
import selectors
import shutil
import socket
import subprocess
import time
from pathlib import Path

from run import (  # bench/run.py, the script's directory
    BARE,
    BENCH,
    HOST,
    LOAD_CORE,
    PROXY_CORE,
    ROOT,
    VARIANTS,
    WORK,
    Skip,
    Supervisor,
    free_port,
    say,
    start_nginx,
    trellis_env,
    wait_port,
)

BARE_H2 = "bare-h2-relay"
H2C = "trellis-h2c"
TARGETS = [BARE, "trellis-httptools", "trellis-chain", BARE_H2, H2C]
#: Who each target is compared with.
BASELINE = {BARE: BARE, "trellis-httptools": BARE, "trellis-chain": BARE, BARE_H2: BARE_H2}
BASELINE[H2C] = BARE_H2
#: What a simulated miss or misprediction is taken to cost, in cycles, for
#: :func:`estimate_cycles`: a first-level miss served by the next level, a
#: last-level miss served by memory, a mispredicted branch. A round model of a
#: current x86 core, not a measurement: it ranks changes, it does not predict
#: seconds.
COST = {"L1": 10, "LL": 100, "branch": 15}
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"
_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)


def drive(
    port: int, total: int, connections: int, timeout: float = 600.0, request: bytes = REQUEST
) -> None:
    """Send ``total`` GETs over ``connections`` keep-alive connections; each must get 200."""
    sel = selectors.DefaultSelector()
    buffers: dict[socket.socket, bytearray] = {}
    sent = done = 0
    try:
        for _ in range(min(connections, total)):
            sock = socket.create_connection((HOST, port), timeout=60)
            sock.setblocking(False)
            buffers[sock] = bytearray()
            sel.register(sock, selectors.EVENT_READ)
            sock.sendall(request)
            sent += 1
        deadline = time.monotonic() + timeout
        while done < total:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {done} of {total} responses within {timeout:.0f}s")
            for key, _ in sel.select(timeout=5):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                data = sock.recv(65536)
                if not data:
                    raise RuntimeError(f"the server closed a connection after {done} responses")
                buf = buffers[sock]
                buf += data
                while (end := buf.find(b"\r\n\r\n")) >= 0:
                    head = bytes(buf[: end + 2])
                    match = _LENGTH.search(head)
                    if not head.startswith(b"HTTP/1.1 200 ") or match is None:
                        raise RuntimeError(f"unexpected response: {head[:80]!r}")
                    size = end + 4 + int(match.group(1))
                    if len(buf) < size:
                        break
                    del buf[:size]
                    done += 1
                    if sent < total:
                        sock.sendall(request)
                        sent += 1
    finally:
        for sock in buffers:
            sock.close()
        sel.close()


def drive_h2(port: int, total: int) -> None:
    """``h2load -n total -c 10 -m 10`` over h2c; every request must succeed."""
    argv = ["h2load", "-n", str(total), "-c", "10", "-m", "10", f"http://{HOST}:{port}/"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False).stdout
    match = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded", out)
    if match is None or int(match.group(1)) != total:
        raise RuntimeError(f"h2load did not complete {total} requests:\n{out[-400:]}")


def _argv_env(target: str, port: int, backend: int) -> tuple[list[str], dict[str, str]]:
    python = str(ROOT / ".venv" / "bin" / "python")
    if target in (BARE, BARE_H2):
        script = "bare_relay.py" if target == BARE else "bare_h2_relay.py"
        argv = [python, str(BENCH / script), "--listen", str(port)]
        return [*argv, "--upstream", str(backend)], dict(os.environ)
    variant = VARIANTS["trellis-httptools" if target == H2C else target]
    env = trellis_env(variant, port, backend)
    return [python, "-m", "kernel", "run", "-c", str(variant.config)], env


def parse_totals(text: str) -> dict[str, int]:
    """The event totals of a callgrind or cachegrind output file, by event name."""
    events = re.search(r"^events:\s+(.+)$", text, re.MULTILINE)
    totals = re.search(r"^(?:totals|summary):\s+(.+)$", text, re.MULTILINE)
    if events is None or totals is None:
        return {}
    return dict(
        zip(events.group(1).split(), (int(n) for n in totals.group(1).split()), strict=False)
    )


def misses(per: dict[str, float]) -> dict[str, float]:
    """cachegrind's events grouped: first-level instruction and data cache
    misses, last-level misses (both), mispredicted branches (both kinds)."""
    return {
        "I1": per.get("I1mr", 0),
        "D1": per.get("D1mr", 0) + per.get("D1mw", 0),
        "LL": per.get("ILmr", 0) + per.get("DLmr", 0) + per.get("DLmw", 0),
        "branch": per.get("Bcm", 0) + per.get("Bim", 0),
    }


def estimate_cycles(per: dict[str, float]) -> float:
    """Instructions plus what the simulated misses and mispredictions cost (:data:`COST`)."""
    m = misses(per)
    return (
        per["Ir"]
        + COST["L1"] * (m["I1"] + m["D1"])
        + COST["LL"] * m["LL"]
        + COST["branch"] * m["branch"]
    )


def valgrind_argv(out: Path, cache: bool) -> list[str]:
    if cache:
        return ["valgrind", "--tool=cachegrind", "--cache-sim=yes", "--branch-sim=yes",
                f"--cachegrind-out-file={out}"]  # fmt: skip
    return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]


def count(
    sup: Supervisor,
    target: str,
    backend: int,
    requests: int,
    connections: int,
    cache: bool = False,
) -> dict[str, int]:
    """Event totals (callgrind: instructions; ``cache``: cachegrind's) of ``target``
    serving ``requests`` requests, start to exit."""
    port = free_port()
    tool = "cachegrind" if cache else "callgrind"
    out = WORK / f"{tool}-{target}-{requests}.out"
    out.unlink(missing_ok=True)
    argv, env = _argv_env(target, port, backend)
    env["PYTHONHASHSEED"] = "0"  # the same hashes, the same work, run after run
    valgrind = valgrind_argv(out, cache)
    proc = sup.start(f"{target}-{tool}", ["taskset", "-c", PROXY_CORE, *valgrind, *argv], env)
    try:
        wait_port(port, proc, target, timeout=180)
        if target in (BARE_H2, H2C):
            drive_h2(port, requests)
        else:
            drive(port, requests, connections)
    finally:
        sup.stop(proc, grace=120)  # SIGTERM: the kernel drains, valgrind writes its file
    text = out.read_text(errors="replace") if out.exists() else ""
    totals = parse_totals(text)
    if "Ir" not in totals:
        raise Skip(f"no {tool} totals in {out}")
    out.unlink()
    return totals


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--requests", default="1000,5000", help="N1,N2 (default 1000,5000)")
    p.add_argument("--connections", type=int, default=50)
    p.add_argument("--only", default=",".join(TARGETS), help="comma-separated targets")
    p.add_argument(
        "--cache", action="store_true", help="cachegrind: cache misses, mispredictions, cycles"
    )
    args = p.parse_args()
    n1, n2 = (int(n) for n in args.requests.split(","))
    if not 0 < n1 < n2:
        p.error("--requests wants N1,N2 with 0 < N1 < N2")
    targets = [t.strip() for t in args.only.split(",") if t.strip()]
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        p.error(f"unknown targets {unknown}; known: {TARGETS}")
    tools = ["valgrind", "taskset"] + (["h2load"] if {BARE_H2, H2C} & set(targets) else [])
    for tool in tools:
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: run `make deps-system`")
    WORK.mkdir(parents=True, exist_ok=True)
    sup = Supervisor()
    results: dict[str, dict[str, float]] = {}
    tool = "cachegrind" if args.cache else "callgrind"
    try:
        backend = free_port()
        start_nginx(sup, "nginx-backend", LOAD_CORE, backend)
        for target in targets:
            say(f"{target}: {n1} then {n2} requests under {tool} ...")
            try:
                low = count(sup, target, backend, n1, args.connections, args.cache)
                high = count(sup, target, backend, n2, args.connections, args.cache)
            except (Skip, RuntimeError) as exc:
                say(f"  {target}: skipped: {exc}")
                continue
            results[target] = {k: (high[k] - low.get(k, 0)) / (n2 - n1) for k in high}
    finally:
        sup.stop_all()
    for line in report(results, n1, n2, args.cache):
        print(line)
    return 0 if results else 1


def report(results: dict[str, dict[str, float]], n1: int, n2: int, cache: bool) -> list[str]:
    """The table: per request, each target, and its ratio to its baseline."""
    key = estimate_cycles if cache else (lambda per: per["Ir"])
    lines = [f"\nper request ({n2} - {n1} requests):"]
    if cache:
        lines.append(
            f"  {'target':<18} {'instr':>9} {'I1 miss':>8} {'D1 miss':>8} {'LL miss':>8}"
            f" {'mispred':>8} {'est. cycles':>12}"
        )
    for target, per in results.items():
        base = results.get(BASELINE[target])
        ratio = f"{key(per) / key(base):.2f}x {BASELINE[target]}" if base else ""
        if not cache:
            lines.append(f"  {target:<18} {per['Ir']:>9,.0f}  {ratio}")
            continue
        m = misses(per)
        lines.append(
            f"  {target:<18} {per['Ir']:>9,.0f} {m['I1']:>8,.0f} {m['D1']:>8,.0f}"
            f" {m['LL']:>8,.0f} {m['branch']:>8,.0f} {estimate_cycles(per):>12,.0f}  {ratio}"
        )
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
