"""Log set-up: TRELLIS_LOG specs, -v, the config level."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from kernel.log import FLOW_ID, ConsoleFormatter, JsonFormatter, configure_logging, parse_log_spec


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
        {
            "kernel.io": logging.DEBUG,
            # a plugin's short name sets its three possible homes too
            "router": logging.WARNING,
            "trellis.plugins.router": logging.WARNING,
            "plugins.builtin.router": logging.WARNING,
            "plugins.contrib.router": logging.WARNING,
        },
    )
    assert parse_log_spec("kernel=debug")[1] == {"kernel": logging.DEBUG}
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


def _emit(fmt: str, worker: int | None = None, flow: str = "") -> str:
    configure_logging("info", fmt=fmt, worker=worker)
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    buffer = io.StringIO()
    handler.setStream(buffer)
    token = FLOW_ID.set(flow)
    try:
        logging.getLogger("trellis.plugins.x").warning("hello %s", "there")
    finally:
        FLOW_ID.reset(token)
    return buffer.getvalue()


def test_console_lines_carry_the_flow_id_and_worker() -> None:
    line = _emit("console", worker=1, flow="abc123")
    assert line.startswith("[w1] ")
    assert "WARNING trellis.plugins.x: hello there [flow abc123]" in line
    plain = _emit("console")
    assert "[flow" not in plain
    assert not plain.startswith("[w")


def test_json_lines() -> None:
    record = json.loads(_emit("json", worker=0, flow="f1"))
    assert record["level"] == "warning"
    assert record["logger"] == "trellis.plugins.x"
    assert record["message"] == "hello there"
    assert record["flow_id"] == "f1"
    assert record["worker"] == 0
    assert record["ts"].endswith("+00:00")
    bare = json.loads(_emit("json"))
    assert "flow_id" not in bare
    assert "worker" not in bare


def test_exceptions_in_json_and_console() -> None:
    record = logging.LogRecord("n", logging.ERROR, "f", 1, "boom", None, None)
    try:
        raise ValueError("bad")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    assert "ValueError: bad" in json.loads(JsonFormatter().format(record))["exception"]
    record.flow_id = "f9"
    text = ConsoleFormatter().format(record)
    assert text.splitlines()[0].endswith("boom [flow f9]")
    assert "ValueError: bad" in text


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log format 'xml'"):
        configure_logging("info", fmt="xml")
