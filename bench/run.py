#!/usr/bin/env python3
"""Trellis benchmark: throughput, latency and idle-connection memory against nginx.

One run starts, on loopback only:

- an nginx **backend** (1 worker, core 0) answering ``GET /`` with a 1 KiB body;
- an nginx **reverse proxy** (1 worker, core 1, pooled upstream keep-alive) in
  front of it: the reference;
- the **bare relay** (``bench/bare_relay.py``, core 1): trio + httptools and
  nothing else, the ceiling for a Python proxy on trio on this machine;
- one **Trellis** process per variant (core 1): ``httptools``, ``observed``,
  ``h11``, ``chain`` (router + headers) and ``noop10`` (ten no-op plugins);

all of them at once, each idle but for its turn; then loads each target with
``wrk`` pinned to core 0, in ``--repeat`` rounds that take every target once,
in an order that rotates from round to round (so a slow stretch of a shared
VM falls on all of them, not on the last ones), and prints one table (req/s
and p50/p99 of each target's median run, ratio to nginx-proxy). Then it
opens N idle keep-alive connections to a fresh Trellis (and to nginx-proxy,
for reference) and reports the resident memory each one costs. See bench/README.md.

Stdlib only. Every process it starts is stopped by PID, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
WORK = BENCH / ".work"
KERNEL = ROOT / ".venv" / "bin" / "kernel"
REVERSE_TOML = ROOT / "config" / "reverse.toml"

#: wrk and the backend share core 0; the proxy under test gets core 1 to itself.
LOAD_CORE = "0"
PROXY_CORE = "1"
BODY = "0123456789abcdef" * 64  # 1024 bytes, nothing nginx would interpret
HOST = "127.0.0.1"
CHAIN_HEADER = "x-bench-chain"

#: Targets from the issue (printed as checks; they do not change the exit code).
TARGET_CHAIN_RATIO = 0.35
TARGET_H11_RPS = 5000.0
TARGET_P99_MS = 5.0
TARGET_IDLE_KIB = 8.0
#: "The pipeline must stay close to" the bare relay: what we hold ourselves to.
TARGET_BARE_RATIO = 0.6
TARGET_NOOP_COST = 0.10


class Skip(Exception):
    """A target cannot run here; the message says why."""


class Stop(Exception):
    """SIGTERM/SIGHUP: unwind through the finally blocks."""


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Variant:
    name: str
    about: str
    config: Path
    env: dict[str, str]
    #: prepended to PYTHONPATH of the Trellis process
    pythonpath: tuple[Path, ...] = ()


#: The kernel alone: config/reverse.toml's global chain (metrics, health,
#: traffic log) emptied, so these rows stay comparable across issues.
BARE_CHAIN = {"TRELLIS_KERNEL_PLUGINS": "[]"}
HTTPTOOLS = {
    "TRELLIS_SERVER_HTTP1": "httptools",
    "TRELLIS_UPSTREAM_HTTP1": "httptools",
    **BARE_CHAIN,
}
H11 = {"TRELLIS_SERVER_HTTP1": "h11", "TRELLIS_UPSTREAM_HTTP1": "h11", **BARE_CHAIN}
#: The config's own chain: config/reverse.toml as shipped (metrics, health,
#: file traffic log), or a bench config that sets its chain itself.
OBSERVED = {"TRELLIS_SERVER_HTTP1": "httptools", "TRELLIS_UPSTREAM_HTTP1": "httptools"}
OWN_CHAIN = OBSERVED

VARIANTS = {
    v.name: v
    for v in (
        Variant(
            "trellis-httptools",
            "config/reverse.toml, no plugins, httptools",
            REVERSE_TOML,
            HTTPTOOLS,
        ),
        Variant(
            "trellis-observed",
            "config/reverse.toml as shipped: metrics + health + file traffic log, httptools",
            REVERSE_TOML,
            OBSERVED,
        ),
        Variant("trellis-h11", "config/reverse.toml, no plugins, h11", REVERSE_TOML, H11),
        Variant(
            "trellis-chain",
            "router + headers, httptools",
            BENCH / "configs" / "chain.toml",
            OWN_CHAIN,
        ),
        Variant(
            "trellis-noop10",
            "10 no-op plugins, httptools",
            BENCH / "configs" / "noop10.toml",
            OWN_CHAIN,
            (BENCH,),
        ),
    )
}
#: The idle-connection measurement runs this variant in a process of its own.
IDLE_VARIANT = VARIANTS["trellis-httptools"]

#: The bare trio + httptools relay (bench/bare_relay.py): the Python ceiling.
BARE = "bare-relay"
LOAD_TARGETS = ["nginx-backend", "nginx-proxy", BARE, *VARIANTS]
ALL_TARGETS = [*LOAD_TARGETS, "idle-rss"]
GROUPS = {
    "nginx": ["nginx-backend", "nginx-proxy"],
    "ceiling": ["nginx-proxy", BARE],
    "trellis": [*VARIANTS, "idle-rss"],
    "all": ALL_TARGETS,
}


def resolve_only(spec: str | None) -> list[str]:
    if not spec:
        return list(ALL_TARGETS)
    chosen: list[str] = []
    for raw in spec.split(","):
        name = raw.strip()
        if not name:
            continue
        if name in GROUPS:
            names = GROUPS[name]
        elif name in ALL_TARGETS:
            names = [name]
        elif f"trellis-{name}" in ALL_TARGETS:
            names = [f"trellis-{name}"]
        else:
            known = ", ".join([*ALL_TARGETS, *GROUPS])
            raise SystemExit(f"--only: unknown target {name!r} (known: {known})")
        chosen += [n for n in names if n not in chosen]
    return chosen


# --------------------------------------------------------------------------- results


@dataclass
class Result:
    target: str
    about: str = ""
    rps: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    requests: int | None = None
    #: req/s of every measured run (``--repeat``); ``rps`` is their median
    runs_rps: list[float] = field(default_factory=list)
    socket_errors: int = 0
    non_2xx: int = 0
    skipped: str | None = None
    note: str = ""


@dataclass
class IdleResult:
    target: str
    connections: int = 0
    alive: int = 0
    rss_before_kib: int = 0
    rss_after_kib: int = 0
    kib_per_conn: float | None = None
    open_seconds: float = 0.0
    skipped: str | None = None


@dataclass
class Report:
    meta: dict[str, Any] = field(default_factory=dict)
    load: list[Result] = field(default_factory=list)
    idle: list[IdleResult] = field(default_factory=list)

    def rps_of(self, target: str) -> float | None:
        for r in self.load:
            if r.target == target and r.skipped is None:
                return r.rps
        return None


def say(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------- processes


class Supervisor:
    """Starts children in their own process group and stops each by its PID."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen[bytes], IO[bytes]]] = []

    def start(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str] | None = None,
        cwd: Path = ROOT,
    ) -> subprocess.Popen[bytes]:
        log_path = WORK / "logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = log_path.open("wb")
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append((name, proc, log))
        return proc

    @staticmethod
    def exited(proc: subprocess.Popen[bytes]) -> bool:
        """True once the child has exited; it is *not* reaped (its PID stays ours)."""
        if proc.returncode is not None:
            return True
        try:
            return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return True

    def stop(self, proc: subprocess.Popen[bytes], grace: float = 15.0) -> None:
        entry = next((e for e in self.procs if e[1] is proc), None)
        if entry is None:
            return
        self.procs.remove(entry)
        name, _, log = entry
        try:
            if not self.exited(proc):
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                deadline = time.monotonic() + grace
                while not self.exited(proc) and time.monotonic() < deadline:
                    time.sleep(0.05)
                if not self.exited(proc):
                    say(f"  {name}: still running {grace:.0f}s after SIGTERM, sending SIGKILL")
            if proc.returncode is None:
                # The leader is alive or an unreaped zombie, so its process group
                # id still names only our processes (e.g. nginx workers).
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            log.close()

    def stop_all(self) -> None:
        for _, proc, _ in reversed(list(self.procs)):
            try:
                self.stop(proc, grace=5.0)
            except Exception as exc:  # keep stopping the others
                say(f"  could not stop pid {proc.pid}: {exc!r}")


