"""trellis_metrics_register: another plugin's series, through the hook, in /metrics."""

from __future__ import annotations

import logging
from typing import Any

import pluggy

import sdk
from plugins.builtin.metrics import MetricsConfig, MetricsPlugin, Store
from plugins.builtin.metrics import hookspecs as metrics_hookspecs
from sdk.testing import Harness
from tests.helpers.upstream import Upstream
from tests.plugins.builtin.metrics.support import parse, request, scrape, startup_context, value


class CachePlugin:
    """A stand-in third-party plugin: counts requests per configured cache name."""

    def __init__(self) -> None:
        self.hits: Any = None
        self.calls = 0

    @sdk.hookimpl(optionalhook=True)
    def trellis_metrics_register(self, metrics: Any) -> None:
        self.calls += 1
        self.hits = metrics.counter("cache_hits_total", "Cache hits.", ["cache"])

    @sdk.hookimpl
    def trellis_request(self, flow: sdk.Flow) -> None:
        if self.hits is not None:  # None without the metrics plugin
            self.hits.labels("main").inc()


class Broken:
    @sdk.hookimpl(optionalhook=True)
    def trellis_metrics_register(self) -> None:
        raise RuntimeError("cannot register")


def test_the_spec_module() -> None:
    pm = pluggy.PluginManager(sdk.PROJECT)
    pm.add_hookspecs(metrics_hookspecs)
    assert pm.hook.trellis_metrics_register.spec is not None
    assert pm.hook.trellis_metrics_register.spec.argnames == ("metrics",)
    pm.register(CachePlugin())  # the example's signature validates


def test_a_registrant_loads_without_the_metrics_plugin() -> None:
    # optionalhook: no spec for the hook, and the plugin still validates.
    h = Harness(CachePlugin())
    assert h.pm.hook.trellis_metrics_register.spec is None


async def test_registration_through_the_harness(fresh_store: Store, caplog: Any) -> None:
    cache = CachePlugin()
    metrics = MetricsPlugin(MetricsConfig(prefix="x_"), fresh_store)
    h = Harness(Broken(), cache, metrics)  # the metrics plugin registered last
    with caplog.at_level(logging.ERROR, "trellis.plugins.metrics"):
        await h.call("trellis_startup", startup_context())
    assert "failed in trellis_metrics_register" in caplog.text
    assert cache.calls == 1  # the broken one did not stop the others
    await h.run(h.make_flow())
    await h.run(h.make_flow())
    s = parse(fresh_store.render()[0].decode())
    assert value(s, "x_cache_hits_total", cache="main") == 2
    # A second metrics instance on the same manager adds no second spec.
    metrics.trellis_addhooks(h.pm)


async def test_a_registered_counter_shows_up_in_metrics(
    start_proxy: Any, upstream: Upstream
) -> None:
    cache = CachePlugin()
    app = await start_proxy(
        f"""
[kernel]
watch_config = false
shutdown_grace_s = 2
plugins = ["cache", "metrics"]

[[listeners]]
name = "main"
bind = "127.0.0.1:0"

[[listeners]]
name = "metrics"
bind = "127.0.0.2:0"

[[routes]]
name = "app"
upstream = "http://127.0.0.1:{upstream.port}"
""",
        extra_plugins={"cache": cache},
    )
    for _ in range(3):
        assert (await request(app.port("main"), "GET", "/")).get("status") == 200
    s = await scrape(("127.0.0.2", app.port("metrics")))
    assert value(s, "trellis_cache_hits_total", cache="main") == 3
    assert value(s, "trellis_requests_total", route="app", method="GET", status_class="2xx") == 3
    # A reload registers again, into the same counter: it carries on.
    app.config_path.write_text(app.config_path.read_text())
    assert await app.reload("test")
    assert cache.calls == 2
    await request(app.port("main"), "GET", "/")
    s = await scrape(("127.0.0.2", app.port("metrics")))
    assert value(s, "trellis_cache_hits_total", cache="main") == 4


def test_hook_name_is_in_the_trellis_namespace() -> None:
    assert metrics_hookspecs.trellis_metrics_register.__name__.startswith(sdk.HOOK_PREFIX)
