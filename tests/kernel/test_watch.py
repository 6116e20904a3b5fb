"""Watching the configuration files (kernel/watch.py), on a real directory."""

from __future__ import annotations

from pathlib import Path

import trio

from kernel.watch import WATCH_STEP_MS, watch_config


async def test_a_change_asks_for_a_reload_then_the_stop_ends_the_watch(tmp_path: Path) -> None:
    config = tmp_path / "proxy.toml"
    config.write_text("[kernel]\n")
    (tmp_path / "other.toml").write_text("")
    changes: list[str] = []
    reloaded = trio.Event()
    stop = trio.Event()

    async def wait_reloaded() -> None:
        await reloaded.wait()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                watch_config, lambda: [config], lambda: changes.append("x"), wait_reloaded, stop
            )
            await trio.sleep(0.3)  # the watcher's thread is in its wait
            (tmp_path / "other.toml").write_text("not ours")
            await trio.sleep(2 * WATCH_STEP_MS / 1000)
            assert changes == []  # another file in the directory
            config.write_text("[kernel]\n# edited\n")
            while not changes:
                await trio.sleep(0.05)
            reloaded.set()
            start = trio.current_time()
            stop.set()
    assert changes == ["x"]
    assert trio.current_time() - start < 2 * WATCH_STEP_MS / 1000 + 0.5
