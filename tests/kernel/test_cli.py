"""The ``kernel`` command: check, explain, plugins, run's exit codes."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from kernel.app import EXIT_CRASH, App
from kernel.cli import main

GOOD = """
[kernel]
plugins = ["router"]
watch_config = false

[[listeners]]
bind = "127.0.0.1:0"

[[routes]]
name = "api"
upstream = "http://127.0.0.1:9000/base"
plugins = ["headers.tag"]

[[routes]]
name = "local"
plugins = ["respond"]

[plugins.router]
rules = [{ path_prefix = "/api", route = "api" }]

[plugins.headers.tag]
response_set = { "x-tag" = "1" }
"""

BROKEN = """
[kernel]
plugins = ["router", "nosuch"]
log_level = "loud"

[server]
max_body_bytes = -1
http3 = true

[[listeners]]
bind = "nowhere"

[[routes]]
name = "api"
upstream = "ftp://x"

[plugins.router]
rules = [{ path_prefix = "/api", route = "missing" }]
"""


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """``kernel run`` configures the root logger; give it back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return str(path)


def test_check_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "-c", _write(tmp_path, GOOD)]) == 0
    out = capsys.readouterr().out
    assert "ok (1 listener(s), 2 route(s)" in out
    assert "router" in out
    assert "headers.tag" in out


def test_check_lists_every_problem_with_its_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "-c", _write(tmp_path, BROKEN)]) == 1
    err = capsys.readouterr().err
    for expected in (
        "$.kernel.log_level",
        "$.server.max_body_bytes",
        "$.server.http3: unknown key",
        "$.listeners[0].bind",
        "$.routes[0].upstream",
    ):
        assert expected in err, expected
    assert "problem(s)" in err.splitlines()[0]


def test_check_reports_plugin_level_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = GOOD.replace('plugins = ["router"]', 'plugins = ["router", "nosuch"]').replace(
        'route = "api" }', 'route = "missing" }'
    )
    assert main(["check", "-c", _write(tmp_path, text)]) == 1
    err = capsys.readouterr().err
    assert "$.kernel.plugins[1]: unknown plugin 'nosuch'" in err
    assert "$.plugins.router.rules[0].route" in err
    assert "missing" in err


@pytest.mark.parametrize("kernel_ok", [True, False])
def test_check_says_a_plugin_table_that_is_not_a_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kernel_ok: bool
) -> None:
    """Found by feeding mutated configs to ``load_generation``: before, exit 70
    and a traceback (``TypeError: 'int' object is not iterable``)."""
    text = (
        '[kernel]\nplugins = ["router"]\n'
        + ("" if kernel_ok else "[server]\nhttp2 = 5\n")
        + "[plugins]\nrouter = 5\nheaders = [1]\n"
    )
    assert main(["check", "-c", _write(tmp_path, text)]) == 1
    problems = capsys.readouterr().err.splitlines()[1:]
    assert problems == [
        *([] if kernel_ok else ["  $.server.http2: must be true or false, got 5"]),
        "  $.plugins.router: must be a table, got 5",
        "  $.plugins.headers: must be a table, got [1]",
    ]


@attrs.frozen(kw_only=True)
class CodesConfig:
    codes: list[int] = attrs.field(
        factory=list,
        validator=attrs.validators.deep_iterable(attrs.validators.in_(range(400, 600))),
    )


class Codes:
    """A plugin whose table is a list of status codes."""

    config_class = CodesConfig

    def __init__(self, config: CodesConfig) -> None:
        self.config = config


AUDIT = """
[kernel]
plugins = ["router", "wrong", "codes", "pick.missing", "pick.spare"]

[kernel.modules]
wrong = "tests.kernel.test_pluginhost:WrongParameters"
codes = "tests.kernel.test_cli:Codes"
pick = "tests.kernel.test_generation:Pick"

[[routes]]
name = "a"

[plugins.router]
rules = [{ path_prefix = "x", route = "a" }, { route = "gone" }]

[plugins.codes]
codes = [7, 404, 9]

[plugins.pick]
weight = 0

[plugins.pick.spare]
weight = 2
routes = ["a"]
route = "a"
"""


