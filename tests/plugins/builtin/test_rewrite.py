"""RewritePlugin: path operations, their order, Host, config errors, and one real proxy."""

from __future__ import annotations

import json
from typing import Any

import pluggy
import pytest

import sdk
import sdk.hookspecs
from plugins.builtin.rewrite import RewriteConfig, RewritePlugin
from sdk.testing import FakeUpstream, Harness
from tests.conftest import basic_config


def plugin(**config: Any) -> RewritePlugin:
    return RewritePlugin(sdk.structure(config, RewriteConfig))


async def upstream_sees(
    url: str, *plugins: RewritePlugin, headers: list[tuple[str, str]] | None = None
) -> sdk.Request:
    h, up = Harness(*plugins), FakeUpstream()
    await h.run(h.make_flow("GET", url, headers or []), up)
    ((request, _),) = up.received
    return request


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/api/x", "/x"),
        ("/api/x/y?q=1", "/x/y?q=1"),
        ("/api", "/"),
        ("/api/", "/"),
        ("/api?q=1", "/?q=1"),
        ("/apix", "/apix"),  # not a segment boundary
        ("/apix/y", "/apix/y"),
        ("/v1/api/x", "/v1/api/x"),  # a prefix, not a substring
        ("/api%2Fx", "/api%2Fx"),  # percent-encoded: raw text, no decoding
        ("/api/a%20b?x=%2F", "/a%20b?x=%2F"),
    ],
)
def test_strip_prefix(path: str, expected: str) -> None:
    assert plugin(strip_prefix="/api").rewrite_path(path) == expected
    # A trailing slash in the config means the same prefix.
    assert plugin(strip_prefix="/api/").rewrite_path(path) == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/x?q=1", "/v1/x?q=1"), ("/", "/v1/"), ("/?a=b", "/v1/?a=b"), ("/%7Ex", "/v1/%7Ex")],
)
def test_add_prefix(path: str, expected: str) -> None:
    assert plugin(add_prefix="/v1").rewrite_path(path) == expected
    assert plugin(add_prefix="/v1/").rewrite_path(path) == expected


@pytest.mark.parametrize(
    ("regex", "replacement", "path", "expected"),
    [
        (r"^/users/([0-9]+)$", r"/people/\1", "/users/42?full=1", "/people/42?full=1"),
        (r"^/(?P<a>\w+)/(?P<b>\w+)", r"/\g<b>/\g<a>", "/x/y/z", "/y/x/z"),
        (r"/v[0-9]+", "", "/v1/a/v2/b", "/a/b"),  # every match, "" deletes
        (r"^/only$", "", "/only?keep=me", "/?keep=me"),  # empty result -> "/"
        (r"^/", "", "/a/b", "/a/b"),  # no leading slash -> one is added
        (r"\?", "X", "/a?b=?", "/a?b=?"),  # the query is never seen by the pattern
        (r"%2F", "/", "/a%2Fb", "/a/b"),  # raw text: %2F is matched as written
        (r"^/nomatch", "/x", "/a", "/a"),
    ],
)
def test_regex(regex: str, replacement: str, path: str, expected: str) -> None:
    assert plugin(regex=regex, replacement=replacement).rewrite_path(path) == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/anything/at/all?x=1&y", "/health?x=1&y"), ("/", "/health"), ("/a?", "/health?")],
)
def test_replace_path_is_ditos(path: str, expected: str) -> None:
    # Dito: the upstream path is exactly the configured path, the query is kept.
    assert plugin(replace_path="/health").rewrite_path(path) == expected


def test_asterisk_form_is_left_alone() -> None:
    assert plugin(add_prefix="/v1", strip_prefix="/a").rewrite_path("*") == "*"
    assert plugin(replace_path="/h").rewrite_path("*") == "*"