def log_tail(name: str, lines: int = 15) -> str:
    path = WORK / "logs" / f"{name}.log"
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return "\n".join("    | " + line for line in text[-lines:])


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], name: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if Supervisor.exited(proc):
            raise Skip(f"{name} exited before accepting connections\n{log_tail(name)}")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise Skip(f"{name} did not accept connections on port {port} within {timeout:.0f}s")


def pids_of(pid: int) -> list[int]:
    """``pid`` and its descendants, from /proc/<pid>/task/*/children."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            with contextlib.suppress(OSError, ValueError):
                todo += [int(c) for c in (task / "children").read_text().split()]
    return out


def rss_kib(pid: int) -> int:
    """VmRSS of ``pid`` plus its descendants, in KiB."""
    total = 0
    for p in pids_of(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def raise_nofile(want: int) -> int:
    """Raise RLIMIT_NOFILE (inherited by every child) as far as allowed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return soft
    if hard != resource.RLIM_INFINITY and hard < want:
        with contextlib.suppress(ValueError, OSError):  # root may raise the hard limit
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return want
        want = hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return want


# --------------------------------------------------------------------------- nginx


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


def render(template: Path, dest: Path, values: dict[str, str]) -> None:
    text = template.read_text()
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    left = re.findall(r"@[A-Z_]+@", text)
    if left:
        raise RuntimeError(f"{template}: unfilled placeholders {sorted(set(left))}")
    dest.write_text(text)


