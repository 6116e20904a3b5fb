#!/usr/bin/env python3
"""Two builds of Trellis, in alternation, in one run: is B faster than A?

On a shared VM wall-clock runs swing by a third from one minute to the
next, more than most changes move them: a run of build A now and of build B
later mostly measures the machine. This script starts the nginx backend of
``bench/run.py`` once, then loads build A, build B, A again, and so on
(``--rounds`` times each), so that both builds meet the same stretches of
noise, and prints every run, the medians, the ratio B/A, the proxy's
CPU time per request (user and system, from ``/proc``) and, under wrk, the
99th percentile latency.

    .venv/bin/python bench/ab.py HEAD~1 HEAD             # two git revisions
    .venv/bin/python bench/ab.py --load h2c --rounds 6 main /path/to/tree

A build is a directory holding a Trellis tree, or a git revision, checked
out for the run as a worktree under ``bench/.work/ab/`` and removed after.
Each runs as ``python -m kernel`` from its own tree (its kernel, sdk and
plugins; this venv's libraries) on its ``config/reverse.toml`` without the
plugin chain, httptools on both sides, pinned like ``bench/run.py``: the
proxy to core 1, the backend and the load to core 0. Loads: ``h1`` is wrk,
50 connections; ``h2c`` is h2load ``-c 10 -m 10`` with prior knowledge;
``tls-h1`` and ``tls-h2`` are ``bench/run_h2.py``'s TLS loads (h2load
``--h1 -c 50`` and ``-c 10 -m 10``) against the tree's
``config/reverse-tls.toml``, with a throwaway certificate.

It measures *when* the server waits as it really happens, which the
instruction counts of ``bench/server_instructions.py`` cannot (see
bench/README.md). Stdlib only; every process is stopped by PID.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import run as B  # bench/run.py: processes, ports, nginx, Trellis, wrk
import run_h2

AB_WORK = B.WORK / "ab"
_TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Build:
    """One side of the comparison, and what its runs measured."""

    label: str
    spec: str
    tree: Path
    rps: list[float] = field(default_factory=list)
    #: (user, system) µs of the proxy's CPU per request, per run.
    cpu: list[tuple[float, float]] = field(default_factory=list)
    #: 99th percentile latency (ms) per run; wrk loads only.
    p99: list[float] = field(default_factory=list)


def tree_of(spec: str) -> tuple[Path, bool]:
    """The tree of ``spec`` and whether we made it (a worktree to remove)."""
    path = Path(spec)
    if (path / "kernel" / "__init__.py").is_file():
        return path.resolve(), False
    rev = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{spec}^{{commit}}"],
        cwd=B.ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if rev.returncode != 0:
        raise SystemExit(f"{spec}: neither a Trellis tree nor a git revision")
    sha = rev.stdout.strip()
    dest = AB_WORK / sha[:12]
    if (dest / "kernel").is_dir():
        return dest, False  # left by an earlier run: reuse it, as found
    dest.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(dest), sha],
        cwd=B.ROOT, check=True, capture_output=True,
    )  # fmt: skip
    return dest, True


def cpu_ticks(pid: int) -> tuple[int, int]:
    """User and system clock ticks of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


def start(
    sup: B.Supervisor, build: Build, backend: int, tls: tuple[Path, Path] | None
) -> tuple[subprocess.Popen[bytes], int]:
    """Trellis from ``build``'s tree (on TLS with ``tls``: certificate, key); it and its port."""
    name = "reverse-tls.toml" if tls else "reverse.toml"
    config = build.tree / "config" / name
    variant = B.Variant(f"ab-{build.label}", build.spec, config, B.HTTPTOOLS)
    port = B.free_port()
    if tls is None:
        env = B.trellis_env(variant, port, backend)
    else:
        cert, key = tls
        env = B.trellis_env(
            variant, B.free_port(), backend,
            TRELLIS_TLS_LISTEN=f"{B.HOST}:{port}", TRELLIS_TLS_CERT=str(cert),
            TRELLIS_TLS_KEY=str(key),
        )  # fmt: skip
    argv = ["taskset", "-c", B.PROXY_CORE, sys.executable, "-m", "kernel", "run", "-c", str(config)]
    # From the tree's own directory: "-m" puts it first on sys.path.
    return B.launch(sup, variant.name, argv, env, port, cwd=build.tree), port


