"""Watching the configuration files (kernel/watch.py), on a real directory."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

import trio

from kernel.config.loader import load_config
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


def _swap(dir_: Path, link: str, version: str, files: dict[str, str]) -> None:
    """A Kubernetes ConfigMap update: the files in a new directory, then the
    ``link`` symlink switched to it atomically; the old directory is kept."""
    (dir_ / version).mkdir()
    for name, text in files.items():
        (dir_ / version / name).write_text(text)
    (dir_ / f"{link}_tmp").symlink_to(version)
    os.replace(dir_ / f"{link}_tmp", dir_ / link)  # mv -T ..data_tmp ..data


async def _count_reloads(
    files: Callable[[], Iterable[Path]], steps: Callable[[list[str]], Awaitable[None]]
) -> list[str]:
    """Run the watcher on ``files()`` (each reload done at once) while ``steps`` runs."""
    changes: list[str] = []
    stop = trio.Event()

    async def reloaded() -> None:
        await trio.sleep(0)

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_config, files, lambda: changes.append("x"), reloaded, stop)
            await trio.sleep(0.3)  # the watcher's thread is in its wait
            await steps(changes)
            stop.set()
    return changes


async def _until(changes: list[str], count: int) -> None:
    while len(changes) < count:
        await trio.sleep(0.05)
    await trio.sleep(2 * WATCH_STEP_MS / 1000)  # and no more than that
    assert len(changes) == count


async def test_a_config_swapped_by_a_symlink_switch_reloads_once_each_time(
    tmp_path: Path,
) -> None:
    # run.toml -> ..data/run.toml, ..data -> ..v1, as a ConfigMap mount.
    (tmp_path / "..v1").mkdir()
    (tmp_path / "..v1" / "run.toml").write_text("[kernel]\n")
    (tmp_path / "..v1" / "other.toml").write_text("")
    (tmp_path / "..data").symlink_to("..v1")
    config = tmp_path / "run.toml"
    config.symlink_to("..data/run.toml")

    async def steps(changes: list[str]) -> None:
        (tmp_path / "unrelated.toml").write_text("not ours")
        (tmp_path / "..v1" / "other.toml").write_text("not ours either")
        await trio.sleep(2 * WATCH_STEP_MS / 1000)
        assert changes == []
        _swap(tmp_path, "..data", "..v2", {"run.toml": "[kernel]\n# v2\n"})
        await _until(changes, 1)
        # The next swap is seen too (..v1 and ..v2 stay where they are).
        _swap(tmp_path, "..data", "..v3", {"run.toml": "[kernel]\n# v3\n"})
        await _until(changes, 2)
        # And a write to the file it now resolves to.
        (tmp_path / "..v3" / "run.toml").write_text("[kernel]\n# v3, edited\n")
        await _until(changes, 3)

    assert await _count_reloads(lambda: [config], steps) == ["x"] * 3


async def test_an_include_swapped_by_a_symlink_switch_reloads(tmp_path: Path) -> None:
    main = tmp_path / "proxy.toml"
    main.write_text('include = "secrets.toml"\n')
    (tmp_path / "..v1").mkdir()
    (tmp_path / "..v1" / "secrets.toml").write_text("[kernel]\n")
    (tmp_path / "..data").symlink_to("..v1")
    (tmp_path / "secrets.toml").symlink_to("..data/secrets.toml")

    async def steps(changes: list[str]) -> None:
        _swap(tmp_path, "..data", "..v2", {"secrets.toml": "[kernel]\n# v2\n"})
        await _until(changes, 1)
        _swap(tmp_path, "..data", "..v3", {"secrets.toml": "[kernel]\n# v3\n"})
        await _until(changes, 2)

    # The files as the loader lists them, read anew for each generation.
    got = await _count_reloads(lambda: load_config(main, environ={}).files, steps)
    assert got == ["x", "x"]


async def test_a_change_made_while_the_reload_runs_asks_for_another(tmp_path: Path) -> None:
    config = tmp_path / "proxy.toml"
    config.write_text("[kernel]\n")
    changes: list[str] = []
    stop = trio.Event()

    async def reloaded() -> None:
        if len(changes) == 1:  # saved again after the reload read the file
            config.write_text("[kernel]\n# saved again\n")
            await trio.sleep(0.1)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                watch_config, lambda: [config], lambda: changes.append("x"), reloaded, stop
            )
            await trio.sleep(0.3)
            config.write_text("[kernel]\n# edited\n")
            await _until(changes, 2)
            stop.set()