def test_check_lists_the_problems_an_audit_found_hidden(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every bad list item, the cross-check of a table with a bad value, the
    base table under a missing named instance, a misspelled hook parameter."""
    assert main(["check", "-c", _write(tmp_path, AUDIT)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].endswith("c.toml: 9 problem(s)")
    assert sorted(line.strip() for line in err[1:]) == [
        "$.plugins.codes.codes[0]: 'codes' must be in range(400, 600) (got 7)",
        "$.plugins.codes.codes[2]: 'codes' must be in range(400, 600) (got 9)",
        "$.plugins.pick.missing: no table [plugins.pick.missing] for instance 'pick.missing'",
        "$.plugins.pick.weight: 'weight' must be >= 1: 0",
        "$.plugins.router.rules[0].path_prefix: must start with '/', got 'x'",
        "$.plugins.router.rules[1].route: no route named 'gone' (routes: a)",
        "$.plugins.wrong: hook trellis_request has unknown parameter 'flw' (accepted: flow)",
        "$.plugins.wrong: hook trellis_request_body has unknown parameter 'ending'"
        " (accepted: flow, chunk, end)",
        "$.plugins.wrong: hook trellis_shutdown has unknown parameter 'now' (accepted: none)",
    ]


ROOT = Path(__file__).resolve().parents[2]
KERNEL = str(Path(sys.executable).with_name("kernel"))
#: What a bad name or method is told it may hold.
TOKEN = "only letters, digits and !#$%&'*+-.^_`|~"

#: Lists with an item of the wrong type among items their validators refuse.
BAD_ITEMS = """
[kernel]
plugins = ["router", "codes"]
watch_config = false

[kernel.modules]
codes = "tests.kernel.test_cli:Codes"

[server]
trusted_proxies = ["10.0.0.0/8", 5, "nonsense"]

[upstream.retry]
statuses = ["502", 404, 503]

[[listeners]]
bind = "127.0.0.1:0"

[[routes]]
name = "a"

[plugins.router]
rules = [
  { route = "a", methods = ["GET", 5, "NOT A METHOD"] },
  { route = "a", headers = { "x-a" = 5, "bad name" = "1" } },
  { route = "gone" },
]

[plugins.codes]
codes = [7, "x", 404, 9]
"""


def test_check_lists_every_bad_item_beside_one_of_the_wrong_type(tmp_path: Path) -> None:
    """``kernel check`` (a child process, as run by hand): each list used to
    show only its item of the wrong type, the others' problems only once it
    was fixed. ``rules[2]`` names a missing route, which is not said: a
    refused list item (``rules[0].methods[1]``) leaves the router no instance
    for its trellis_config_check (docs/PLUGINS.md)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRELLIS_")}
    done = subprocess.run(
        [KERNEL, "check", "-c", _write(tmp_path, BAD_ITEMS)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.splitlines()
    assert lines[0].endswith("c.toml: 11 problem(s)"), done.stderr
    assert [line.strip() for line in lines[1:]] == [
        "$.server.trusted_proxies[1]: must be a string, got 5",
        "$.server.trusted_proxies[2]: 'nonsense' does not appear to be an IPv4 or IPv6 network",
        "$.upstream.retry.statuses[0]: must be an integer, got '502'",
        "$.upstream.retry.statuses[1]: 404 is not a 5xx status",
        "$.plugins.router.rules[0].methods[1]: must be a string, got 5",
        "$.plugins.router.rules[0].methods[2]: invalid method 'NOT A METHOD' (' ' is not"
        f" allowed: {TOKEN})",
        "$.plugins.router.rules[1].headers.x-a: must be a string, got 5",
        "$.plugins.router.rules[1].headers[\"bad name\"]: invalid header name 'bad name' (' ' is"
        f" not allowed: {TOKEN})",
        "$.plugins.codes.codes[0]: 'codes' must be in range(400, 600) (got 7)",
        "$.plugins.codes.codes[1]: must be an integer, got 'x'",
        "$.plugins.codes.codes[3]: 'codes' must be in range(400, 600) (got 9)",
    ]


def test_blocking_a_plugin_makes_references_fail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "-c", _write(tmp_path, GOOD), "-p", "no:router"]) == 1
    err = capsys.readouterr().err
    assert "plugin 'router' is blocked ([kernel] blocked or -p no:router)" in err


def test_plugins_flag_replaces_the_global_chain(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["explain", "-c", _write(tmp_path, GOOD), "--plugins", "headers.tag,router"]) == 0
    out = capsys.readouterr().out
    assert "routing chain: headers.tag -> router" in out


def test_explain_prints_each_routes_chain(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["explain", "-c", _write(tmp_path, GOOD)]) == 0
    out = capsys.readouterr().out
    assert "route api (default): upstream http://127.0.0.1:9000/base" in out
    assert "chain: router -> headers.tag" in out
    assert "route local: upstream (none)" in out
    assert "chain: router -> respond" in out
    # Each route's effective transport, with the defaults of [upstream].
    assert (
        "transport: connect 5s, response 30s, read 60s, send 60s, pool 128 idle for 60s,"
        " http2 off, no retry, no websocket"
    ) in out


def test_plugins_lists_builtins_with_their_tables(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    for name in ("router", "headers", "respond"):
        assert f"[plugins.{name}]" in out
    assert "status = 200" in out
    # Defaults as TOML, and what has none said so, never a Python repr.
    assert 'content_type = "text/plain; charset=utf-8"' in out
    assert "require_groups = true" in out
    assert "intercept_domains = ...  # required" in out
    assert "# header = ...  (optional, unset by default)" in out
    assert "NOTHING" not in out
    assert "None" not in out
    assert "``" not in out


def test_plugins_with_a_config_lists_its_modules(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """examples/README.md: ``kernel plugins -c FILE`` lists [kernel.modules] too."""
    text = '[kernel.modules]\ndeny = "examples.plugins.with_config:DenyPlugin"\n'
    assert main(["plugins", "-c", _write(tmp_path, text)]) == 0
    out = capsys.readouterr().out
    assert "[plugins.deny]" in out
    assert main(["plugins"]) == 0
    assert "[plugins.deny]" not in capsys.readouterr().out
    assert main(["plugins", "-c", _write(tmp_path, "[kernel]\nbogus = 1\n")]) == 1
    assert "$.kernel.bogus" in capsys.readouterr().err


def test_run_with_a_bad_config_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "-c", _write(tmp_path, BROKEN)]) == 1
    assert "$.server.max_body_bytes" in capsys.readouterr().err


def test_run_with_a_taken_port_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        text = GOOD.replace('bind = "127.0.0.1:0"', f'bind = "127.0.0.1:{port}"')
        assert main(["run", "-c", _write(tmp_path, text)]) == 2
    assert "cannot bind listener 'main'" in capsys.readouterr().err


def test_a_crash_is_not_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception that escapes the kernel exits 70 (EX_SOFTWARE) with its
    traceback, not Python's 1, which the docs and the supervisor read as a
    config error. (A fault injected in the app: no config reaches one.)"""

    async def broken(self: App, **_: object) -> int:
        raise RuntimeError("an internal bug")

    monkeypatch.setattr(App, "run", broken)
    assert main(["run", "-c", _write(tmp_path, GOOD)]) == EXIT_CRASH == 70
    err = capsys.readouterr().err
    assert "the kernel crashed: an internal error, not a config problem" in err
    assert "RuntimeError: an internal bug" in err


def test_p_requires_no_prefix(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="-p takes no:NAME"):
        main(["check", "-c", _write(tmp_path, GOOD), "-p", "router"])


@pytest.mark.parametrize("argv", [["run", "--bogus"], ["nosuch"], []])
def test_usage_errors_exit_1_not_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """2 is a bind failure; a wrong command line is the configuration's error."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 1
    assert "usage: kernel" in capsys.readouterr().err


def test_a_reader_that_stops_early_gets_no_traceback() -> None:
    """``kernel plugins | head -c 20``: a real process whose stdout closes."""
    import subprocess
    import sys

    kernel = Path(sys.executable).with_name("kernel")
    proc = subprocess.Popen(
        [str(kernel), "plugins"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    with proc, proc.stderr:
        assert len(proc.stdout.read(20)) == 20
        proc.stdout.close()
        err = proc.stderr.read()
        assert proc.wait(timeout=30) == 0
    assert b"Traceback" not in err
    assert b"BrokenPipeError" not in err


def test_plugin_table_paths_are_quoted_and_blocked_tables_left_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = GOOD + '\n[plugins."my plugin"]\nx = 1\n[plugins.trafficlog]\ntype = "file"\n'
    assert main(["check", "-c", _write(tmp_path, text), "-p", "no:trafficlog"]) == 1
    err = capsys.readouterr().err
    assert "$.plugins[\"my plugin\"]: no plugin named 'my plugin' is installed" in err
    assert "trafficlog" not in err


def test_a_chain_from_the_command_line_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "-c", _write(tmp_path, GOOD), "--plugins", "router,ghost"]) == 1
    err = capsys.readouterr().err
    assert "$.kernel.plugins[1]: unknown plugin 'ghost'" in err
    assert err.rstrip().endswith("(from --plugins)")


def test_modules_resolve_from_the_working_directory(tmp_path: Path) -> None:
    """The ``kernel`` script, unlike ``python -m kernel``, did not have the
    working directory on its path: the examples' own config failed there."""
    import subprocess
    import sys

    (tmp_path / "mine.py").write_text(
        "import sdk\n\nclass Mine:\n    @sdk.hookimpl\n"
        "    def trellis_request(self, flow):\n        return None\n"
    )
    (tmp_path / "t.toml").write_text(
        '[kernel]\nplugins = ["mine"]\n[kernel.modules]\nmine = "mine:Mine"\n'
    )
    kernel = Path(sys.executable).with_name("kernel")
    done = subprocess.run(
        [str(kernel), "check", "-c", "t.toml"], cwd=tmp_path, capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr.decode()
