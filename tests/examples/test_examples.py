"""Every example plugin loads and does what its docstring says, through sdk.testing.Harness.

The awaits_io example talks to a real little trio TCP server on 127.0.0.1.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from pathlib import Path
from typing import Any

import pluggy
import pytest
import trio

import examples.plugins
import sdk
import sdk.hookspecs
from examples.plugins.add_header import RequestIdPlugin
from examples.plugins.awaits_io import TokenCheckConfig, TokenCheckPlugin, bearer_token
from examples.plugins.standby import StandbyPlugin
from examples.plugins.with_config import DenyConfig, DenyPlugin
from sdk.testing import FakeUpstream, Harness


def test_every_example_imports_and_has_a_documented_plugin() -> None:
    names = [m.name for m in pkgutil.iter_modules(examples.plugins.__path__)]
    assert sorted(names) == ["add_header", "awaits_io", "standby", "with_config"]
    for name in names:
        module = importlib.import_module(f"examples.plugins.{name}")
        assert module.__doc__
        plugins = [
            obj
            for attr, obj in vars(module).items()
            if attr.endswith("Plugin") and isinstance(obj, type)
        ]
        assert len(plugins) == 1, name
        assert plugins[0].__doc__, name


def test_hookimpls_match_the_specs() -> None:
    pm = pluggy.PluginManager(sdk.PROJECT)
    pm.add_hookspecs(sdk.hookspecs)
    pm.register(RequestIdPlugin())
    pm.register(DenyPlugin(DenyConfig()))
    pm.register(TokenCheckPlugin(TokenCheckConfig(port=1)))
    pm.register(StandbyPlugin())


# -- add_header ------------------------------------------------------------------------
async def test_request_id_added_to_request_and_response() -> None:
    h, up = Harness(RequestIdPlugin()), FakeUpstream()
    flow = await h.run(h.make_flow(), up)
    assert up.received[0][0].headers["x-request-id"] == flow.id
    assert flow.response is not None
    assert flow.response.headers["x-request-id"] == flow.id


async def test_request_id_from_the_client_is_kept_and_echoed() -> None:
    h, up = Harness(RequestIdPlugin()), FakeUpstream()
    flow = await h.run(h.make_flow("GET", "http://h.test/", [("X-Request-Id", "abc")]), up)
    assert up.received[0][0].headers.get_all("x-request-id") == ["abc"]
    assert flow.response is not None
    assert flow.response.headers["x-request-id"] == "abc"


async def test_request_id_from_the_upstream_response_is_kept() -> None:
    h = Harness(RequestIdPlugin())
    upstream = FakeUpstream(sdk.Response.make(200, "x", [("x-request-id", "upstream-1")]))
    flow = await h.run(h.make_flow(), upstream)
    assert flow.response is not None
    assert flow.response.headers.get_all("x-request-id") == ["upstream-1"]


# -- with_config -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "denied"),
    [
        ("/admin", True),
        ("/admin/", True),
        ("/admin/users", True),
        ("/admin?x=1", True),
        ("/.git/config", True),
        ("/administrator", False),
        ("/", False),
        ("/public/admin", False),
    ],
)
async def test_deny(path: str, denied: bool) -> None:
    h, up = Harness(DenyPlugin, config={"prefixes": ["/admin/", "/.git"]}), FakeUpstream()
    flow = await h.run(h.make_flow("GET", "http://h.test" + path), up)
    assert flow.response is not None
    assert flow.response.status_code == (403 if denied else 200)
    assert len(up.received) == (0 if denied else 1)
    if denied:
        assert flow.response.body == b"forbidden\n"
        assert flow.decisions == [f"deny: {path.partition('?')[0]}"]


async def test_deny_status_and_message_are_configurable() -> None:
    h = Harness(DenyPlugin, config={"prefixes": ["/x"], "status": 404, "message": "nope"})
    flow = await h.run(h.make_flow("GET", "http://h.test/x"))
    assert flow.response is not None
    assert flow.response.status_code == 404
    assert flow.response.body == b"nope"


def test_deny_config_errors_have_paths() -> None:
    with pytest.raises(sdk.ConfigError) as info:
        sdk.structure(
            {"prefixes": ["admin", 5, "/ok", "etc"], "status": 200, "extra": 1},
            DenyConfig,
            path="$.plugins.deny",
        )
    assert info.value.problems == [
        "$.plugins.deny.prefixes[0]: must start with '/', got 'admin'",
        "$.plugins.deny.prefixes[1]: must be a string, got 5",
        "$.plugins.deny.prefixes[3]: must start with '/', got 'etc'",
        "$.plugins.deny.status: 'status' must be >= 400: 200",
        "$.plugins.deny.extra: unknown key (known: prefixes, status, message)",
    ]


# -- awaits_io ---------------------------------------------------------------------------
class TokenService:
    """A tiny token service: reads one line, answers ok/no (or garbage, or never)."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []

    async def handle(self, stream: trio.SocketStream) -> None:
        data = b""
        while b"\n" not in data:
            chunk = await stream.receive_some(100)
            if not chunk:
                return
            data += chunk
        token = data.partition(b"\n")[0]
        self.seen.append(token)
        if token == b"slow":
            await trio.sleep_forever()
        await stream.send_all({b"good": b"ok\n", b"bad": b"no\n"}.get(token, b"what?\n"))

    async def start(self, nursery: trio.Nursery) -> int:
        serve = functools.partial(trio.serve_tcp, self.handle, 0, host="127.0.0.1")
        listeners: list[trio.SocketListener] = await nursery.start(serve)
        port: int = listeners[0].socket.getsockname()[1]
        return port


