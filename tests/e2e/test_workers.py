"""``[server] workers = N``: a supervisor and N real worker processes sharing the port.

The supervisor (kernel/supervisor.py) is started as a real ``kernel run``;
its workers are its children. Tests find them through /proc, and the
fixture's teardown kills the supervisor by PID, which takes the workers
with it (they get SIGTERM when their parent dies).
"""

from __future__ import annotations

import json
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


def environment(pid: int) -> dict[str, str]:
    """A process's environment (``/proc/PID/environ``)."""
    with open(f"/proc/{pid}/environ", "rb") as f:
        items = f.read().split(b"\0")
    return dict(item.decode().partition("=")[::2] for item in items if b"=" in item)


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
    port, metrics_port = free_port(), free_port()
    toml = config(port).replace(
        "[[listeners]]",
        f'[[listeners]]\nname = "metrics"\nbind = "127.0.0.1:{metrics_port}"\n\n[[listeners]]',
        1,
    )
    toml = toml.replace("[server]", 'plugins = ["metrics"]\n\n[server]', 1)
    sup = await spawn_proxy(toml, port=port, ready=False, env={"TRELLIS_LOG": "info"})
    await sup.wait_ready(60)
    await wait_for(lambda: len(children(sup.pid)) == 2)
    workers = children(sup.pid)
    await wait_for(lambda: sup.stderr().count("serving generation 1") == 2)
    # The set's snapshots, and the metrics directory the supervisor made,
    # with files of both workers in it (40 connections: both get some).
    snapshots = Path(environment(min(workers))["TRELLIS_SNAPSHOTS"])
    assert sorted(p.name for p in snapshots.iterdir()) == ["worker-0.toml", "worker-1.toml"]
    metrics = Path(environment(min(workers))["PROMETHEUS_MULTIPROC_DIR"])
    for _ in range(40):
        assert await get(port) == 200
    owners = {int(f.stem.rpartition("_")[2]) for f in metrics.glob("*.db")}
    assert owners == workers
    await sup.kill()  # SIGKILL: no chance to stop them itself
    await wait_for(lambda: not any(alive(pid) for pid in workers))
    # The workers removed both, as the supervisor would have.
    assert not snapshots.exists()
    assert not metrics.exists()
    assert "removed the set's metrics directory" in sup.stderr()


async def test_a_killed_supervisor_leaves_the_operators_metrics_directory(
    spawn_proxy: SpawnProxy, tmp_path: Path
) -> None:
    port = free_port()
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    (metrics / "counter_1.db").write_bytes(b"")  # pid 1: never a worker, always alive
    env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics), "TRELLIS_LOG": "info"}
    sup = await spawn_proxy(config(port), port=port, ready=False, env=env)
    await sup.wait_ready(60)
    await wait_for(lambda: len(children(sup.pid)) == 2)
    workers = children(sup.pid)
    assert "TRELLIS_SET_METRICS_DIR" not in environment(min(workers))
    await sup.kill()
    await wait_for(lambda: not any(alive(pid) for pid in workers))
    assert sorted(p.name for p in metrics.iterdir()) == ["counter_1.db"]


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


SLOW = """
import time

import sdk

time.sleep(4)  # a start that outlasts the 3 s after which one used to count as started


class Slow:
    @sdk.hookimpl
    def trellis_request(self, flow):
        return None
"""


