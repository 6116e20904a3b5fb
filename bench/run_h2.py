#!/usr/bin/env python3
"""Trellis benchmark, HTTP/2 and TLS: h2load against Trellis and nginx in one run.

One run starts, on loopback only (same layout as ``bench/run.py``):

- the nginx **backend** (1 worker, core 0), HTTP/1.1, ``GET /`` = 1 KiB;
- an nginx **reverse proxy** (1 worker, core 1) with an h2c listener (prior
  knowledge) and a TLS listener (ALPN h2 and http/1.1): the reference;
- the **bare trio + h2 relay** (``bench/bare_h2_relay.py``, core 1), h2c only:
  the ceiling for HTTP/2 through a Python proxy on trio;
- **Trellis** (core 1), in turn: ``config/reverse.toml`` (h2c on the
  cleartext port) and ``config/reverse-tls.toml`` (TLS, a throwaway
  certificate made with trustme under ``bench/.work/tls/``);

and loads each with ``h2load`` pinned to core 0:

- ``h2c``: ``h2load -c 10 -m 10`` (10 connections, 10 streams each);
- ``tls-h2``: the same over TLS (ALPN h2);
- ``tls-h1``: ``h2load --h1 -c 50`` over TLS (HTTP/1.1, 50 connections).

It prints req/s, the mean request time, and the ratio to nginx for each.
Every process it starts is stopped by PID, also on Ctrl-C. See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import run as B  # bench/run.py: processes, ports, nginx, Trellis

#: The issue's target for h2c: Trellis >= 0.2x nginx.
TARGET_H2C_RATIO = 0.2

LOADS = {
    "h2c": ("http", ["-c", "10", "-m", "10"]),
    "tls-h2": ("https", ["-c", "10", "-m", "10"]),
    "tls-h1": ("https", ["--h1", "-c", "50", "-m", "1"]),
}


@dataclass
class H2Result:
    proxy: str
    load: str
    rps: float | None = None
    mean_ms: float | None = None
    failed: int = 0
    skipped: str | None = None


def make_certificate(dest: Path) -> tuple[Path, Path]:
    """A throwaway CA-signed certificate for 127.0.0.1 and localhost."""
    import trustme

    dest.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_path, key_path = dest / "cert.pem", dest / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    return cert_path, key_path


_FINISHED = re.compile(r"finished in [\d.]+\w*s, ([\d.]+) req/s")
_REQUESTS = re.compile(
    r"requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed"
)
_TIME = re.compile(r"time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)")


def parse_h2load(out: str) -> tuple[float, float | None, int]:
    """(req/s, mean ms, failed requests) from h2load's report."""
    m = _FINISHED.search(out)
    if m is None:
        raise B.Skip(f"cannot read h2load's output:\n{out[-800:]}")
    req = _REQUESTS.search(out)
    failed = int(req.group(3)) if req else 0
    t = _TIME.search(out)
    mean = None
    if t:
        mean = float(t.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[t.group(2)]
    return float(m.group(1)), mean, failed


def h2load(url: str, extra: list[str], seconds: int) -> tuple[float, float | None, int]:
    argv = ["taskset", "-c", B.LOAD_CORE, "h2load", "-t", "1", *extra, "-D", str(seconds), url]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    return parse_h2load(p.stdout + p.stderr)


def load(proxy: str, name: str, port: int, seconds: int) -> H2Result:
    scheme, extra = LOADS[name]
    url = f"{scheme}://127.0.0.1:{port}/"
    B.say(f"  {proxy} {name}: warm-up 1s, then {seconds}s ({' '.join(extra)})")
    try:
        h2load(url, extra, 1)
        rps, mean, failed = h2load(url, extra, seconds)
    except (B.Skip, subprocess.TimeoutExpired) as exc:
        B.say(f"  {proxy} {name}: skipped: {exc}")
        return H2Result(proxy, name, skipped=str(exc))
    B.say(f"  {proxy} {name}: {rps:,.0f} req/s, mean {B.fmt_ms(mean)}, failed {failed}")
    return H2Result(proxy, name, rps, mean, failed)


def start_trellis(
    sup: B.Supervisor, config: Path, backend: int, env: dict[str, str], port_var: str
) -> tuple[subprocess.Popen[bytes], int]:
    """Trellis on ``config``, listening where ``port_var`` says; returns it and its port."""
    variant = B.Variant(f"trellis-{config.stem}", config.name, config, B.HTTPTOOLS)
    port = B.free_port()
    full = B.trellis_env(variant, B.free_port(), backend, **env, **{port_var: f"{B.HOST}:{port}"})
    B.check_trellis(variant, full)
    argv = ["taskset", "-c", B.PROXY_CORE, str(B.KERNEL), "run", "-c", str(config)]
    return B.launch(sup, variant.name, argv, full, port), port


def run(args: argparse.Namespace, sup: B.Supervisor) -> list[H2Result]:
    for tool in ("taskset", "h2load"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: run `make deps-system`")
    results: list[H2Result] = []
    cert, key = make_certificate(B.WORK / "tls")
    backend = B.free_port()
    B.say(f"starting nginx-backend on {B.HOST}:{backend} (core {B.LOAD_CORE})")
    B.start_nginx(sup, "nginx-backend", B.LOAD_CORE, backend)

    h2c, tls = B.free_port(), B.free_port()
    B.say(f"starting nginx-proxy-h2 (h2c {h2c}, TLS {tls}) on core {B.PROXY_CORE}")
    extra = {"BACKEND_PORT": str(backend), "TLS_PORT": str(tls), "CERT": str(cert), "KEY": str(key)}
    proc = B.start_nginx(sup, "nginx-proxy-h2", B.PROXY_CORE, h2c, extra)
    try:
        for name in LOADS:
            results.append(load("nginx", name, h2c if name == "h2c" else tls, args.duration))
    finally:
        sup.stop(proc)

    port = B.free_port()
    B.say(f"starting the bare trio + h2 relay (bench/bare_h2_relay.py) on core {B.PROXY_CORE}")
    argv = [
        "taskset", "-c", B.PROXY_CORE, sys.executable, str(B.BENCH / "bare_h2_relay.py"),
        "--listen", str(port), "--upstream", str(backend),
    ]  # fmt: skip
    proc = sup.start("bare-h2-relay", argv, dict(os.environ))
    try:
        B.wait_port(port, proc, "bare-h2-relay")
        results.append(load("bare", "h2c", port, args.duration))
    finally:
        sup.stop(proc)

    B.say(f"starting Trellis (config/reverse.toml, h2c) on core {B.PROXY_CORE}")
    proc, port = start_trellis(sup, B.REVERSE_TOML, backend, {}, "TRELLIS_LISTEN")
    try:
        results.append(load("trellis", "h2c", port, args.duration))
    finally:
        sup.stop(proc)

    B.say(f"starting Trellis (config/reverse-tls.toml) on core {B.PROXY_CORE}")
    env = {"TRELLIS_TLS_CERT": str(cert), "TRELLIS_TLS_KEY": str(key)}
    config = B.ROOT / "config" / "reverse-tls.toml"
    proc, tls_port = start_trellis(sup, config, backend, env, "TRELLIS_TLS_LISTEN")
    try:
        for name in ("tls-h2", "tls-h1"):
            results.append(load("trellis", name, tls_port, args.duration))
    finally:
        sup.stop(proc)
    return results


def table(results: list[H2Result]) -> list[str]:
    ref = {r.load: r.rps for r in results if r.proxy == "nginx" and r.rps}
    out = [f"{'load':<8} {'proxy':<8} {'req/s':>9} {'mean':>9} {'vs nginx':>9} {'failed':>7}"]
    for r in results:
        if r.skipped:
            out.append(f"{r.load:<8} {r.proxy:<8} skipped: {r.skipped.splitlines()[0]}")
            continue
        assert r.rps is not None
        base = ref.get(r.load)
        ratio = f"{r.rps / base:.2f}x" if base else "-"
        out.append(
            f"{r.load:<8} {r.proxy:<8} {r.rps:>9,.0f} {B.fmt_ms(r.mean_ms):>9} {ratio:>9}"
            f" {r.failed:>7}"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--duration", type=int, default=10, help="seconds of load per target")
    args = p.parse_args(argv)
    B.WORK.mkdir(parents=True, exist_ok=True)
    sup = B.Supervisor()
    results: list[H2Result] = []
    status = 0
    try:
        results = run(args, sup)
    except KeyboardInterrupt:
        status = 130
    except B.Skip as exc:
        B.say(f"cannot run: {exc}")
        status = 1
    finally:
        sup.stop_all()
    B.say("")
    for line in table(results):
        B.say(line)
    trellis = next((r.rps for r in results if r.proxy == "trellis" and r.load == "h2c"), None)
    nginx = next((r.rps for r in results if r.proxy == "nginx" and r.load == "h2c"), None)
    if trellis and nginx:
        ok = "PASS" if trellis >= TARGET_H2C_RATIO * nginx else "FAIL"
        B.say(f"\n  [{ok}] trellis h2c >= {TARGET_H2C_RATIO}x nginx: {trellis / nginx:.2f}x")
    bare = next((r.rps for r in results if r.proxy == "bare" and r.load == "h2c"), None)
    if trellis and bare:
        B.say(f"  [info] trellis h2c / bare trio + h2 relay: {trellis / bare:.2f}x")
    return status


if __name__ == "__main__":
    sys.exit(main())