async def _access(plugin: TokenCheckPlugin, authorization: str | None) -> sdk.Flow:
    headers = [("authorization", authorization)] if authorization is not None else []
    h = Harness(plugin)
    return await h.run(h.make_flow("GET", "http://h.test/", headers))


@pytest.mark.parametrize(
    ("token", "status", "decision"),
    [("good", 200, "tokens: ok"), ("bad", 403, "tokens: no"), ("odd", 503, "tokens: what?")],
)
async def test_token_service_answers(
    nursery: trio.Nursery, token: str, status: int, decision: str
) -> None:
    service = TokenService()
    port = await service.start(nursery)
    plugin = TokenCheckPlugin(TokenCheckConfig(port=port))
    flow = await _access(plugin, f"Bearer {token}")
    assert flow.response is not None
    assert flow.response.status_code == status
    assert flow.decisions == [decision]
    assert service.seen == [token.encode()]


@pytest.mark.parametrize("authorization", [None, "Basic abc", "Bearer", "Bearer a b"])
async def test_missing_token_is_401_without_asking(
    nursery: trio.Nursery, authorization: str | None
) -> None:
    service = TokenService()
    plugin = TokenCheckPlugin(TokenCheckConfig(port=await service.start(nursery)))
    flow = await _access(plugin, authorization)
    assert flow.response is not None
    assert flow.response.status_code == 401
    assert flow.response.headers["www-authenticate"] == "Bearer"
    assert service.seen == []


async def test_slow_service_hits_the_plugin_timeout(nursery: trio.Nursery) -> None:
    service = TokenService()
    plugin = TokenCheckPlugin(TokenCheckConfig(port=await service.start(nursery), timeout_s=0.05))
    flow = await _access(plugin, "Bearer slow")
    assert flow.response is not None
    assert flow.response.status_code == 503
    assert flow.decisions == ["tokens: no answer"]


async def test_unreachable_service_is_503() -> None:
    # A port nobody listens on: bind one, note it, close it.
    sock = trio.socket.socket()
    await sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    plugin = TokenCheckPlugin(TokenCheckConfig(port=port))
    flow = await _access(plugin, "Bearer good")
    assert flow.response is not None
    assert flow.response.status_code == 503