async def test_a_slow_first_start_that_fails_still_stops_the_set(tmp_path: Path) -> None:
    """A worker has started once it serves (wrote its snapshot), not after 3 s
    of life: on a busy machine a worker failing to bind 3 s in was taken for
    one that had served, and the set retried it forever instead of exiting 2."""
    port = free_port()
    (tmp_path / "slow_plugins.py").write_text(SLOW)
    blocker = trio.socket.socket()
    await blocker.bind(("127.0.0.1", port))
    blocker.listen(1)
    try:
        path = tmp_path / "w.toml"
        path.write_text(
            config(port)
            .replace("watch_config = false", 'watch_config = false\nplugins = ["slow"]')
            .replace("[server]", '[kernel.modules]\nslow = "slow_plugins:Slow"\n\n[server]')
        )
        env = {"PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)])}
        code, _, err = await run_kernel("run", "-c", str(path), env=env, timeout=40)
    finally:
        blocker.close()
    assert code == 2, err
    assert "failed to start (exit 2): bind failure; stopping the set" in err
    assert "failed to start again" not in err


FLAKY = """
import sdk


class Flaky:
    @sdk.hookimpl
    def trellis_request(self, flow):
        return None
"""


async def test_a_restarted_worker_that_fails_to_start_never_takes_down_the_running_set(
    spawn_proxy: SpawnProxy, tmp_path: Path
) -> None:
    """A worker restarted while something it loads is broken on disk (here a
    plugin module) fails to start: it is retried with the usual backoff (and
    said why), the other keeps serving, and once it is fixed (and SIGHUP
    sent) the restart succeeds."""
    port = free_port()
    module = tmp_path / "flaky_plugins.py"
    module.write_text(FLAKY)
    good = (
        config(port)
        .replace(
            "[server]",
            '[kernel.modules]\nflaky = "flaky_plugins:Flaky"\n\n[server]',
        )
        .replace('plugins = ["respond"]', 'plugins = ["flaky", "respond"]')
    )
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)]), "TRELLIS_LOG": "info"}
    sup = await spawn_proxy(good, port=port, env=env, ready=False)
    await sup.wait_ready(60)
    await wait_for(lambda: sup.stderr().count("serving generation 1") == 2)
    module.write_text('raise RuntimeError("broken on disk")\n')
    victim = min(children(sup.pid))
    os.kill(victim, signal.SIGKILL)
    # Its replacement fails to load the set's config, again and again: an
    # error that says so each time, never the end of the set.
    failed = "failed to start again: exit code 1 (config error): the set's config does not load"
    await wait_for(lambda: sup.stderr().count(failed) >= 2)
    err = sup.stderr()
    assert f"nor does the config file on disk ({sup.config})" in err
    assert "RuntimeError('broken on disk')" in err
    assert "the other workers keep serving" in err
    assert "stopping" not in err
    assert sup.returncode is None, err
    for _ in range(10):
        assert await get_retrying(port) == 200
    # Fixed, and a SIGHUP (to apply it) makes the next try now, not at the
    # end of its backoff (8 s after the third failure): it serves again.
    await wait_for(lambda: sup.stderr().count(failed) >= 3, timeout=30)
    starts = sup.stderr().count(" started (pid ")
    module.write_text(FLAKY)
    sup.signal(signal.SIGHUP)
    await wait_for(lambda: sup.stderr().count(" started (pid ") == starts + 1, timeout=4)
    serving = re.compile(r"serving generation [12] ")
    await wait_for(lambda: len(serving.findall(sup.stderr())) == 3, timeout=30)
    await wait_for(lambda: len(children(sup.pid)) == 2)
    assert sup.returncode is None
    current = children(sup.pid)
    sup.signal(signal.SIGTERM)
    assert await sup.wait(20) == 0
    await wait_for(lambda: not any(alive(pid) for pid in current))


def pid_of(err: str, worker: int) -> int:
    """The pid of worker ``worker``'s latest process, from the supervisor's lines."""
    return int(re.findall(rf"worker {worker} started \(pid (\d+)\)", err)[-1])


async def test_a_restarted_worker_serves_what_its_siblings_serve(
    spawn_proxy: SpawnProxy,
) -> None:
    """Reloaded to B, then the file broken: a worker killed now is replaced by
    one that runs B, with B's generation number (it once loaded the file on
    disk, and failed, or served another config as generation 1)."""
    port, health = free_port(), free_port()

    def toml(body: str) -> str:
        text = config(port).replace(
            "watch_config = false", 'watch_config = false\nplugins = ["health"]'
        )
        return text.replace(
            'body = "hello from a worker"',
            # (${TRELLIS_WORKER} is substituted in each worker, restarted too.)
            f'body = "{body} from ${{TRELLIS_WORKER:-none}}"\n\n'
            f'[[listeners]]\nname = "health"\nbind = "127.0.0.1:{health}"\n\n'
            '[plugins.health]\nlistener = "health"',
        )

    sup = await spawn_proxy(toml("A"), port=port, env={"TRELLIS_LOG": "info"}, ready=False)
    await sup.wait_ready(60)
    await wait_for(lambda: sup.stderr().count("serving generation 1") == 2)
    sup.config.write_text(toml("B"))
    sup.signal(signal.SIGHUP)
    await wait_for(lambda: sup.stderr().count("reloaded (SIGHUP): generation 2 is live") == 2)
    sup.config.write_text(toml("C") + "\n[kernel\n")  # an edit gone wrong, never applied
    victim = pid_of(sup.stderr(), 0)
    os.kill(victim, signal.SIGKILL)
    await wait_for(lambda: pid_of(sup.stderr(), 0) != victim, timeout=30)
    await wait_for(
        lambda: re.search(r"\[w0\] .*serving generation 2 ", sup.stderr()) is not None,
        timeout=30,
    )
    err = sup.stderr()
    # (Its predecessor's snapshot, or its sibling's: the same.)
    assert re.search(
        r"\[w0\] .*starting from the set's generation 2 \(worker [01]'s snapshot\)", err
    )
    assert "failed to start again" not in err

    async def from_worker(port: int, path: str, worker: str) -> bytes:
        """A response of worker ``worker`` (the kernel spreads connections)."""
        for _ in range(200):
            raw = await client.exchange(
                port, f"GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".encode()
            )
            body: bytes = client.parse_responses(raw)[0]["body"]
            if worker.encode() in body:
                return body
        raise AssertionError(f"worker {worker} never answered {path}")

    assert await from_worker(port, "/", "from 0") == b"B from 0"
    assert await from_worker(port, "/", "from 1") == b"B from 1"
    alive_doc = json.loads(await from_worker(health, "/health", '"worker": 0'))
    assert alive_doc == {"status": "ok", "generation": 2, "worker": 0}
    # The next reload is generation 3 in both.
    sup.config.write_text(toml("D"))
    sup.signal(signal.SIGHUP)
    await wait_for(lambda: sup.stderr().count("reloaded (SIGHUP): generation 3 is live") == 2)
    assert await from_worker(port, "/", "from 0") == b"D from 0"


