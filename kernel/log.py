"""Logging set-up for the process (stdlib logging only): levels, formats, flow ids.

Levels come from, in order of precedence: ``TRELLIS_LOG`` (``debug`` or a
per-logger list ``kernel=debug,router=info``), the ``-v`` flags (``-v``
info, ``-vv`` debug), and ``[kernel] log_level``. A short name without a dot
that is not one of our packages names a plugin: ``router=info`` sets
``trellis.plugins.router``, ``plugins.builtin.router`` and
``plugins.contrib.router`` (plugins log under ``trellis.plugins.<name>`` or
their module's ``__name__``).

Formats (``[kernel] log_format``, ``TRELLIS_LOG_FORMAT``): ``console``, one
readable line per record, and ``json``, one JSON object per line with
``ts``, ``level``, ``logger``, ``message`` and, when there is one,
``exception``.

**Flow ids.** The exchange sets :data:`FLOW_ID` (a context variable) while
a flow runs, so every record logged about it - by the kernel or by a
plugin hook - carries ``flow_id``: ``[flow 1a2b...]`` at the end of a
console line, a ``flow_id`` key in JSON. Under ``[server] workers`` each
record also says which worker wrote it.

May import: stdlib.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import UTC, datetime

__all__ = ["FLOW_ID", "configure_logging", "parse_log_spec"]

#: The id of the flow the current task is serving ("" outside a flow).
FLOW_ID: contextvars.ContextVar[str] = contextvars.ContextVar("trellis_flow_id", default="")

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
#: Top-level logger names that are not plugin short names.
_OURS = frozenset({"kernel", "sdk", "plugins", "trellis", "root"})
_FORMATS = ("console", "json")


def logger_names(name: str) -> list[str]:
    """The loggers a ``TRELLIS_LOG`` name sets: itself, plus a plugin's three homes."""
    if "." in name or name in _OURS:
        return [name]
    return [name, f"trellis.plugins.{name}", f"plugins.builtin.{name}", f"plugins.contrib.{name}"]


def parse_log_spec(spec: str) -> tuple[int | None, dict[str, int]]:
    """``"info,kernel.io=debug"`` -> (root level, {logger: level}); bad parts raise ValueError."""
    root: int | None = None
    per: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, level = part.rpartition("=")
        lvl = _LEVELS.get(level.strip().lower())
        if lvl is None:
            raise ValueError(f"unknown log level {level!r} in TRELLIS_LOG={spec!r}")
        if sep:
            for logger in logger_names(name.strip()):
                per[logger] = lvl
        else:
            root = lvl
    return root, per


class _Context(logging.Filter):
    """Stamps each record with the current flow id and the worker number."""

    def __init__(self, worker: int | None) -> None:
        super().__init__()
        self.worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        record.flow_id = FLOW_ID.get()
        record.worker = self.worker
        return True


class ConsoleFormatter(logging.Formatter):
    """``2026-11-22T08:00:00 WARNING kernel.exchange: message [flow 1a2b]``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        worker = getattr(record, "worker", None)
        if worker is not None:
            text = f"[w{worker}] {text}"
        flow_id = getattr(record, "flow_id", "")
        if flow_id:
            first, nl, rest = text.partition("\n")
            text = f"{first} [flow {flow_id}]{nl}{rest}"
        return text


class JsonFormatter(logging.Formatter):
    """One JSON object per record, one record per line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        flow_id = getattr(record, "flow_id", "")
        if flow_id:
            out["flow_id"] = flow_id
        worker = getattr(record, "worker", None)
        if worker is not None:
            out["worker"] = worker
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def configure_logging(
    default: str = "info",
    *,
    verbosity: int = 0,
    spec: str | None = None,
    fmt: str = "console",
    worker: int | None = None,
) -> None:
    """Install one stderr handler in the chosen format; raises ValueError for bad input."""
    if fmt not in _FORMATS:
        raise ValueError(f"unknown log format {fmt!r} (console or json)")
    level = _LEVELS.get(default, logging.INFO)
    if verbosity >= 2:
        level = logging.DEBUG
    elif verbosity == 1:
        level = min(level, logging.INFO)
    per: dict[str, int] = {}
    if spec:
        root, per = parse_log_spec(spec)
        if root is not None:
            level = root
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else ConsoleFormatter())
    handler.addFilter(_Context(worker))
    root_logger = logging.getLogger()
    for old in list(root_logger.handlers):
        root_logger.removeHandler(old)
    root_logger.addHandler(handler)
    root_logger.setLevel(level)
    for name, lvl in per.items():
        logging.getLogger(name).setLevel(lvl)
