"""``[server] workers = N``: a supervisor and N real worker processes sharing the port.

The supervisor (kernel/supervisor.py) is started as a real ``kernel run``;
its workers are its children. Tests find them through /proc, and the
fixture's teardown kills the supervisor by PID, which takes the workers
with it (they get SIGTERM when their parent dies).
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path
from typing import Any

import trio

from tests.e2e.conftest import ROOT, SpawnProxy, free_port, proxy_config, run_kernel
from tests.e2e.test_signals import STUBBORN, read_all, wait_for_request
from tests.helpers import client


def children(pid: int) -> set[int]:
    """PIDs whose parent is ``pid``."""
    out = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.add(int(entry))
    return out


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return False
    return state != b"Z"


def config(port: int, workers: int = 2, bind: str = "") -> str:
    return f"""
[kernel]
watch_config = false
shutdown_grace_s = 2

[server]
workers = {workers}

[[listeners]]
bind = "{bind or f"127.0.0.1:{port}"}"

[[routes]]
name = "r"
plugins = ["respond"]

[plugins.respond]
body = "hello from a worker"
"""


async def get(port: int) -> int:
    raw = await client.exchange(port, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    status: int = client.parse_responses(raw)[0]["status"]
    return status


async def get_retrying(port: int) -> int:
    try:
        return await get(port)
    except (IndexError, OSError, trio.BrokenResourceError):
        return await get(port)


async def wait_for(predicate: Any, timeout: float = 60.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.05)


async def test_workers_share_the_port_restart_reload_and_drain(
    spawn_proxy: SpawnProxy, tmp_path: Path
) -> None:
    port = free_port()
    # Generous start-up time: N workers start at once on a small, busy machine.
    sup = await spawn_proxy(config(port), port=port, env={"TRELLIS_LOG": "info"}, ready=False)
    await sup.wait_ready(60)
    await wait_for(lambda: len(children(sup.pid)) == 2)
    workers = children(sup.pid)
    for _ in range(20):
        assert await get(port) == 200
    # Both workers bound the port and serve (SO_REUSEPORT spreads connections).
    await wait_for(lambda: sup.stderr().count("serving generation 1") == 2)
    assert "[w0]" in sup.stderr()
    assert "[w1]" in sup.stderr()
    # A worker that dies is replaced; the service goes on meanwhile. (A
    # connection the kernel had already queued on the dead worker's socket is
    # reset, as with any SO_REUSEPORT server: a client that retries once is served.)
    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    for _ in range(10):
        assert await get_retrying(port) == 200
    await wait_for(lambda: len(children(sup.pid)) == 2 and victim not in children(sup.pid))
    assert "died with signal SIGKILL" in sup.stderr()
    # SIGHUP reaches every worker.
    await wait_for(lambda: sup.stderr().count("serving generation 1") == 3)
    sup.signal(signal.SIGHUP)
    await wait_for(lambda: sup.stderr().count("reloaded (SIGHUP)") == 2)
    # SIGTERM drains them all and the supervisor exits 0.
    current = children(sup.pid)
    sup.signal(signal.SIGTERM)
    assert await sup.wait(20) == 0
    await wait_for(lambda: not any(alive(pid) for pid in current))


async def test_a_killed_supervisor_takes_its_workers_along(
    spawn_proxy: SpawnProxy, tmp_path: Path
) -> None:
    port = free_port()
    # A SIGKILLed supervisor cannot remove the metrics directory it would make.
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics)}
    sup = await spawn_proxy(config(port), port=port, ready=False, env=env)
    await sup.wait_ready(60)
    await wait_for(lambda: len(children(sup.pid)) == 2)
    workers = children(sup.pid)
    await sup.kill()  # SIGKILL: no chance to stop them itself
    await wait_for(lambda: not any(alive(pid) for pid in workers))


async def test_a_worker_whose_drain_is_cut_makes_the_set_exit_4(
    spawn_proxy: SpawnProxy, tmp_path: Path
) -> None:
    """Each worker bounds its own shutdown (``shutdown_abort_s``, well before
    the supervisor would kill it) and says why; the supervisor says it too."""
    port = free_port()
    (tmp_path / "stubborn_plugins.py").write_text(STUBBORN)
    toml = config(port).replace(
        "shutdown_grace_s = 2",
        'shutdown_grace_s = 0.5\nshutdown_abort_s = 1\nplugins = ["stubborn"]\n'
        '[kernel.modules]\nstubborn = "stubborn_plugins:StubbornTask"',
    )
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)]), "TRELLIS_LOG": "info"}
    sup = await spawn_proxy(toml, port=port, env=env, ready=False)
    await sup.wait_ready(60)
    await wait_for(lambda: sup.stderr().count("stubborn code runs") == 2)
    workers = children(sup.pid)
    sup.signal(signal.SIGTERM)
    t0 = trio.current_time()
    code = await sup.wait(20)
    elapsed = trio.current_time() - t0
    err = sup.stderr()
    assert code == 4, err
    # Not the supervisor's kill, 0.5 + 1 + 5 s later.
    assert elapsed < 5, f"the set took {elapsed:.1f}s"
    assert "outstayed" not in err
    for n in (0, 1):
        assert re.search(rf"\[w{n}\] .*shutdown cut 1s \(shutdown_abort_s\)", err), err
        assert re.search(rf"worker {n} \(pid \d+\) did not drain cleanly: exit code 4", err)
    assert "all workers stopped (exit 4)" in err
    await wait_for(lambda: not any(alive(pid) for pid in workers))


async def test_a_bind_failure_stops_the_set_with_exit_2(tmp_path: Path) -> None:
    port = free_port()
    blocker = trio.socket.socket()
    await blocker.bind(("127.0.0.1", port))
    blocker.listen(1)
    try:
        path = tmp_path / "w.toml"
        path.write_text(config(port))
        code, _, err = await run_kernel("run", "-c", str(path), timeout=30)
    finally:
        blocker.close()
    assert code == 2, err
    assert "failed to start (exit 2): bind failure; stopping the set" in err
    # The other worker failing alike (unless the supervisor's SIGTERM came
    # first) is said as such, not as a drain gone wrong.
    assert "did not drain cleanly: exit code 2" not in err


async def test_a_broken_file_on_disk_never_takes_down_the_running_set(
    spawn_proxy: SpawnProxy,
) -> None:
    """A worker restarted while the file on disk is broken fails to start: it
    is retried with the usual backoff (and said why), the other keeps serving,
    and once the file is fixed (and SIGHUP sent) the restart succeeds."""
    port = free_port()
    good = config(port)
    sup = await spawn_proxy(good, port=port, env={"TRELLIS_LOG": "info"}, ready=False)
    await sup.wait_ready(60)
    await wait_for(lambda: sup.stderr().count("serving generation 1") == 2)
    sup.config.write_text(good + "\n[kernel\n")  # an edit gone wrong, never applied
    victim = min(children(sup.pid))
    os.kill(victim, signal.SIGKILL)
    # Its replacement fails to load the file, again and again: an error that
    # says so each time, never the end of the set.
    failed = "failed to start again: exit code 1 (config error): the config file on disk"
    await wait_for(lambda: sup.stderr().count(failed) >= 2)
    err = sup.stderr()
    assert f"the config file on disk ({sup.config}) does not load" in err
    assert "the other workers keep serving" in err
    assert "stopping" not in err
    assert sup.returncode is None, err
    for _ in range(10):
        assert await get_retrying(port) == 200
    # Fixed, and a SIGHUP (to apply it) makes the next try now, not at the
    # end of its backoff (8 s after the third failure): it serves again.
    await wait_for(lambda: sup.stderr().count(failed) >= 3, timeout=30)
    starts = sup.stderr().count(" started (pid ")
    sup.config.write_text(good)
    sup.signal(signal.SIGHUP)
    await wait_for(lambda: sup.stderr().count(" started (pid ") == starts + 1, timeout=4)
    await wait_for(lambda: sup.stderr().count("serving generation 1") == 3, timeout=30)
    await wait_for(lambda: len(children(sup.pid)) == 2)
    assert sup.returncode is None
    current = children(sup.pid)
    sup.signal(signal.SIGTERM)
    assert await sup.wait(20) == 0
    await wait_for(lambda: not any(alive(pid) for pid in current))


async def test_a_grace_raised_by_sighup_is_the_supervisors_too(
    spawn_proxy: SpawnProxy, upstream: Any
) -> None:
    """The supervisor kills a worker that outstays its grace + abort + 5 s:
    the grace the workers run after a reload, not the one read at start."""
    port = free_port()

    def toml(grace: float) -> str:
        text = proxy_config(upstream.port, port, grace=grace, kernel_extra="shutdown_abort_s = 1")
        return text.replace("[server]\n", "[server]\nworkers = 2\n")

    sup = await spawn_proxy(toml(2), port=port, env={"TRELLIS_LOG": "info"}, ready=False)
    await sup.wait_ready(60)
    await wait_for(lambda: sup.stderr().count("serving generation 1") == 2)
    sup.config.write_text(toml(12))
    sup.signal(signal.SIGHUP)
    # (The supervisor reads the file at once; the workers take longer.)
    await wait_for(lambda: sup.stderr().count("reloaded (SIGHUP)") == 2)
    # The file breaks afterwards: the drain goes by what the workers run.
    sup.config.write_text(toml(12) + "\n[kernel\n")
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        # 10 s: past the old 2 + 1 + 5 s, within the new grace.
        await stream.send_all(b"GET /sleep/10 HTTP/1.1\r\nHost: e2e\r\n\r\n")
        await wait_for_request(upstream, "/sleep/10")
        sup.signal(signal.SIGTERM)
        with trio.fail_after(20):
            raw = await read_all(stream)
    err = sup.stderr()
    assert raw.startswith(b"HTTP/1.1 200 "), err
    assert raw.endswith(b"slept\n")
    assert await sup.wait(10) == 0, err
    assert "outstayed" not in err
    assert "drain limits now shutdown_grace_s = 12, shutdown_abort_s = 1" in err
    assert "the drain limits stay shutdown_grace_s = 12, shutdown_abort_s = 1" in err


async def test_port_zero_is_refused_with_workers(tmp_path: Path) -> None:
    path = tmp_path / "w.toml"
    path.write_text(config(0, bind="127.0.0.1:0"))
    code, _, err = await run_kernel("run", "-c", str(path))
    assert code == 1
    problem = "$.listeners[0].bind: port 0 cannot be shared by [server] workers = 2"
    assert problem in err
    # kernel check says so too: it loads the config as kernel run does.
    code, out, err = await run_kernel("check", "-c", str(path))
    assert code == 1
    assert problem in out + err
