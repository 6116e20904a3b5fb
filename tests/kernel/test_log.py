"""Log set-up: TRELLIS_LOG specs, -v, the config level."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from kernel.log import configure_logging, parse_log_spec


@pytest.fixture(autouse=True)
def _restore() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    named = logging.getLogger("kernel.io").level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("kernel.io").setLevel(named)


def test_parse_spec() -> None:
    assert parse_log_spec("debug") == (logging.DEBUG, {})
    assert parse_log_spec("info, kernel.io=debug,router=WARNING") == (
        logging.INFO,
        {"kernel.io": logging.DEBUG, "router": logging.WARNING},
    )
    with pytest.raises(ValueError, match="unknown log level 'loud'"):
        parse_log_spec("kernel=loud")


def test_precedence_spec_over_verbosity_over_default() -> None:
    configure_logging("warning")
    assert logging.getLogger().level == logging.WARNING
    configure_logging("warning", verbosity=1)
    assert logging.getLogger().level == logging.INFO
    configure_logging("warning", verbosity=2)
    assert logging.getLogger().level == logging.DEBUG
    configure_logging("warning", verbosity=2, spec="error,kernel.io=debug")
    assert logging.getLogger().level == logging.ERROR
    assert logging.getLogger("kernel.io").level == logging.DEBUG


def test_one_handler_only() -> None:
    configure_logging("info")
    configure_logging("info")
    assert len(logging.getLogger().handlers) == 1
