"""The prometheus multiprocess directory a supervisor makes for its set of workers.

With ``[server] workers`` above 1 and no ``PROMETHEUS_MULTIPROC_DIR`` of the
operator's, the supervisor (kernel/supervisor.py) makes a directory for
prometheus-client's multiprocess mode, hands it to its workers and removes
it when the set stops. A supervisor killed with SIGKILL cannot: its workers
then drain and exit on their own (kernel/setmember.py), and the last of them
to exit removes the directory, as the supervisor would have.

"The last" without counting: each worker that leaves, one at a time (an
exclusive ``flock`` on the directory), removes its own files and those of
processes no longer alive, then tries to remove the directory, which works
only once no live worker has a file there. A directory the operator set is
never touched: the supervisor names the one it made in
``TRELLIS_SET_METRICS_DIR``, and only that one is removed.

May import: stdlib.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Mapping
from pathlib import Path

__all__ = ["MULTIPROC_ENV", "OWNED_ENV", "leave", "owned"]

#: prometheus-client's own variable: where each process writes its values.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Set by the supervisor to the multiprocess directory it made (and would remove).
OWNED_ENV = "TRELLIS_SET_METRICS_DIR"

# prometheus-client's files: counter_1234.db, gauge_livesum_1234.db, ...
_PID = re.compile(r"_(\d+)\.db\Z")


def owned(environ: Mapping[str, str] | None = None) -> Path | None:
    """The multiprocess directory when the supervisor made it, else None."""
    env = os.environ if environ is None else environ
    made = env.get(OWNED_ENV)
    if not made or env.get(MULTIPROC_ENV) != made:
        return None
    return Path(made)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def leave(directory: Path, pid: int | None = None) -> bool:
    """This process leaves the set whose supervisor is gone: remove its files
    from ``directory`` and those of dead processes; remove the directory when
    nothing of a live process is left in it. True when it was removed.

    Never raises: a directory that is gone already, or that cannot be
    opened, is left as it is.
    """
    me = os.getpid() if pid is None else pid
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # one leaving worker at a time
        for entry in os.listdir(directory):
            found = _PID.search(entry)
            if found is None:
                continue
            owner = int(found.group(1))
            if owner == me or not _alive(owner):
                try:
                    os.unlink(directory / entry)
                except FileNotFoundError:
                    pass
        try:
            os.rmdir(directory)
        except OSError:
            return False  # a live worker's files (or the operator's own) are there
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
