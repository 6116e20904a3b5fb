"""load_config / loads_config end to end: files, environment, structuring, cross-checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from kernel.config import LoadedConfig, load_config, loads_config
from kernel.config.model import ListenerConfig, PluginPolicy, RouteConfig, Settings
from sdk._errors import ConfigError


def load(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> LoadedConfig:
    return loads_config(text, base_dir=tmp_path, environ=environ or {}, source="test.toml")


def problems(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, environ)
    assert info.value.source == "test.toml"
    return info.value.problems


def test_empty_file_is_all_defaults(tmp_path: Path) -> None:
    got = load(tmp_path, "")
    assert got.settings == Settings()
    assert got.files == ()
    assert got.source == "test.toml"


def test_a_full_config(tmp_path: Path) -> None:
    text = """
    [kernel]
    plugins = ["router"]
    log_level = "debug"
    [kernel.policy.router]
    deadline_s = 1
    [server]
    http1 = "h11"
    max_body_bytes = 1024
    [[listeners]]
    name = "public"
    bind = "0.0.0.0:8080"
    default_route = "api"
    [[routes]]
    name = "api"
    upstream = "http://127.0.0.1:9000/v1"
    [plugins.headers]
    set = { "X-A" = "1" }
    """
    s = load(tmp_path, text).settings
    assert s.kernel.plugins == ["router"]
    assert s.kernel.log_level == "debug"
    assert s.kernel.policy == {"router": PluginPolicy(deadline_s=1.0)}
    assert s.server.http1 == "h11"
    assert s.server.max_body_bytes == 1024
    assert s.listeners == [ListenerConfig(name="public", bind="0.0.0.0:8080", default_route="api")]
    assert s.routes == [RouteConfig(name="api", upstream="http://127.0.0.1:9000/v1")]
    assert s.plugins == {"headers": {"set": {"X-A": "1"}}}
    assert type(s.plugins["headers"]) is dict


def test_load_config_from_a_file(tmp_path: Path) -> None:
    write(tmp_path, "base.toml", "[upstream]\nconnect_timeout_s = 2\n")
    main = write(tmp_path, "main.toml", 'include = "base.toml"\n[server]\nvia = "edge"\n')
    got = load_config(main, environ={})
    assert got.settings.upstream.connect_timeout_s == 2.0
    assert got.settings.server.via == "edge"
    assert got.files == (main.resolve(), (tmp_path / "base.toml").resolve())
    assert got.source == str(main)


def test_load_config_reads_os_environ_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    main = write(tmp_path, "main.toml", '[server]\nvia = "${VIA_FOR_TEST}"\n')
    monkeypatch.setenv("VIA_FOR_TEST", "from-env")
    monkeypatch.setenv("TRELLIS_UPSTREAM_READ_TIMEOUT_S", "7")
    got = load_config(str(main))
    assert got.settings.server.via == "from-env"
    assert got.settings.upstream.read_timeout_s == 7.0


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml", environ={})
    assert info.value.problems == [
        f"$: cannot read {tmp_path / 'nope.toml'}: No such file or directory"
    ]
    assert "invalid configuration in" in str(info.value)


def test_syntax_error(tmp_path: Path) -> None:
    (got,) = problems(tmp_path, "[server]\nvia = 'x\n")
    assert got.startswith("$: TOML syntax error: line 2 column ")


# -------------------------------------------------------------- substitution
def test_placeholders(tmp_path: Path) -> None:
    text = """
    [server]
    via = "${VIA}"
    max_body_bytes = "${MAX:-100}"
    x_forwarded = "${XF:-false}"
    trusted_proxies = ["${NET}", "10.0.0.0/8"]
    [upstream]
    connect_timeout_s = "${T:-5}"
    [[listeners]]
    bind = "${HOST:-127.0.0.1}:${PORT}"
    [[routes]]
    name = "r"
    upstream = "http://${UP}/$${not_a_var}"
    """
    env = {"VIA": "1234", "PORT": "9999", "NET": "192.168.0.0/16", "UP": "up:80"}
    s = load(tmp_path, text, env).settings
    assert s.server.via == "1234"  # a numeric-looking value still fits a string field
    assert s.server.max_body_bytes == 100
    assert s.server.x_forwarded is False
    assert s.server.trusted_proxies == ["192.168.0.0/16", "10.0.0.0/8"]
    assert s.upstream.connect_timeout_s == 5.0
    assert type(s.upstream.connect_timeout_s) is float
    assert s.listeners[0].bind == "127.0.0.1:9999"
    assert s.routes[0].upstream == "http://up:80/${not_a_var}"


def test_placeholder_that_does_not_fit_the_field(tmp_path: Path) -> None:
    assert problems(tmp_path, '[server]\nmax_body_bytes = "${B}"\n', {"B": "lots"}) == [
        "$.server.max_body_bytes: must be an integer, got 'lots'"
    ]


def test_missing_variables_are_all_reported_once(tmp_path: Path) -> None:
    text = """
    [server]
    max_body_bytes = "${MAX}"
    [[listeners]]
    bind = "${TRELLIS_LISTEN}"
    [[routes]]
    name = "${A}-${B}"
    """
    assert problems(tmp_path, text) == [
        "$.server.max_body_bytes: environment variable MAX is not set",
        "$.listeners[0].bind: environment variable TRELLIS_LISTEN is not set",
        "$.routes[0].name: environment variable A is not set",
        "$.routes[0].name: environment variable B is not set",
    ]


# ------------------------------------------------------------------ overrides
def test_overrides(tmp_path: Path) -> None:
    env = {
        "TRELLIS_SERVER_HTTP1": "h11",
        "TRELLIS_SERVER_VIA": "1",
        "TRELLIS_UPSTREAM_CONNECT_TIMEOUT_S": "2.5",
        "TRELLIS_KERNEL_PLUGINS": '["router","headers"]',
        "TRELLIS_KERNEL_WATCH_CONFIG": "false",
        "TRELLIS_UPSTREAM": "http://127.0.0.1:1",
        "TRELLIS_UPSTREAMS": "a,b",
        "TRELLIS_LISTEN": "0.0.0.0:80",
    }
    s = load(tmp_path, '[server]\nhttp1 = "httptools"\n', env).settings
    assert s.server.http1 == "h11"
    assert s.server.via == "1"
    assert s.upstream.connect_timeout_s == 2.5
    assert s.kernel.plugins == ["router", "headers"]
    assert s.kernel.watch_config is False
    assert s.listeners == [ListenerConfig()]


def test_override_problems_name_the_variable(tmp_path: Path) -> None:
    env = {"TRELLIS_SERVER_HTTP": "h11", "TRELLIS_UPSTREAM_MAX_IDLE_PER_HOST": "many"}
    got = problems(tmp_path, "", env)
    assert len(got) == 2
    assert got[0].startswith("TRELLIS_SERVER_HTTP: no key 'http' in [server] (known: http1, ")
    assert got[1] == (
        "$.upstream.max_idle_per_host: must be an integer, got 'many'"
        " (from TRELLIS_UPSTREAM_MAX_IDLE_PER_HOST)"
    )


# --------------------------------------------------------------- all at once
def test_independent_problems_are_all_listed(tmp_path: Path) -> None:
    text = """
    [kernel]
    log_level = "loud"
    [server]
    max_body_bytes = -1
    htt1 = "h11"
    [[routes]]
    upstream = "http://x"
    """
    got = problems(tmp_path, text)
    assert (
        got[0]
        == "$.kernel.log_level: must be one of 'debug', 'info', 'warning', 'error', got 'loud'"
    )
    assert got[1] == "$.server.max_body_bytes: must be >= 0, got -1"
    assert got[2].startswith("$.server.htt1: unknown key (known: http1, request_head_timeout_s, ")
    assert got[3] == "$.routes[0].name: required"
    assert len(got) == 4


def test_nan_and_negative_overrides_are_refused(tmp_path: Path) -> None:
    """They passed before, then broke every request (or kernel check itself)."""
    text = """
    [server]
    request_head_timeout_s = nan
    [kernel.policy.x]
    deadline_s = -1
    [[listeners]]
    keepalive_timeout_s = -5
    [[routes]]
    name = "r"
    connect_timeout_s = -1
    max_body_bytes = -5
    """
    assert problems(tmp_path, text) == [
        "$.kernel.policy.x.deadline_s: must be > 0, got -1.0",
        "$.server.request_head_timeout_s: must be a finite number, got nan",
        "$.listeners[0].keepalive_timeout_s: must be > 0, got -5.0",
        "$.routes[0].connect_timeout_s: must be > 0, got -1.0",
        "$.routes[0].max_body_bytes: must be >= 0, got -5",
    ]


def test_problems_from_an_include_name_the_file(tmp_path: Path) -> None:
    write(tmp_path, "shared/base.toml", "[server]\nmax_body_bytes = -1\n[[routes]]\nname = 'a'\n")
    text = 'include = "shared/base.toml"\n[[routes]]\nname = "a"\n[server]\nvia = 5\n'
    assert problems(tmp_path, text) == [
        "$.server.max_body_bytes: must be >= 0, got -1 (in shared/base.toml)",
        "$.server.via: must be a string, got 5",
        "$.routes[1].name: duplicate route name 'a' (first at $.routes[0])",
    ]


def test_file_problems_stop_before_structuring(tmp_path: Path) -> None:
    write(tmp_path, "bad.toml", "[x\n")
    got = problems(tmp_path, 'include = ["bad.toml", "gone.toml"]\n[server]\nhtt1 = 1\n')
    assert got == [
        "$: TOML syntax error: line 1 column 3: unexpected character: '\\n' (in bad.toml)",
        "$.include: cannot read gone.toml: No such file or directory",
    ]


# ---------------------------------------------------------------- cross-checks
def test_cross_checks(tmp_path: Path) -> None:
    text = """
    [[listeners]]
    bind = "127.0.0.1:8080"
    [[listeners]]
    name = "main"
    bind = "127.0.0.1:8081"
    default_route = "b"
    [[listeners]]
    name = "other"
    bind = "127.0.0.1:08080"
    default_route = "nope"
    [[routes]]
    name = "a"
    [[routes]]
    name = "b"
    [[routes]]
    name = "a"
    """
    assert problems(tmp_path, text) == [
        "$.listeners[1].name: duplicate listener name 'main' (first at $.listeners[0])",
        "$.listeners[2].bind: duplicate bind '127.0.0.1:08080' (first at $.listeners[0])",
        "$.routes[2].name: duplicate route name 'a' (first at $.routes[0])",
        "$.listeners[2].default_route: no route named 'nope' (routes: a, b)",
    ]


def test_a_wildcard_bind_clashes_with_its_port_on_one_address(tmp_path: Path) -> None:
    """They passed ``kernel check``, and ``kernel run`` then exited 2."""
    text = """
    [[listeners]]
    name = "a"
    bind = "0.0.0.0:8080"
    [[listeners]]
    name = "b"
    bind = "127.0.0.1:8080"
    [[listeners]]
    name = "c"
    bind = "[::1]:8080"
    [[listeners]]
    name = "d"
    bind = "[::]:8081"
    [[listeners]]
    name = "e"
    bind = "127.0.0.1:8081"
    [[listeners]]
    name = "f"
    bind = "localhost:8080"
    """
    assert problems(tmp_path, text) == [
        "$.listeners[1].bind: '127.0.0.1:8080' and '0.0.0.0:8080' (at $.listeners[0]) cannot"
        " both be bound: the unspecified address takes port 8080 on every address",
    ]
    # With workers, SO_REUSEPORT lets them share.
    shared = load(tmp_path, "[server]\nworkers = 2\n" + text.replace("\n    ", "\n"))
    assert len(shared.settings.listeners) == 6


def test_port_zero_is_refused_with_workers(tmp_path: Path) -> None:
    text = '[server]\nworkers = 3\n[[listeners]]\nname = "a"\nbind = "127.0.0.1:0"\n'
    text += '[[listeners]]\nname = "b"\nbind = "127.0.0.1:8080"\n'
    assert problems(tmp_path, text) == [
        "$.listeners[0].bind: port 0 cannot be shared by [server] workers = 3"
        " (each worker would get a port of its own): give a fixed port",
    ]
    # One process: each listener gets a port of its own, as asked.
    one = load(tmp_path, text.replace("workers = 3", "workers = 1"))
    assert [lc.bind for lc in one.settings.listeners] == ["127.0.0.1:0", "127.0.0.1:8080"]


def test_default_route_without_routes(tmp_path: Path) -> None:
    assert problems(tmp_path, '[[listeners]]\ndefault_route = "x"\n') == [
        "$.listeners[0].default_route: no route named 'x' (no routes are defined)"
    ]


def test_cross_checks_skip_values_structuring_rejects(tmp_path: Path) -> None:
    text = """
    [[listeners]]
    name = 5
    bind = "nope"
    [[listeners]]
    bind = "nope"
    [[routes]]
    upstream = "http://x"
    """
    assert problems(tmp_path, text) == [
        "$.listeners[0].name: must be a string, got 5",
        "$.listeners[0].bind: 'nope' is not HOST:PORT",
        "$.listeners[1].bind: 'nope' is not HOST:PORT",
        "$.routes[0].name: required",
    ]


def test_policy_names_are_free_form(tmp_path: Path) -> None:
    s = load(tmp_path, '[kernel.policy."not.loaded-yet"]\non_error = "fail_open"\n').settings
    assert s.kernel.policy == {"not.loaded-yet": PluginPolicy(on_error="fail_open")}


def test_a_named_instances_policy_is_written_like_its_table(tmp_path: Path) -> None:
    # [kernel.policy.headers.x] as [plugins.headers.x]; the quoted name works too.
    text = (
        "[kernel.policy.headers]\ndeadline_s = 2.0\n"
        '[kernel.policy.headers.x]\non_error = "fail_open"\n'
        '[kernel.policy."headers.y"]\ndeadline_s = 3.0\n'
    )
    s = load(tmp_path, text).settings
    assert s.kernel.policy == {
        "headers": PluginPolicy(deadline_s=2.0),
        "headers.x": PluginPolicy(on_error="fail_open"),
        "headers.y": PluginPolicy(deadline_s=3.0),
    }
    assert problems(tmp_path, "[kernel.policy.headers.x]\ndeadline_s = -1\n") == [
        '$.kernel.policy["headers.x"].deadline_s: must be > 0, got -1.0'
    ]


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_several_listeners_may_bind_port_zero(tmp_path: Path) -> None:
    one = '[[listeners]]\nname = "{}"\nbind = "127.0.0.1:0"\n'
    text = one.format("a") + one.format("b")
    settings = loads_config(text, base_dir=tmp_path, environ={}).settings
    assert [lc.bind for lc in settings.listeners] == ["127.0.0.1:0", "127.0.0.1:0"]
