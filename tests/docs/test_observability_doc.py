"""docs/observability.md's dashboard and alert rules use only series a real proxy exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import trio
import yaml
from prometheus_client.parser import text_string_to_metric_families

import sdk
from tests.helpers import client

DOCS = Path(__file__).resolve().parents[2] / "docs"
ALERTS = DOCS / "observability" / "trellis-alerts.yml"
DASHBOARD = DOCS / "observability" / "grafana-dashboard.json"
SERIES = re.compile(r"\btrellis_[a-z_]+\b")


class Broken:
    """Fails (open) on every request, so the plugin-error series has a sample."""

    @sdk.hookimpl
    def trellis_request(self, flow: sdk.Flow) -> None:
        raise RuntimeError("boom")


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    (group,) = doc["groups"]
    rules: list[dict[str, Any]] = group["rules"]
    return rules


def dashboard_exprs() -> list[str]:
    doc = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [t["expr"] for panel in doc["panels"] for t in panel["targets"]]


def test_the_alert_rules_are_well_formed() -> None:
    rules = alert_rules()
    names = [r["alert"] for r in rules]
    assert names == [
        "TrellisDown",
        "TrellisHighErrorRate",
        "TrellisHighLatency",
        "TrellisTargetUnhealthy",
        "TrellisGroupDown",
        "TrellisTrafficLogDrops",
        "TrellisPluginErrors",
    ]
    for rule in rules:
        assert rule["expr"].strip()
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]


def test_the_dashboard_is_well_formed() -> None:
    doc = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids)) >= 10
    assert all(p["targets"] for p in doc["panels"])


async def test_every_series_they_use_is_exposed(
    start_proxy: Any, nursery: trio.Nursery, upstream: Any, tmp_path: Path
) -> None:
    text = f"""
[kernel]
watch_config = false
shutdown_grace_s = 1
plugins = ["metrics", "trafficlog"]

[[listeners]]
bind = "127.0.0.1:0"

[[listeners]]
name = "metrics"
bind = "127.0.0.1:0"

[kernel.policy.broken]
on_error = "fail_open"

[[routes]]
name = "r"
group = "app"
plugins = ["broken"]

[[groups]]
name = "app"
urls = "http://127.0.0.1:{upstream.port}"
[groups.health]
path = "/status/200"
interval_s = 0.05

[plugins.trafficlog]
directory = "{tmp_path}"
flush_interval_s = 0.01
exclude_listeners = ["metrics"]
"""
    app = await start_proxy(text, extra_plugins={"broken": Broken()})
    for _ in range(3):
        await client.exchange(app.port(), b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    raw = b""
    names: set[str] = set()
    with trio.fail_after(10):
        while "trellis_traffic_log_write_duration_seconds_count" not in names or (
            "trellis_health_check_duration_seconds_count" not in names
        ):
            await trio.sleep(0.05)
            raw = await client.exchange(
                app.port("metrics"),
                b"GET /metrics HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n",
            )
            body = client.parse_responses(raw)[0]["body"].decode()
            names = {s.name for f in text_string_to_metric_families(body) for s in f.samples}
    used = set()
    for rule in alert_rules():
        used |= set(SERIES.findall(rule["expr"]))
    for expr in dashboard_exprs():
        used |= set(SERIES.findall(expr))
    assert used
    assert used <= names, sorted(used - names)