def start_nginx(
    sup: Supervisor, name: str, core: str, port: int, extra: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    nginx = nginx_binary()
    if nginx is None:
        raise Skip("nginx not found (make deps-system installs it)")
    prefix = WORK / name
    for sub in ("logs", "tmp"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    values = {"WORK": str(prefix), "PORT": str(port), "BODY": BODY, **(extra or {})}
    render(BENCH / f"{name}.conf.in", conf, values)
    argv = ["taskset", "-c", core, nginx, "-p", f"{prefix}/", "-e", str(prefix / "logs/error.log")]
    argv += ["-c", str(conf), "-g", "daemon off;"]
    proc = sup.start(name, argv)
    try:
        wait_port(port, proc, name)
    except Skip as exc:
        sup.stop(proc)
        raise Skip(f"{exc}\n{_file_tail(prefix / 'logs/error.log')}") from None
    return proc


def _file_tail(path: Path, lines: int = 10) -> str:
    with contextlib.suppress(OSError):
        text = path.read_text(errors="replace").strip().splitlines()
        return "\n".join("    | " + line for line in text[-lines:])
    return ""


# --------------------------------------------------------------------------- trellis


def trellis_env(variant: Variant, port: int, backend_port: int, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        TRELLIS_LISTEN=f"{HOST}:{port}",
        TRELLIS_UPSTREAM=f"http://{HOST}:{backend_port}",
        TRELLIS_KERNEL_WATCH_CONFIG="false",
        TRELLIS_LOG="warning",
        # config/reverse.toml's metrics and health listeners, and its traffic log.
        TRELLIS_METRICS_LISTEN=f"{HOST}:{free_port()}",
        TRELLIS_HEALTH_LISTEN=f"{HOST}:{free_port()}",
        TRELLIS_LOG_DIR=str(WORK / "logs" / variant.name),
    )
    env.update(variant.env)
    env.update(extra)
    if variant.pythonpath:
        parts = [str(p) for p in variant.pythonpath]
        if env.get("PYTHONPATH"):
            parts.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(parts)
    return env


def rel(path: Path) -> str:
    """``path`` relative to the repository root when it is inside it."""
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def check_trellis(variant: Variant, env: dict[str, str]) -> None:
    """Raise Skip unless the kernel exists and accepts the variant's config."""
    if not os.access(KERNEL, os.X_OK):
        raise Skip(f"{rel(KERNEL)} not found (make venv installs it)")
    if not variant.config.is_file():
        raise Skip(f"{rel(variant.config)} not found")
    argv = [str(KERNEL), "check", "-c", str(variant.config)]
    try:
        proc = subprocess.run(
            argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        raise Skip(f"`kernel check -c {rel(variant.config)}` took over 60s")
    if proc.returncode != 0:
        out = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        reason = out[-1] if out else f"exit {proc.returncode}"
        detail = "".join("\n    | " + line for line in out[-8:]) if len(out) > 1 else ""
        raise Skip(f"`kernel check -c {rel(variant.config)}` failed: {reason}{detail}")


def start_trellis(
    sup: Supervisor, variant: Variant, backend_port: int, **extra_env: str
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = trellis_env(variant, port, backend_port, **extra_env)
    check_trellis(variant, env)
    argv = ["taskset", "-c", PROXY_CORE, str(KERNEL), "run", "-c", str(variant.config)]
    return launch(sup, variant.name, argv, env, port), port


def launch(
    sup: Supervisor,
    name: str,
    argv: list[str],
    env: dict[str, str] | None,
    port: int,
    cwd: Path = ROOT,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` and wait until it listens on ``port``; stopped again if it never does."""
    proc = sup.start(name, argv, env, cwd)
    try:
        wait_port(port, proc, name)
    except Skip:
        sup.stop(proc)
        raise
    return proc


# --------------------------------------------------------------------------- load


def probe(port: int) -> tuple[int, int, dict[str, str]]:
    """One GET /: status, body length, headers (lower-cased names)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request("GET", "/", headers={"Host": f"{HOST}:{port}"})
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, len(body), {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def check_proxying(name: str, port: int) -> str:
    """Raise Skip unless GET / answers 200 with the 1 KiB body; return a note."""
    try:
        status, length, headers = probe(port)
    except (OSError, http.client.HTTPException) as exc:
        raise Skip(f"GET / failed: {exc!r}\n{log_tail(name)}")
    if status != 200 or length != len(BODY):
        raise Skip(f"GET / answered {status} with {length} bytes, expected 200 with {len(BODY)}")
    if name == "trellis-chain" and CHAIN_HEADER not in headers:
        return f"response lacks {CHAIN_HEADER} (check the headers table in chain.toml)"
    return ""


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS_MS[unit]


def parse_wrk(out: str) -> dict[str, Any]:
    """req/s, p50/p99 (ms), request count and error counts from `wrk --latency`."""
    res: dict[str, Any] = {"socket_errors": 0, "non_2xx": 0}
    m = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    if not m:
        raise ValueError("no Requests/sec line in wrk output")
    res["rps"] = float(m.group(1))
    for pct, value, unit in re.findall(
        r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m|h)\s*$", out, re.M
    ):
        res[f"p{pct}_ms"] = _ms(value, unit)
    m = re.search(r"^\s*(\d+) requests in", out, re.M)
    if m:
        res["requests"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        res["socket_errors"] = sum(int(g) for g in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        res["non_2xx"] = int(m.group(1))
    return res


def run_wrk(port: int, seconds: int, connections: int) -> dict[str, Any]:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise Skip("wrk not found (make deps-system installs it)")
    argv = ["taskset", "-c", LOAD_CORE, wrk, "-t1", f"-c{connections}", f"-d{seconds}s"]
    argv += ["--latency", f"http://{HOST}:{port}/"]
    try:
        proc = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=seconds + 60
        )
    except subprocess.TimeoutExpired:  # run() has killed wrk
        raise Skip(f"wrk did not finish within {seconds + 60}s")
    if proc.returncode != 0:
        raise Skip(f"wrk exited {proc.returncode}: {proc.stderr.strip() or proc.stdout.strip()}")
    try:
        return parse_wrk(proc.stdout)
    except ValueError as exc:
        raise Skip(f"{exc}:\n{proc.stdout}")


def take_median(result: Result, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Fill ``result`` from the wrk run with the median req/s (errors summed over all
    runs); returns that run's stats."""
    runs.sort(key=lambda r: float(r["rps"]))
    stats = runs[(len(runs) - 1) // 2]
    result.rps = stats["rps"]
    result.runs_rps = [r["rps"] for r in runs]
    result.p50_ms = stats.get("p50_ms")
    result.p99_ms = stats.get("p99_ms")
    result.requests = stats.get("requests")
    result.socket_errors = sum(r["socket_errors"] for r in runs)
    result.non_2xx = sum(r["non_2xx"] for r in runs)
    return stats


# --------------------------------------------------------------------------- idle connections


REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: trellis-bench\r\n\r\n"


def read_response(sock: socket.socket) -> int:
    """Read one response (Content-Length or chunked body); return its status."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response head")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    fields = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        fields[k.strip().lower()] = v.strip().lower()
    if "content-length" in fields:
        need = int(fields["content-length"]) - len(rest)
        while need > 0:
            chunk = sock.recv(min(need, 65536))
            if not chunk:
                raise ConnectionError("closed mid-body")
            need -= len(chunk)
    elif "chunked" in fields.get("transfer-encoding", ""):
        while not rest.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed mid-body")
            rest += chunk
    return status


def still_open(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def measure_idle(name: str, pid: int, port: int, n: int, settle: float = 1.0) -> IdleResult:
    res = IdleResult(name, connections=n)
    # Warm the process up first so that lazy imports and buffers are not counted.
    with socket.create_connection((HOST, port), timeout=10) as s:
        for _ in range(200):
            s.sendall(REQUEST)
            read_response(s)
    time.sleep(settle)
    res.rss_before_kib = rss_kib(pid)
    socks: list[socket.socket] = []
    t0 = time.monotonic()
    try:
        for _ in range(n):
            s = socket.create_connection((HOST, port), timeout=10)
            socks.append(s)
            s.sendall(REQUEST)
            status = read_response(s)
            if status != 200:
                raise Skip(f"idle connection got HTTP {status}")
        res.open_seconds = time.monotonic() - t0
        time.sleep(settle)
        res.rss_after_kib = rss_kib(pid)
        res.alive = sum(still_open(s) for s in socks)
    except (OSError, ValueError) as exc:
        raise Skip(f"opening idle connection {len(socks)}/{n} failed: {exc!r}")
    finally:
        for s in socks:
            s.close()
    res.kib_per_conn = (res.rss_after_kib - res.rss_before_kib) / n
    say(
        f"  {name}: RSS {res.rss_before_kib:,} -> {res.rss_after_kib:,} KiB for {n} idle"
        f" connections ({res.alive} still open, opened in {res.open_seconds:.1f}s):"
        f" {res.kib_per_conn:.2f} KiB each"
    )
    return res


# --------------------------------------------------------------------------- report


def fmt_ms(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v * 1000:.0f}us" if v < 1 else f"{v:.2f}ms"


def table(report: Report) -> list[str]:
    base = report.rps_of("nginx-proxy")
    rows = [("target", "req/s", "p50", "p99", "vs nginx-proxy", "errors", "notes")]
    for r in report.load:
        if r.skipped is not None:
            first = r.skipped.splitlines()[0]
            rows.append((r.target, "-", "-", "-", "-", "-", f"skipped: {first}"))
            continue
        assert r.rps is not None
        ratio = f"{r.rps / base:.2f}x" if base else "-"
        errors = str(r.socket_errors + r.non_2xx)
        rows.append(
            (r.target, f"{r.rps:,.0f}", fmt_ms(r.p50_ms), fmt_ms(r.p99_ms), ratio, errors, r.note)
        )
    widths = [max(len(row[i]) for row in rows) for i in range(6)]
    out = []
    for i, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:6], widths[1:], strict=True)
        ]
        out.append("  ".join([*cells, row[6]]).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return out


def idle_lines(report: Report) -> list[str]:
    out = []
    for r in report.idle:
        if r.skipped is not None:
            out.append(f"{r.target}: skipped: {r.skipped.splitlines()[0]}")
        else:
            out.append(
                f"{r.target}: {r.kib_per_conn:.2f} KiB RSS per idle keep-alive connection"
                f" ({r.connections} opened, {r.alive} still open;"
                f" {r.rss_before_kib:,} -> {r.rss_after_kib:,} KiB)"
            )
    return out


def checks(report: Report) -> list[str]:
    out: list[str] = []

    def line(ok: bool | None, text: str) -> None:
        out.append(f"  [{'n/a ' if ok is None else 'PASS' if ok else 'FAIL'}] {text}")

    proxy = report.rps_of("nginx-proxy")
    chain = report.rps_of("trellis-chain")
    ok = None if proxy is None or chain is None else chain >= TARGET_CHAIN_RATIO * proxy
    got = f"{chain / proxy:.2f}x" if proxy and chain else "not measured"
    line(ok, f"trellis-chain >= {TARGET_CHAIN_RATIO}x nginx-proxy: {got}")
    bare = report.rps_of(BARE)
    for name in ("trellis-httptools", "trellis-chain"):
        rps = report.rps_of(name)
        line(
            None if bare is None or rps is None else rps >= TARGET_BARE_RATIO * bare,
            f"{name} >= {TARGET_BARE_RATIO}x {BARE}: "
            + (f"{rps / bare:.2f}x" if bare and rps else "not measured"),
        )
    h11 = report.rps_of("trellis-h11")
    line(
        None if h11 is None else h11 >= TARGET_H11_RPS,
        f"trellis-h11 >= {TARGET_H11_RPS:,.0f} req/s: "
        + (f"{h11:,.0f}" if h11 else "not measured"),
    )
    for r in report.load:
        if r.target.startswith("trellis-") and r.skipped is None and r.p99_ms is not None:
            line(r.p99_ms <= TARGET_P99_MS, f"{r.target} p99 <= {TARGET_P99_MS} ms: {r.p99_ms:.2f}")
    idle = next((r for r in report.idle if r.target == IDLE_VARIANT.name), None)
    kib = idle.kib_per_conn if idle and idle.skipped is None else None
    line(
        None if kib is None else kib <= TARGET_IDLE_KIB,
        f"<= {TARGET_IDLE_KIB:.0f} KiB RSS per idle connection: "
        + (f"{kib:.2f}" if kib is not None else "not measured"),
    )
    base, noop = report.rps_of("trellis-httptools"), report.rps_of("trellis-noop10")
    cost = 1 - noop / base if base and noop else None
    line(
        None if cost is None else cost <= TARGET_NOOP_COST,
        f"10 no-op plugins cost <= {TARGET_NOOP_COST:.0%} of trellis-httptools: "
        + (f"{cost:.1%}" if cost is not None else "not measured"),
    )
    return out


def markdown(report: Report) -> list[str]:
    base = report.rps_of("nginx-proxy")
    out = ["| target | req/s | p50 | p99 | vs nginx-proxy |", "|---|---:|---:|---:|---:|"]
    for r in report.load:
        if r.skipped is None and r.rps is not None:
            ratio = f"{r.rps / base:.2f}x" if base else "-"
            out.append(
                f"| {r.target} | {r.rps:,.0f} | {fmt_ms(r.p50_ms)} | {fmt_ms(r.p99_ms)} | {ratio} |"
            )
    idle = [i for i in report.idle if i.skipped is None and i.kib_per_conn is not None]
    if idle:
        out += ["", "| idle keep-alive connections | KiB RSS per connection |", "|---|---:|"]
        out += [f"| {i.target} ({i.connections}) | {i.kib_per_conn:.2f} |" for i in idle]
    return out


def cpu_busy(seconds: float = 1.0) -> float | None:
    """Fraction of all cores busy over ``seconds``, from /proc/stat."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields[:8]), idle

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    total = total1 - total0
    return (total - (idle1 - idle0)) / total if total > 0 else None


def machine_meta(args: argparse.Namespace) -> dict[str, Any]:
    def cmd(argv: list[str]) -> str:
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=10, cwd=ROOT)
        except (OSError, subprocess.TimeoutExpired):
            return "?"
        text = (p.stdout + p.stderr).strip()
        return text.splitlines()[0] if text else "?"

    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    nginx = nginx_binary()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "commit": cmd(["git", "rev-parse", "--short", "HEAD"]),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "nginx": cmd([nginx, "-v"]) if nginx else "missing",
        "wrk": cmd(["wrk", "--version"]) if shutil.which("wrk") else "missing",
        "cpu_busy_before": cpu_busy(),
        "duration_s": args.duration,
        "repeat": args.repeat,
        "connections": args.connections,
        "idle_connections": args.idle_connections,
    }


# --------------------------------------------------------------------------- main


def check_load_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The bounds of the load options every bench script shares (exits on a bad one)."""
    if not 1 <= args.duration <= 600:
        p.error("--duration must be 1..600")
    if not 1 <= args.connections <= 10000:
        p.error("--connections must be 1..10000")
    if not 1 <= args.repeat <= 20:
        p.error("--repeat must be 1..20")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Benchmark Trellis against nginx on loopback (see bench/README.md).",
    )
    p.add_argument("--duration", type=int, default=10, help="seconds of load per target")
    p.add_argument("--connections", type=int, default=50, help="wrk connections (-c)")
    p.add_argument(
        "--only",
        metavar="NAME[,NAME]",
        help=f"targets to run: {', '.join(ALL_TARGETS)}, or a group: {', '.join(GROUPS)};"
        " 'trellis-' may be left off",
    )
    p.add_argument(
        "--skip-nginx",
        action="store_true",
        help="do not load nginx-backend/nginx-proxy (the backend still runs)",
    )
    p.add_argument(
        "--idle-connections", type=int, default=2000, help="idle keep-alive connections (N)"
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="measured wrk runs per target; the median (by req/s) is reported",
    )
    p.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    p.add_argument(
        "--kernel",
        type=Path,
        default=KERNEL,
        help=f"the Trellis executable (default: {rel(KERNEL)})",
    )
    args = p.parse_args(argv)
    check_load_args(p, args)
    if not 1 <= args.idle_connections <= 50000:
        p.error("--idle-connections must be 1..50000")
    args.targets = resolve_only(args.only)
    if args.skip_nginx:
        args.targets = [t for t in args.targets if t not in GROUPS["nginx"]]
    return args


def _on_signal(signum: int, frame: object) -> None:
    raise Stop(signal.Signals(signum).name)


T = TypeVar("T")


@dataclass
class Loaded:
    """A target up and listening, waiting for its turns under wrk."""

    name: str
    about: str
    port: int
    proc: subprocess.Popen[bytes] | None  # None: the backend, stopped with everything
    note: str = ""
    runs: list[dict[str, Any]] = field(default_factory=list)


def rotations(items: list[T], rounds: int) -> list[list[T]]:
    """The order of each round: every target first once in turn, none always last."""
    n = len(items)
    return [items[i % n :] + items[: i % n] for i in range(rounds)] if n else []


def measure_rounds(loaded: list[Loaded], args: argparse.Namespace) -> list[Result]:
    """Warm every target up, then ``--repeat`` rounds of one wrk run each, in rotation.

    Every target is running before the first measured run, and each round
    loads them one after another, so a stretch of slow VM falls on all of
    them rather than on whichever ran last; their order rotates from round
    to round. Each keeps the run with its median req/s.
    """
    warm = max(1, min(2, args.duration // 5))
    skipped: dict[str, Result] = {}
    for t in loaded:
        try:
            t.note = check_proxying(t.name, t.port)
        except Skip as exc:
            say(f"  {t.name}: skipped: {exc}")
            skipped[t.name] = Result(t.name, t.about, skipped=str(exc))
            continue
        say(f"  {t.name}: warm-up {warm}s")
        run_wrk(t.port, warm, args.connections)
    live = [t for t in loaded if t.name not in skipped]
    for i, order in enumerate(rotations(live, args.repeat), 1):
        say(f"round {i} of {args.repeat}: {args.duration}s at {args.connections} connections each")
        for t in order:
            stats = run_wrk(t.port, args.duration, args.connections)
            t.runs.append(stats)
            say(f"  {t.name}: {float(stats['rps']):,.0f} req/s, p99 {fmt_ms(stats.get('p99_ms'))}")
    return [skipped.get(t.name) or _median(t) for t in loaded]


def _median(t: Loaded) -> Result:
    result = Result(t.name, t.about, note=t.note)
    take_median(result, t.runs)
    spread = f" (median of {', '.join(f'{r:,.0f}' for r in result.runs_rps)})"
    say(
        f"  {t.name}: {result.rps:,.0f} req/s{spread if len(t.runs) > 1 else ''},"
        f" p50 {fmt_ms(result.p50_ms)}, p99 {fmt_ms(result.p99_ms)},"
        f" errors {result.socket_errors + result.non_2xx}"
    )
    return result


def run(args: argparse.Namespace, sup: Supervisor, report: Report) -> None:
    targets = args.targets
    for tool in ("taskset", "wrk"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: run `make deps-system`")
    if os.cpu_count() is None or (os.cpu_count() or 0) < 2:
        say("warning: fewer than 2 cores: the pinning to cores 0 and 1 will fail")

    backend_port = free_port()
    say(f"starting nginx-backend on {HOST}:{backend_port} (core {LOAD_CORE})")
    start_nginx(sup, "nginx-backend", LOAD_CORE, backend_port)
    check_proxying("nginx-backend", backend_port)

    # Every load target starts first (the proxies all pinned to core PROXY_CORE,
    # idle but for their turn), then measure_rounds takes them in rotation.
    # In report order: each target started, or the Result saying why it was not.
    slots: list[Loaded | Result] = []
    if "nginx-backend" in targets:
        slots.append(Loaded("nginx-backend", "direct, no proxy", backend_port, None))

    want_proxy_idle = "idle-rss" in targets and not args.skip_nginx
    proxy: subprocess.Popen[bytes] | None = None
    proxy_port = 0
    if "nginx-proxy" in targets or want_proxy_idle:
        proxy_port = free_port()
        say(f"starting nginx-proxy on {HOST}:{proxy_port} (core {PROXY_CORE})")
        try:
            proxy = start_nginx(
                sup, "nginx-proxy", PROXY_CORE, proxy_port, {"BACKEND_PORT": str(backend_port)}
            )
        except Skip as exc:
            say(f"  nginx-proxy: skipped: {exc}")
            if "nginx-proxy" in targets:
                slots.append(Result("nginx-proxy", skipped=str(exc)))
        else:
            if "nginx-proxy" in targets:
                slots.append(Loaded("nginx-proxy", "1 worker, keepalive 64", proxy_port, proxy))

    if BARE in targets:
        port = free_port()
        say(f"starting {BARE} (bench/bare_relay.py) on core {PROXY_CORE}")
        argv = [
            "taskset", "-c", PROXY_CORE, sys.executable, str(BENCH / "bare_relay.py"),
            "--listen", str(port), "--upstream", str(backend_port),
        ]  # fmt: skip
        try:
            proc = launch(sup, BARE, argv, dict(os.environ), port)
        except Skip as exc:
            say(f"  {BARE}: skipped: {exc}")
            slots.append(Result(BARE, skipped=str(exc)))
        else:
            slots.append(Loaded(BARE, "trio + httptools, nothing else", port, proc))

    for variant in VARIANTS.values():
        if variant.name not in targets:
            continue
        say(f"starting {variant.name} ({variant.about}) on core {PROXY_CORE}")
        try:
            proc, port = start_trellis(sup, variant, backend_port)
        except Skip as exc:
            say(f"  {variant.name}: skipped: {exc}")
            slots.append(Result(variant.name, variant.about, skipped=str(exc)))
        else:
            slots.append(Loaded(variant.name, variant.about, port, proc))

    loaded = [s for s in slots if isinstance(s, Loaded)]
    try:
        measured = {r.target: r for r in measure_rounds(loaded, args)}
    finally:
        for t in loaded:  # nginx-proxy stays up for the idle measurement
            if t.proc is not None and t.proc is not proxy:
                sup.stop(t.proc)
    report.load.extend(measured[s.name] if isinstance(s, Loaded) else s for s in slots)

    if proxy is not None:
        try:
            if want_proxy_idle:
                report.idle.append(
                    measure_idle("nginx-proxy", proxy.pid, proxy_port, args.idle_connections)
                )
        except Skip as exc:
            say(f"  nginx-proxy (idle): skipped: {exc}")
        finally:
            sup.stop(proxy)

    if "idle-rss" in targets:
        name = IDLE_VARIANT.name
        say(f"starting {name} for {args.idle_connections} idle keep-alive connections")
        try:
            # Keep-alive timeout well above the time it takes to open them all.
            proc, port = start_trellis(
                sup, IDLE_VARIANT, backend_port, TRELLIS_SERVER_KEEPALIVE_TIMEOUT_S="120"
            )
            try:
                check_proxying(name, port)
                report.idle.append(measure_idle(name, proc.pid, port, args.idle_connections))
            finally:
                sup.stop(proc)
        except Skip as exc:
            say(f"  {name} (idle): skipped: {exc}")
            report.idle.append(IdleResult(name, skipped=str(exc)))


def main(argv: list[str] | None = None) -> int:
    global KERNEL
    args = parse_args(argv)
    KERNEL = args.kernel.resolve()
    WORK.mkdir(parents=True, exist_ok=True)
    nofile = raise_nofile(args.idle_connections * 2 + 1024)
    if nofile < args.idle_connections + 256:
        say(f"warning: open-file limit is {nofile}; the idle test may run out of descriptors")
    report = Report(meta=machine_meta(args))
    say(
        "trellis bench: {cpu}, {cores} cores, {nginx}, {wrk}".format(**report.meta)
        + f"\n  targets: {', '.join(args.targets) or 'none'}"
    )
    busy = report.meta["cpu_busy_before"]
    if busy is not None and busy > 0.10:
        say(
            f"warning: the CPU was {busy:.0%} busy in the second before starting:"
            " something else is running, the numbers will be noisy"
        )
    sup = Supervisor()
    old = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGHUP)}
    # Ctrl-C must unwind through the finally below even when started with SIGINT
    # ignored (a background job of a non-interactive shell).
    old[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
    status = 0
    try:
        run(args, sup, report)
    except KeyboardInterrupt:
        say("\ninterrupted: stopping everything")
        status = 130
    except Stop as exc:
        say(f"\n{exc}: stopping everything")
        status = 143
    except Skip as exc:
        say(f"cannot run: {exc}")
        status = 1
    except Exception:
        traceback.print_exc()
        status = 1
    finally:
        sup.stop_all()
        for s, h in old.items():
            signal.signal(s, h)

    say("")
    say(
        f"results ({args.duration}s per target, {args.connections} connections,"
        f" wrk -t1 on core {LOAD_CORE}, proxies on core {PROXY_CORE}):"
    )
    for line in table(report):
        say(line)
    if report.idle:
        say("")
        for line in idle_lines(report):
            say(line)
    say("")
    say("targets (bench/README.md):")
    for line in checks(report):
        say(line)
    if args.markdown:
        say("")
        for line in markdown(report):
            say(line)
    out = WORK / "results.json"
    out.write_text(
        json.dumps(
            {
                "meta": report.meta,
                "load": [asdict(r) for r in report.load],
                "idle": [asdict(r) for r in report.idle],
            },
            indent=2,
        )
        + "\n"
    )
    say(f"\nraw results: {out.relative_to(ROOT)}; logs: {(WORK / 'logs').relative_to(ROOT)}/")
    return status


if __name__ == "__main__":
    sys.exit(main())