def test_bearer_token_parsing() -> None:
    def token(value: str) -> str | None:
        return bearer_token(Harness.make_flow("GET", "http://h/", [("authorization", value)]))

    assert token("Bearer abc") == "abc"
    assert token("bearer  abc ") == "abc"
    assert token("Bearer a b") is None
    assert token("Token abc") is None


def test_token_config_requires_a_port() -> None:
    with pytest.raises(sdk.ConfigError) as info:
        sdk.structure({"timeout_s": 0}, TokenCheckConfig, path="$.plugins.tokens")
    assert info.value.problems == [
        "$.plugins.tokens.port: required",
        "$.plugins.tokens.timeout_s: 'timeout_s' must be > 0: 0.0",
    ]


async def test_examples_run_in_the_real_kernel_as_the_readme_says(
    nursery: trio.Nursery, start_proxy: Any, upstream: Any, client: Any
) -> None:
    """The examples/README.md configuration, loaded by the kernel over sockets."""
    service = TokenService()
    token_port = await service.start(nursery)
    readme = (Path(__file__).resolve().parents[2] / "examples" / "README.md").read_text()
    block = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    cfg = (
        block.replace("http://127.0.0.1:9000", f"http://127.0.0.1:{upstream.port}")
        .replace("port = 7001", f"port = {token_port}")
        .replace("[kernel]\n", "[kernel]\nwatch_config = false\n", 1)
        + '\n[[listeners]]\nbind = "127.0.0.1:0"\n'
    )
    app = await start_proxy(cfg)

    async def get(path: str, token: str | None = None) -> dict[str, Any]:
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        raw = await client.exchange(
            app.port(),
            f"GET {path} HTTP/1.1\r\nHost: a\r\n{auth}Connection: close\r\n\r\n".encode(),
        )
        return dict(client.parse_responses(raw)[0])

    denied = await get("/admin/users", "good")
    assert denied["status"] == 403
    assert "x-request-id" in denied["headers"]
    assert (await get("/data"))["status"] == 401
    assert (await get("/data", "bad"))["status"] == 403
    ok = await get("/echo", "good")
    assert ok["status"] == 200
    seen = dict(upstream.requests[-1]["headers"])
    assert seen["x-request-id"] == ok["headers"]["x-request-id"]
    assert [r["target"] for r in upstream.requests] == ["/echo"]


# -- standby -----------------------------------------------------------------------------
def test_standby_picks_the_first_candidate() -> None:
    origin = sdk.Origin("http", "h", 80)
    targets = tuple(
        sdk.Target(group="g", name=n, origin=origin, index=i) for i, n in enumerate("ab")
    )
    balancer = StandbyPlugin().trellis_balancer(sdk.Group("g", targets))
    flow = Harness.make_flow()
    assert balancer.pick(flow, targets) is targets[0]
    assert balancer.pick(flow, targets[1:]) is targets[1]  # the primary is down or tried


async def test_standby_takes_over_in_the_real_kernel(
    start_proxy: Any, client: Any, nursery: trio.Nursery
) -> None:
    from tests.helpers.upstream import Upstream

    primary = await nursery.start(Upstream().serve)
    standby = await nursery.start(Upstream().serve)
    text = f"""
[kernel]
watch_config = false
shutdown_grace_s = 1
[kernel.modules]
standby = "examples.plugins.standby:StandbyPlugin"
[[listeners]]
bind = "127.0.0.1:0"
[[routes]]
name = "r"
group = "g"
[[groups]]
name = "g"
strategy = "standby"
urls = "http://127.0.0.1:{primary.port} http://127.0.0.1:{standby.port}"
"""
    app = await start_proxy(text)

    async def get() -> int:
        raw = await client.exchange(app.port(), b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        status: int = client.parse_responses(raw)[0]["status"]
        return status

    for _ in range(5):
        assert await get() == 200
    assert (len(primary.requests), len(standby.requests)) == (5, 0)
    group = app.generation.groups["g"]
    group.set_health(group.targets[0], False, "test: primary down")
    for _ in range(3):
        assert await get() == 200
    assert (len(primary.requests), len(standby.requests)) == (5, 3)
