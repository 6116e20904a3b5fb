#!/usr/bin/env python3
"""Trellis benchmark, load balancing: config/lb.toml over two backends vs config/reverse.toml.

One run starts, on loopback only (same layout as ``bench/run.py``):

- two nginx **backends** (1 worker each, core 0) answering ``GET /`` with a
  1 KiB body (``bench/nginx-backend.conf.in``), also ``GET /health``;
- **Trellis** (core 1, httptools codec), in turn:

  - ``reverse``: ``config/reverse.toml`` in front of the first backend,
    the single-upstream scenario;
  - ``lb-STRATEGY``: ``config/lb.toml`` with ``TRELLIS_UPSTREAMS`` naming
    both backends and ``TRELLIS_LB=STRATEGY`` (roundrobin unless
    ``--lb`` says otherwise), health checks every second as the file says;

and loads each with ``wrk`` pinned to core 0 (``bench/run.py``'s warm-up,
``--repeat`` and median). It prints req/s, p50, p99 and the ratio of each
``lb-*`` row to ``reverse``, and the Trellis process's CPU time per request
with its ratio: what choosing a target (and the bookkeeping of the group)
costs per request. CPU per request is the steadier number of the two on a
machine where something else runs too. After each ``lb-*`` load it counts
the proxy's connections to each backend, to show both got traffic.

Every process it starts is stopped by PID, also on Ctrl-C. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import run as B  # bench/run.py: processes, ports, nginx, Trellis, wrk

LB_TOML = B.ROOT / "config" / "lb.toml"
STRATEGIES = ("roundrobin", "weighted", "random", "leastconn", "p2c", "hash")
#: The reference row: the single-upstream scenario.
REFERENCE = "reverse"
#: Every variant keeps up to this many idle connections per backend. With the
#: default (32) and more wrk connections than that, the single upstream of
#: reverse.toml would open and close connections all the time while lb.toml's
#: two backends (25 each) would not: the comparison would measure the pool.
POOL_ENV = {"TRELLIS_UPSTREAM_MAX_IDLE_PER_HOST": "1024"}


def start_backend(sup: B.Supervisor, name: str, port: int) -> subprocess.Popen[bytes]:
    """``bench/nginx-backend.conf.in`` as ``name`` (its own prefix under bench/.work/), core 0."""
    nginx = B.nginx_binary()
    if nginx is None:
        raise B.Skip("nginx not found (make deps-system installs it)")
    prefix = B.WORK / name
    for sub in ("logs", "tmp"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    values = {"WORK": str(prefix), "PORT": str(port), "BODY": B.BODY}
    B.render(B.BENCH / "nginx-backend.conf.in", conf, values)
    argv = ["taskset", "-c", B.LOAD_CORE, nginx, "-p", f"{prefix}/"]
    argv += ["-e", str(prefix / "logs/error.log"), "-c", str(conf), "-g", "daemon off;"]
    return B.launch(sup, name, argv, None, port)


def connections_to(port: int) -> int:
    """Established loopback TCP connections whose remote end is ``port`` (/proc/net/tcp)."""
    count = 0
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return -1
    for line in lines:
        fields = line.split()
        remote, state = fields[2], fields[3]
        if state == "01" and int(remote.rsplit(":", 1)[1], 16) == port:
            count += 1
    return count


@dataclass
class LbResult(B.Result):
    #: CPU time of the Trellis process (and any children) per request, in µs,
    #: for the reported run: far less noisy than req/s on a shared machine.
    cpu_us: float | None = None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and its descendants so far (/proc/PID/stat)."""
    total = 0.0
    for p in B.pids_of(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def load(name: str, about: str, port: int, pid: int, args: argparse.Namespace) -> LbResult:
    """bench/run.py's ``load`` (warm-up, ``--repeat`` runs, the median), plus CPU per request."""
    result = LbResult(name, about)
    B.check_proxying(name, port)
    warm = max(1, min(2, args.duration // 5))
    times = f"{args.repeat} x " if args.repeat > 1 else ""
    B.say(f"  {name}: warm-up {warm}s, then {times}{args.duration}s at {args.connections} conns")
    B.run_wrk(port, warm, args.connections)
    runs = []
    for _ in range(args.repeat):
        before = cpu_seconds(pid)
        stats = B.run_wrk(port, args.duration, args.connections)
        used = cpu_seconds(pid) - before
        stats["cpu_us"] = used / stats["requests"] * 1e6 if stats.get("requests") else None
        runs.append(stats)
    stats = B.take_median(result, runs)
    result.cpu_us = stats["cpu_us"]
    cpu = f"{result.cpu_us:.0f}us CPU/request" if result.cpu_us else "CPU not measured"
    B.say(
        f"  {name}: {result.rps:,.0f} req/s ({', '.join(f'{r:,.0f}' for r in result.runs_rps)}),"
        f" p50 {B.fmt_ms(result.p50_ms)}, p99 {B.fmt_ms(result.p99_ms)}, {cpu},"
        f" errors {result.socket_errors + result.non_2xx}"
    )
    return result


def measure(
    sup: B.Supervisor,
    variant: B.Variant,
    backend: int,
    args: argparse.Namespace,
    env: dict[str, str],
    backends: tuple[int, ...] = (),
) -> LbResult:
    """Start ``variant``, load it with wrk, stop it; a skipped Result says why not."""
    B.say(f"starting {variant.name} ({variant.about}) on core {B.PROXY_CORE}")
    try:
        proc, port = B.start_trellis(sup, variant, backend, **POOL_ENV, **env)
        try:
            result = load(variant.name, variant.about, port, proc.pid, args)
            if backends:
                counts = [connections_to(p) for p in backends]
                result.note = "connections to the backends: " + ", ".join(map(str, counts))
                if variant.name == "lb-hash":
                    # wrk's connections all come from 127.0.0.1: one key, one backend.
                    result.note += " (hash of the client address: one backend)"
                elif any(c == 0 for c in counts):
                    result.note += " (a backend got none!)"
            return result
        finally:
            sup.stop(proc)
    except B.Skip as exc:
        B.say(f"  {variant.name}: skipped: {exc}")
        return LbResult(variant.name, variant.about, skipped=str(exc))


def run(args: argparse.Namespace, sup: B.Supervisor) -> list[LbResult]:
    for tool in ("taskset", "wrk"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: run `make deps-system`")
    first, second = B.free_port(), B.free_port()
    B.say(f"starting nginx-backend on {B.HOST}:{first} and {B.HOST}:{second} (core {B.LOAD_CORE})")
    start_backend(sup, "nginx-backend", first)
    start_backend(sup, "nginx-backend-2", second)
    for port in (first, second):
        B.check_proxying("nginx-backend", port)

    results: list[LbResult] = []
    reverse = B.Variant(REFERENCE, "config/reverse.toml, 1 upstream", B.REVERSE_TOML, B.HTTPTOOLS)
    results.append(measure(sup, reverse, first, args, {}))
    upstreams = f"http://{B.HOST}:{first},http://{B.HOST}:{second}"
    for strategy in args.lb:
        variant = B.Variant(
            f"lb-{strategy}", f"config/lb.toml, 2 targets, {strategy}", LB_TOML, B.HTTPTOOLS
        )
        env = {"TRELLIS_UPSTREAMS": upstreams, "TRELLIS_LB": strategy}
        results.append(measure(sup, variant, first, args, env, (first, second)))
    return results


def table(results: list[LbResult]) -> list[str]:
    """One row per target: req/s, p50, p99, CPU/request, ratios to the reference row, notes."""
    ref = next((r for r in results if r.target == REFERENCE and r.skipped is None), None)
    head = ("req/s", "p50", "p99", f"vs {REFERENCE}", "CPU/req", f"CPU vs {REFERENCE}", "errors")
    rows: list[tuple[str, ...]] = [("target", *head, "notes")]
    for r in results:
        if r.skipped is not None or r.rps is None:
            reason = (r.skipped or "no result").splitlines()[0]
            rows.append((r.target, *["-"] * len(head), f"skipped: {reason}"))
            continue
        ratio = f"{r.rps / ref.rps:.2f}x" if ref and ref.rps else "-"
        cpu = f"{r.cpu_us:.0f}us" if r.cpu_us else "-"
        cpu_ratio = f"{r.cpu_us / ref.cpu_us:.2f}x" if ref and ref.cpu_us and r.cpu_us else "-"
        errors = str(r.socket_errors + r.non_2xx)
        rps, p50, p99 = f"{r.rps:,.0f}", B.fmt_ms(r.p50_ms), B.fmt_ms(r.p99_ms)
        rows.append((r.target, rps, p50, p99, ratio, cpu, cpu_ratio, errors, r.note))
    n = len(head) + 1
    widths = [max(len(row[i]) for row in rows) for i in range(n)]
    out = []
    for i, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])]
        cells += [c.rjust(w) for c, w in zip(row[1:n], widths[1:], strict=True)]
        out.append("  ".join([*cells, row[n]]).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--duration", type=int, default=10, help="seconds of load per target")
    p.add_argument("--connections", type=int, default=50, help="wrk connections (-c)")
    p.add_argument(
        "--repeat", type=int, default=1, help="measured wrk runs per target (median reported)"
    )
    p.add_argument(
        "--lb",
        default="roundrobin",
        metavar="STRATEGY[,STRATEGY]",
        help=f"strategies to run config/lb.toml with: {', '.join(STRATEGIES)} or all",
    )
    args = p.parse_args(argv)
    B.check_load_args(p, args)
    names = [s.strip() for s in args.lb.split(",") if s.strip()]
    if names == ["all"]:
        names = list(STRATEGIES)
    unknown = [s for s in names if s not in STRATEGIES]
    if unknown or not names:
        p.error(f"--lb: unknown strategy {unknown} (known: {', '.join(STRATEGIES)}, all)")
    args.lb = names
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    B.WORK.mkdir(parents=True, exist_ok=True)
    sup = B.Supervisor()
    old = {s: signal.signal(s, B._on_signal) for s in (signal.SIGTERM, signal.SIGHUP)}
    old[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
    results: list[LbResult] = []
    status = 0
    try:
        results = run(args, sup)
    except KeyboardInterrupt:
        B.say("\ninterrupted: stopping everything")
        status = 130
    except B.Stop as exc:
        B.say(f"\n{exc}: stopping everything")
        status = 143
    except B.Skip as exc:
        B.say(f"cannot run: {exc}")
        status = 1
    finally:
        sup.stop_all()
        for s, h in old.items():
            signal.signal(s, h)
    B.say("")
    B.say(
        f"results ({args.duration}s per target, {args.connections} connections,"
        f" wrk -t1 on core {B.LOAD_CORE}, Trellis on core {B.PROXY_CORE}):"
    )
    for line in table(results):
        B.say(line)
    out = B.WORK / "results-lb.json"
    out.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    B.say(
        f"\nraw results: {out.relative_to(B.ROOT)}; logs: {(B.WORK / 'logs').relative_to(B.ROOT)}/"
    )
    return status


if __name__ == "__main__":
    sys.exit(main())