def test_order_is_strip_then_regex_then_add() -> None:
    p = plugin(
        add_prefix="/v2",
        regex=r"^/users/([0-9]+)$",
        replacement=r"/people/\1",
        strip_prefix="/api",
    )
    # The regex sees the stripped path and not the added prefix.
    assert p.rewrite_path("/api/users/7?x=%2F") == "/v2/people/7?x=%2F"
    assert p.rewrite_path("/api") == "/v2/"
    # Not under the prefix: only the regex (no match here) and the add run.
    assert p.rewrite_path("/apiusers/7") == "/v2/apiusers/7"
    # strip_prefix = add_prefix moves nothing; strip then add with another base moves it.
    assert plugin(strip_prefix="/a", add_prefix="/b").rewrite_path("/a/x") == "/b/x"


async def test_harness_records_decisions_and_keeps_host() -> None:
    h, up = Harness(RewritePlugin, config={"strip_prefix": "/api"}), FakeUpstream()
    flow = await h.run(h.make_flow("GET", "http://client.test:8080/api/x?q=1"), up)
    assert up.received[0][0].path == "/x?q=1"
    assert up.received[0][0].headers["host"] == "client.test:8080"  # preserve, the default
    assert flow.decisions == ["rewrite: path /api/x?q=1 -> /x?q=1"]
    # Nothing to do: nothing recorded.
    flow = await h.run(h.make_flow("GET", "http://client.test/other"))
    assert flow.decisions == []


async def test_host_literal() -> None:
    request = await upstream_sees("http://client.test/a", plugin(host="api.internal:8443"))
    assert request.headers.get_all("host") == ["api.internal:8443"]
    assert request.path == "/a"


async def test_host_upstream_when_known() -> None:
    class PickUpstream:
        @sdk.hookimpl
        def trellis_request(self, flow: sdk.Flow) -> None:
            flow.upstream = sdk.Origin("https", "backend.test", 8443)

    h, up = Harness(PickUpstream(), RewritePlugin, config={"host": "upstream"}), FakeUpstream()
    flow = await h.run(h.make_flow("GET", "http://client.test/a"), up)
    assert up.received[0][0].headers["host"] == "backend.test:8443"
    assert flow.decisions == ["rewrite: host -> backend.test:8443"]


async def test_host_upstream_default_port_is_left_out() -> None:
    flow = sdk.testing.make_flow("GET", "http://client.test/a")
    flow.upstream = sdk.Origin("https", "backend.test", 443)
    plugin(host="upstream").trellis_request(flow)
    assert flow.request.headers["host"] == "backend.test"


async def test_host_upstream_not_chosen_yet_keeps_host() -> None:
    # The route's upstream is set by the kernel after trellis_request.
    h, up = Harness(RewritePlugin, config={"host": "upstream"}), FakeUpstream()
    flow = await h.run(h.make_flow("GET", "http://client.test/a"), up)
    assert up.received[0][0].headers["host"] == "client.test"
    assert flow.decisions == ["rewrite: host kept, the upstream is not chosen yet"]


async def test_named_instances_with_different_settings_compose_in_chain_order() -> None:
    first = plugin(strip_prefix="/api", host="one.test")
    second = plugin(add_prefix="/v1", host="two.test")
    h, up = Harness(first, second), FakeUpstream()
    flow = await h.run(h.make_flow("GET", "http://client.test/api/x?q"), up)
    request = up.received[0][0]
    assert request.path == "/v1/x?q"
    assert request.headers.get_all("host") == ["two.test"]
    assert flow.decisions == [
        "rewrite: path /api/x?q -> /x?q",
        "rewrite: host -> one.test",
        "rewrite: path /x?q -> /v1/x?q",
        "rewrite: host -> two.test",
    ]


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({"regex": "*"}, "$.plugins.regex: invalid regular expression '*': nothing to repeat"),
        ({"regex": "(a)", "replacement": r"\2"}, "$.plugins.replacement: invalid replacement"),
        ({"replacement": "/x"}, "$.plugins.replacement: needs 'regex'"),
        ({"strip_prefix": "api"}, "$.plugins.strip_prefix: must start with '/'"),
        ({"add_prefix": "/v1?x=1"}, "$.plugins.add_prefix: must be a path without query"),
        ({"replace_path": "/h#f"}, "$.plugins.replace_path: must be a path without query"),
        (
            {"replace_path": "/h", "strip_prefix": "/a", "add_prefix": "/b"},
            "$.plugins.replace_path: replaces the whole path: cannot be combined with"
            " strip_prefix, add_prefix",
        ),
        ({"host": ""}, "$.plugins.host: must be 'preserve', 'upstream' or a host[:port]"),
        ({"host": "a b"}, "$.plugins.host: must be"),
        ({"host": "a/b"}, "$.plugins.host: must be"),
        ({"host": "a:99999"}, "$.plugins.host: must be"),
        ({"path_regex": "x"}, "$.plugins.path_regex"),  # unknown key
    ],
)
def test_config_errors_name_their_key(config: dict[str, Any], problem: str) -> None:
    with pytest.raises(sdk.ConfigError) as info:
        Harness(RewritePlugin, config=config)
    (got,) = info.value.problems
    assert got.startswith(problem), got


