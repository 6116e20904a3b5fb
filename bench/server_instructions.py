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
        [--connections 50] [--only bare-relay,trellis-httptools]

Takes about a minute per target and run. Every process it starts is stopped
by PID. Stdlib only (and the helpers of bench/run.py).
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


def count(sup: Supervisor, target: str, backend: int, requests: int, connections: int) -> int:
    """Total instructions of ``target`` serving ``requests`` requests, start to exit."""
    port = free_port()
    out = WORK / f"callgrind-{target}-{requests}.out"
    out.unlink(missing_ok=True)
    argv, env = _argv_env(target, port, backend)
    env["PYTHONHASHSEED"] = "0"  # the same hashes, the same work, run after run
    valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    proc = sup.start(f"{target}-callgrind", ["taskset", "-c", PROXY_CORE, *valgrind, *argv], env)
    try:
        wait_port(port, proc, target, timeout=180)
        if target in (BARE_H2, H2C):
            drive_h2(port, requests)
        else:
            drive(port, requests, connections)
    finally:
        sup.stop(proc, grace=120)  # SIGTERM: the kernel drains, callgrind writes its file
    text = out.read_text(errors="replace") if out.exists() else ""
    match = re.search(r"^(?:totals|summary):\s+(\d+)", text, re.MULTILINE)
    if match is None:
        raise Skip(f"no callgrind totals in {out}")
    out.unlink()
    return int(match.group(1))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--requests", default="1000,5000", help="N1,N2 (default 1000,5000)")
    p.add_argument("--connections", type=int, default=50)
    p.add_argument("--only", default=",".join(TARGETS), help="comma-separated targets")
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
    results: dict[str, int] = {}
    try:
        backend = free_port()
        start_nginx(sup, "nginx-backend", LOAD_CORE, backend)
        for target in targets:
            say(f"{target}: {n1} then {n2} requests under callgrind ...")
            try:
                low = count(sup, target, backend, n1, args.connections)
                high = count(sup, target, backend, n2, args.connections)
            except (Skip, RuntimeError) as exc:
                say(f"  {target}: skipped: {exc}")
                continue
            results[target] = (high - low) // (n2 - n1)
    finally:
        sup.stop_all()
    print(f"\ninstructions per request ({n2} - {n1} requests):")
    for target, per in results.items():
        base = results.get(BASELINE[target])
        ratio = f"{per / base:.2f}x {BASELINE[target]}" if base else ""
        print(f"  {target:<18} {per:>9,}  {ratio}")
    return 0 if results else 1


if __name__ == "__main__":
    raise SystemExit(main())
