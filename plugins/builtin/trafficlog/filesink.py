"""The JSON-lines sink: :class:`FileSink`, with daily and size rotation and retention.

Files live in one directory and are named by the UTC date of the moment
they are written (not of the flow)::

    traffic-2026-11-22.log      first file of the day
    traffic-2026-11-22.1.log    started when the first would pass max_file_bytes
    traffic-2026-11-22.2.log    ...

With ``[server] workers`` above 1, each worker writes files of its own,
its number after the date (``traffic-2026-11-22.w0.log``,
``traffic-2026-11-22.w1.3.log``): every file has one writer, so the size
limit and the promise below hold per file (``worker``; ``None``, a single
process, keeps the plain names).

Files are never renamed: the highest number is the one being written, and a
finished file never changes again (safe for shippers that tail by name). A
record is moved to the next file when it would take the current one past
``max_file_bytes`` (so files stay under it, but for a single larger record);
0 turns size rotation off. After a restart the day's highest-numbered file
(of the same worker) is continued.

Retention: when the sink opens and at the first write of each new day, files matching
``traffic-YYYY-MM-DD[.wW][.N].log`` (any worker's) whose date is more than ``retention_days``
days before today are deleted (``7`` keeps today and the seven days before);
nothing else in the directory is touched. ``0`` keeps every file.

The wall clock is a seam (``clock``: a callable returning an aware
``datetime``), so rotation and retention are tested without waiting.

Every method blocks (file I/O) and runs in the writer's worker thread, one
call at a time; the writer serialises them.

May import: stdlib, .record.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
from collections.abc import Callable, Iterable
from typing import BinaryIO

from .record import Record, json_line

__all__ = ["FILE_PATTERN", "Clock", "FileSink", "file_name", "utc_now"]

log = logging.getLogger("trellis.plugins.trafficlog")

#: A callable returning the current time (timezone-aware).
Clock = Callable[[], dt.datetime]

#: The names this sink writes, and the only ones retention may delete.
FILE_PATTERN = re.compile(r"traffic-(\d{4}-\d{2}-\d{2})(?:\.w(0|[1-9]\d*))?(?:\.([1-9]\d*))?\.log")


def utc_now() -> dt.datetime:
    """The real clock."""
    return dt.datetime.now(dt.UTC)


def file_name(day: dt.date, index: int = 0, worker: int | None = None) -> str:
    """``traffic-2026-11-22.log`` for index 0, ``traffic-2026-11-22.3.log`` for 3;
    ``traffic-2026-11-22.w1.3.log`` for index 3 of worker 1."""
    who = f".w{worker}" if worker is not None else ""
    suffix = f".{index}" if index else ""
    return f"traffic-{day.isoformat()}{who}{suffix}.log"


def _parse(name: str) -> tuple[dt.date, int, int | None] | None:
    """(day, index, worker or None) of one of our file names."""
    m = FILE_PATTERN.fullmatch(name)
    if m is None:
        return None
    try:
        day = dt.date.fromisoformat(m.group(1))
    except ValueError:
        return None
    worker = int(m.group(2)) if m.group(2) is not None else None
    return day, int(m.group(3) or 0), worker


class FileSink:
    """JSON lines into ``directory``, one file per UTC day and size step."""

    label = "file"

    def __init__(
        self,
        directory: str,
        *,
        max_bytes: int = 100 * 1024 * 1024,
        retention_days: int = 7,
        clock: Clock = utc_now,
        worker: int | None = None,
    ) -> None:
        self.directory = directory
        #: The worker whose files these are (``None``: the only process).
        self.worker = worker
        self.max_bytes = max_bytes
        self.retention_days = retention_days
        self._clock = clock
        self._day: dt.date | None = None
        self._index = 0
        self._file: BinaryIO | None = None
        self._size = 0
        #: Files deleted by retention so far (for tests and logs).
        self.deleted: list[str] = []

    def configure(self, *, max_bytes: int, retention_days: int) -> None:
        """New rotation settings (a reload); they apply from the next write."""
        self.max_bytes = max_bytes
        self.retention_days = retention_days

    @property
    def path(self) -> str | None:
        """The file being written, if one is open."""
        if self._day is None or self._file is None:
            return None
        return os.path.join(self.directory, file_name(self._day, self._index, self.worker))

    def _today(self) -> dt.date:
        now = self._clock()
        return (now.astimezone(dt.UTC) if now.tzinfo is not None else now).date()

    # ------------------------------------------------------------ lifecycle
    def open(self) -> None:
        """Create the directory and apply retention (the first file opens on the first write)."""
        os.makedirs(self.directory, exist_ok=True)
        self._switch_day(self._today())

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            finally:
                self._file = None

    # ---------------------------------------------------------------- write
    @staticmethod
    def encode(record: Record) -> bytes:
        """The JSON line of ``record``: made when it is queued, on the event loop."""
        return json_line(record)

    def write(self, records: Iterable[Record | bytes]) -> None:
        """Append the records; raises :class:`OSError` (the file is then reopened next time)."""
        today = self._today()
        if today != self._day:
            self._switch_day(today)
        try:
            pending: list[bytes] = []
            for record in records:
                line = record if isinstance(record, bytes) else json_line(record)
                if self._file is None:
                    self._open_current()
                limit = self.max_bytes
                if limit and self._size and self._size + len(line) > limit:
                    self._flush(pending)
                    self._next_file()
                pending.append(line)
                self._size += len(line)
            self._flush(pending)
        except OSError:
            # Whatever the buffer holds must not be written twice: drop the handle.
            file, self._file = self._file, None
            if file is not None:
                try:
                    file.close()
                except OSError:
                    pass
            raise

    def _flush(self, pending: list[bytes]) -> None:
        if pending and self._file is not None:
            self._file.write(b"".join(pending))
            self._file.flush()
        pending.clear()

    # -------------------------------------------------------------- rotation
    def _switch_day(self, today: dt.date) -> None:
        self.close()
        self._day = today
        self._index = max(
            (idx for day, idx, who in self._existing() if day == today and who == self.worker),
            default=0,
        )
        self._cleanup(today)

    def _next_file(self) -> None:
        self.close()
        self._index += 1
        self._open_current()

    def _open_current(self) -> None:
        assert self._day is not None
        os.makedirs(self.directory, exist_ok=True)
        path = os.path.join(self.directory, file_name(self._day, self._index, self.worker))
        file = open(path, "ab")  # noqa: SIM115 (kept open across batches)
        size = file.seek(0, os.SEEK_END)
        if size:
            # A previous write that failed half-way may have left a partial line.
            with open(path, "rb") as check:
                check.seek(size - 1)
                if check.read(1) != b"\n":
                    file.write(b"\n")
                    size += 1
        self._file = file
        self._size = size

    def _existing(self) -> list[tuple[dt.date, int, int | None]]:
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        return [p for p in map(_parse, names) if p is not None]

    def _cleanup(self, today: dt.date) -> None:
        if self.retention_days <= 0:
            return
        oldest = today - dt.timedelta(days=self.retention_days)
        for day, idx, who in self._existing():
            if day < oldest:
                name = file_name(day, idx, who)
                try:
                    os.unlink(os.path.join(self.directory, name))
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    log.warning("traffic log: cannot delete old file %s: %s", name, exc)
                    continue
                self.deleted.append(name)
                log.info("traffic log: deleted %s (older than %d days)", name, self.retention_days)
