"""Logging set-up for the process (stdlib logging only).

Levels come from, in order of precedence: ``TRELLIS_LOG`` (``debug`` or a
per-logger list ``kernel=debug,plugins.builtin.router=info``), the ``-v``
flags (``-v`` info, ``-vv`` debug), and ``[kernel] log_level``. Plugins just
use ``logging.getLogger(__name__)``.

May import: stdlib.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["configure_logging", "parse_log_spec"]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


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
            per[name.strip()] = lvl
        else:
            root = lvl
    return root, per


def configure_logging(
    default: str = "info", *, verbosity: int = 0, spec: str | None = None
) -> None:
    """Install one stderr handler with a compact, greppable format."""
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
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")
    )
    root_logger = logging.getLogger()
    for old in list(root_logger.handlers):
        root_logger.removeHandler(old)
    root_logger.addHandler(handler)
    root_logger.setLevel(level)
    for name, lvl in per.items():
        logging.getLogger(name).setLevel(lvl)