async def test_a_grace_raised_by_sighup_is_the_supervisors_too(
    spawn_proxy: SpawnProxy, upstream: Any
) -> None:
    """The supervisor kills a worker that outstays its grace + abort + 5 s:
    the grace the workers run after a reload, not the one read at start."""
    port = free_port()

    def toml(grace: float) -> str:
        text = proxy_config(upstream.port, port, grace=grace, kernel_extra="shutdown_abort_s = 0.5")
        return text.replace("[server]\n", "[server]\nworkers = 2\n")

    sup = await spawn_proxy(toml(0.5), port=port, env={"TRELLIS_LOG": "info"}, ready=False)
    await sup.wait_ready(60)
    await wait_for(lambda: sup.stderr().count("serving generation 1") == 2)
    sup.config.write_text(toml(12))
    sup.signal(signal.SIGHUP)
    await wait_for(lambda: sup.stderr().count("reloaded (SIGHUP)") == 2)
    # The file breaks afterwards: the drain goes by what the workers run.
    sup.config.write_text(toml(12) + "\n[kernel\n")
    # 7 s: past the old 0.5 + 0.5 + 5 s, within the new grace.
    err = await _slow_request_through_the_drain(sup, upstream, port, 7)
    assert (
        "SIGTERM: draining the workers (shutdown_delay_s = 0, shutdown_grace_s = 12,"
        " shutdown_abort_s = 0.5: killed after 17.5s)" in err
    )


async def test_a_refused_reload_does_not_shorten_the_drain(
    spawn_proxy: SpawnProxy, upstream: Any
) -> None:
    """A reload the workers refuse changes nothing, the supervisor's kill
    deadline included: it once took a lowered grace from such a file, and
    killed a worker 6 s into a drain it was allowed 9 s for."""
    port = free_port()

    def toml(grace: float, extra: str = "") -> str:
        text = proxy_config(
            upstream.port, port, grace=grace, kernel_extra="shutdown_abort_s = 0.5", extra=extra
        )
        return text.replace("[server]\n", "[server]\nworkers = 2\n")

    sup = await spawn_proxy(toml(9), port=port, env={"TRELLIS_LOG": "info"}, ready=False)
    await sup.wait_ready(60)
    await wait_for(lambda: sup.stderr().count("serving generation 1") == 2)
    # Settings that load, and a route whose chain names no plugin: refused.
    sup.config.write_text(toml(0.5, extra='plugins = ["nosuch"]'))
    sup.signal(signal.SIGHUP)
    await wait_for(lambda: sup.stderr().count("reload (SIGHUP) rejected") == 2)
    # 7 s: past the refused 0.5 + 0.5 + 5 s, within the grace the workers run.
    err = await _slow_request_through_the_drain(sup, upstream, port, 7)
    assert "shutdown_grace_s = 9, shutdown_abort_s = 0.5: killed after 14.5s" in err


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


async def _slow_request_through_the_drain(sup: Any, upstream: Any, port: int, seconds: int) -> str:
    """``GET /sleep/SECONDS``, SIGTERM while it runs: it completes (200) and
    the set exits 0, no worker killed; the supervisor's log."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"GET /sleep/%d HTTP/1.1\r\nHost: e2e\r\n\r\n" % seconds)
        await wait_for_request(upstream, f"/sleep/{seconds}")
        sup.signal(signal.SIGTERM)
        with trio.fail_after(20):
            raw = await read_all(stream)
    err: str = sup.stderr()
    assert raw.startswith(b"HTTP/1.1 200 "), err
    assert raw.endswith(b"slept\n")
    assert await sup.wait(10) == 0, err
    assert "outstayed" not in err
    return err
