"""GroupChecks: a group's health checker runs while a generation has it, and
its news reaches the live generation's plugins.

Real probes against a port nobody listens on; the whole path with real
upstreams is in tests/kernel/io/test_healthcheck.py and tests/e2e.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

import sdk
from kernel.config import loads_config
from kernel.generation import Generation, build_generation
from kernel.groupchecks import GroupChecks
from tests.helpers.sockets import free_port

GROUPS = """
[[groups]]
name = "checked"
urls = "http://127.0.0.1:{port}"
[groups.health]
interval_s = 0.05
unhealthy_threshold = 1
[[groups]]
name = "plain"
urls = "http://127.0.0.1:{port}"
"""


class Listener:
    """Records the group announcements."""

    def __init__(self) -> None:
        self.probes: list[tuple[str, bool]] = []
        self.changes: list[tuple[str, bool]] = []

    @sdk.hookimpl
    def trellis_health_probe(self, target: sdk.Target, healthy: bool) -> None:
        self.probes.append((target.name, healthy))

    @sdk.hookimpl
    def trellis_target_health(self, target: sdk.Target, available: bool) -> None:
        self.changes.append((target.name, available))


def generation(tmp_path: Path, text: str, listener: Listener, previous: Any = None) -> Generation:
    settings = loads_config(
        text + '\n[kernel]\nplugins = ["listener"]\n', base_dir=tmp_path, environ={}
    ).settings
    return build_generation(
        settings, extra_plugins={"listener": listener}, previous_groups=previous
    )


async def test_checkers_follow_the_generations(tmp_path: Path) -> None:
    listener = Listener()
    port = free_port()
    first = generation(tmp_path, GROUPS.format(port=port), listener)
    live = [first]
    checks = GroupChecks(lambda: live[0])
    async with trio.open_nursery() as nursery:
        checks.sync(nursery, first, None)
        checked = first.groups["checked"]
        assert checked.checker is not None
        assert first.groups["plain"].checker is None  # no [groups.health]
        with trio.fail_after(5):
            while not listener.changes:
                await trio.sleep(0.05)
        # The probe's failure took the target down, and the plugins heard it.
        assert (checked.targets[0].name, False) in listener.probes
        assert listener.changes[0] == (checked.targets[0].name, False)
        # A reload that drops the checked group stops its checker.
        second = generation(tmp_path, "", listener, previous=first.groups)
        live[0] = second
        checks.sync(nursery, second, first)
        assert checked.checker.cancel_called
        assert checked.on_change is None
    # (The nursery ended: the only checker was cancelled.)