def measure(load: str, port: int, seconds: int) -> tuple[float, int, float | None]:
    """One load run: (req/s, requests, p99 ms or None)."""
    if load == "h1":
        stats = B.run_wrk(port, seconds, 50)
        return float(stats["rps"]), int(stats["requests"]), stats["p99_ms"]
    scheme, extra = run_h2.LOADS[load]
    rps, _, failed = run_h2.h2load(f"{scheme}://{B.HOST}:{port}/", extra, seconds)
    if failed:
        raise B.Skip(f"h2load: {failed} requests failed")
    return rps, round(rps * seconds), None


def one_run(
    sup: B.Supervisor,
    build: Build,
    backend: int,
    args: argparse.Namespace,
    tls: tuple[Path, Path] | None,
) -> str:
    proc, port = start(sup, build, backend, tls)
    try:
        measure(args.load, port, 1)  # warm-up
        before = cpu_ticks(proc.pid)
        rps, requests, p99 = measure(args.load, port, args.duration)
        after = cpu_ticks(proc.pid)
    finally:
        sup.stop(proc)
    per = 1e6 / _TICK / max(requests, 1)
    user, system = (after[0] - before[0]) * per, (after[1] - before[1]) * per
    build.rps.append(rps)
    build.cpu.append((user, system))
    tail = ""
    if p99 is not None:
        build.p99.append(p99)
        tail = f", p99 {p99:.2f} ms"
    return f"{build.label} {rps:,.0f} req/s ({user:.0f} + {system:.0f} µs CPU/req{tail})"


def summary(a: Build, b: Build) -> list[str]:
    lines = []
    for build in (a, b):
        user = statistics.median(u for u, _ in build.cpu)
        system = statistics.median(s for _, s in build.cpu)
        runs = ", ".join(f"{r:,.0f}" for r in build.rps)
        p99 = f", p99 median {statistics.median(build.p99):.2f} ms" if build.p99 else ""
        lines.append(
            f"{build.label} = {build.spec}: median {statistics.median(build.rps):,.0f} req/s"
            f" [{runs}], CPU/req median {user:.0f} user + {system:.0f} system µs{p99}"
        )
    ratio = statistics.median(b.rps) / statistics.median(a.rps)
    lines.append(f"B/A = {ratio:.2f}x (medians of {len(a.rps)} alternating runs)")
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("a", help="build A: a tree or a git revision (the reference)")
    p.add_argument("b", help="build B: a tree or a git revision")
    p.add_argument("--load", choices=("h1", *run_h2.LOADS), default="h1")
    p.add_argument("--rounds", type=int, default=5, help="runs of each build (default 5)")
    p.add_argument("--duration", type=int, default=5, help="seconds per run (default 5)")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.duration < 1:
        p.error("--rounds and --duration must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    made: list[Path] = []
    builds = []
    for label, spec in (("A", args.a), ("B", args.b)):
        tree, new = tree_of(spec)
        if new:
            made.append(tree)
        builds.append(Build(label, spec, tree))
    sup = B.Supervisor()
    tls = run_h2.make_certificate(B.WORK / "tls") if args.load.startswith("tls") else None
    try:
        backend = B.free_port()
        B.say(f"nginx-backend on {B.HOST}:{backend} (core {B.LOAD_CORE}); load {args.load}")
        B.start_nginx(sup, "nginx-backend", B.LOAD_CORE, backend)
        for i in range(1, args.rounds + 1):
            runs = (one_run(sup, b, backend, args, tls) for b in builds)
            B.say(f"round {i}: " + "  ".join(runs))
        for line in summary(*builds):
            B.say(line)
    except B.Skip as exc:
        B.say(f"cannot measure: {exc}")
        return 1
    finally:
        sup.stop_all()
        for tree in made:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(tree)],
                cwd=B.ROOT, check=False, capture_output=True,
            )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
