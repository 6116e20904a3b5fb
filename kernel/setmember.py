"""A worker's side of its set (``[server] workers``, kernel/supervisor.py).

:class:`SetMember` is what an :class:`~kernel.app.App` does as one of a set
of workers:

- it shares each generation that goes live with its set (a snapshot:
  kernel/snapshot.py);
- started while its set has a snapshot, it starts from the newest, with its
  generation number, rather than from the config file: a restarted worker
  serves what its siblings serve, whatever the file says now. A snapshot
  that does not load (said with a warning) leaves the worker to the file,
  as at the set's first start, numbered 1;
- it drains when its supervisor is gone, and removes the set's snapshot
  directory, which the supervisor would have removed; leaving then, it
  removes its metrics files, and the last worker out the supervisor's
  metrics directory (kernel/metricsdir.py).

An app that is not in a set has no snapshot directory: it shares nothing
and starts from its file.

Records go to the ``kernel.app`` logger, as they did before this module
was split out of kernel/app.py.

May import: stdlib, trio, sdk, kernel.config, kernel.generation, kernel.metricsdir,
kernel.snapshot.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import trio

from kernel import metricsdir, snapshot
from kernel.config import Document
from kernel.generation import Generation
from sdk import ConfigError

__all__ = ["SetMember"]

log = logging.getLogger("kernel.app")


class SetMember:
    """Worker ``worker`` of a set whose snapshots are in ``snapshots``."""

    def __init__(
        self, worker: int, snapshots: Path | None, start_from: snapshot.Snapshot | None
    ) -> None:
        self.worker = worker
        #: The set's snapshot directory: each generation that goes live is
        #: written there (None: not in a set of workers).
        self.snapshots = snapshots
        #: The set's snapshot this worker starts from (None: the config file).
        self.start_from = start_from
        #: The supervisor is gone: nobody else cleans up after this worker.
        self.orphaned = False

    def load_first(
        self, load: Callable[[int, Document | None], Generation], config_path: Path
    ) -> Generation:
        """The first generation: the set's newest snapshot's, else the config
        file's (``load(number, document)``, ``None``: the file).

        The snapshot is not kept once loaded."""
        start, self.start_from = self.start_from, None
        if start is None:
            return load(1, None)
        try:
            gen = load(start.generation, start.document)
        except ConfigError as exc:
            log.warning(
                "the set's generation %d (worker %d's snapshot) does not load here;"
                " loading %s instead:\n%s",
                start.generation,
                start.worker,
                config_path,
                exc,
            )
            return load(1, None)
        log.info(
            "starting from the set's generation %d (worker %d's snapshot), not from %s",
            start.generation,
            start.worker,
            config_path,
        )
        return gen

    async def share(self, gen: Generation) -> None:
        """Write the live generation's snapshot for the set (kernel/snapshot.py)."""
        directory, document = self.snapshots, gen.document
        if directory is None or document is None:
            return
        number, kernel = gen.number, gen.settings.kernel
        try:
            await trio.to_thread.run_sync(
                lambda: snapshot.write(
                    directory,
                    worker=self.worker,
                    generation=number,
                    document=document,
                    kernel=kernel,
                )
            )
        except (OSError, ValueError, TypeError) as exc:
            log.warning(
                "generation %d is not shared with the other workers (%s): a worker"
                " restarted later starts from another's snapshot, or the config file",
                number,
                exc,
            )

    async def watch_supervisor(self, parent: int, stop: Callable[[], None]) -> None:
        """A worker drains (``stop``) when its supervisor is gone (it was re-parented)."""
        # Polling: no event tells a process its parent died.
        gone = os.getppid() != parent
        while not gone:
            await trio.sleep(1.0)
            gone = os.getppid() != parent
        log.warning("the supervisor (pid %d) is gone: shutting down", parent)
        self.orphaned = True
        stop()
        directory, self.snapshots = self.snapshots, None
        if directory is not None:  # the supervisor would have removed it
            await trio.to_thread.run_sync(shutil.rmtree, directory, True)

    def leave(self) -> None:
        """The worker's last act: with its supervisor gone, take its metrics
        files out of the set's metrics directory (the supervisor's own only),
        and the directory itself when this worker is the last one out."""
        if not self.orphaned:
            return
        directory = metricsdir.owned()
        if directory is not None and metricsdir.leave(directory):
            log.info("removed the set's metrics directory %s (last worker out)", directory)