def test_defaults_do_nothing() -> None:
    p = RewritePlugin()
    assert p.config == RewriteConfig(
        strip_prefix="", regex="", replacement="", add_prefix="", replace_path="", host="preserve"
    )
    assert p.rewrite_path("/a/b?c=%2F") == "/a/b?c=%2F"


def test_summary_line_and_hookimpls() -> None:
    doc = RewritePlugin.__doc__ or ""
    assert doc.splitlines()[0] == (
        "Rewrite the request path (strip, regex, add, replace) and the Host field."
    )
    pm = pluggy.PluginManager(sdk.PROJECT)
    pm.add_hookspecs(sdk.hookspecs)
    pm.register(RewritePlugin())


# -- the real kernel ---------------------------------------------------------
async def test_named_instance_in_a_real_proxy(start_proxy: Any, upstream: Any, client: Any) -> None:
    extra = """
plugins = ["rewrite.api"]

[kernel.modules]
rewrite = "plugins.builtin.rewrite:RewritePlugin"

[plugins.rewrite]
host = "upstream.example:8080"

[plugins.rewrite.api]
strip_prefix = "/api"
regex = '^/users/([0-9]+)$'
replacement = '/people/\\1'
add_prefix = "/echo"
"""
    app = await start_proxy(basic_config(upstream.port, extra))
    raw = await client.exchange(
        app.port(),
        b"GET /api/users/42?x=%2F&y HTTP/1.1\r\nHost: client.test\r\nConnection: close\r\n\r\n",
    )
    (response,) = client.parse_responses(raw)
    assert response["status"] == 200
    seen = upstream.requests[-1]
    assert seen["target"] == "/echo/people/42?x=%2F&y"
    headers = dict(seen["headers"])
    # rewrite.api inherits host from [plugins.rewrite] and overrides the path keys.
    assert headers["host"] == "upstream.example:8080"
    # The forwarding fields still say what the client asked for.
    assert headers["x-forwarded-host"] == "client.test"
    assert 'host="client.test"' in headers["forwarded"]
    assert json.loads(response["body"])["target"] == "/echo/people/42?x=%2F&y"


def test_kernel_reports_a_bad_pattern_with_its_full_path(tmp_path: Any) -> None:
    from kernel.config import load_config
    from kernel.generation import build_generation

    path = tmp_path / "trellis.toml"
    path.write_text(
        basic_config(9, 'plugins = ["rewrite.api"]')
        + """
[kernel.modules]
rewrite = "plugins.builtin.rewrite:RewritePlugin"

[plugins.rewrite.api]
regex = "(unclosed"
"""
    )
    loaded = load_config(path, environ={})
    with pytest.raises(sdk.ConfigError) as info:
        build_generation(loaded.settings, modules=loaded.settings.kernel.modules)
    assert any(
        p.startswith("$.plugins.rewrite.api.regex: invalid regular expression '(unclosed'")
        for p in info.value.problems
    ), info.value.problems
