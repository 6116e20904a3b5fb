"""build_record: every field from a flow, options, redaction, the JSON line."""

from __future__ import annotations

import calendar
import json
import time

import sdk
from plugins.builtin.trafficlog.record import (
    FIELDS,
    REDACTED,
    RecordOptions,
    build_record,
    iso_utc,
    json_line,
)
from sdk.testing import make_flow

SECRETS = [
    ("authorization", "Basic c2VjcmV0"),
    ("cookie", "session=s3cr3t"),
    ("proxy-authorization", "Bearer p-s3cr3t"),
]


def finished_flow() -> sdk.Flow:
    flow = make_flow(
        "POST",
        "http://site.test:8080/api/items?token=abc",
        [("user-agent", "curl/8.0"), *SECRETS],
        client=("192.0.2.7", 51000),
    )
    flow.route = "api"
    flow.group = "app"
    flow.target = sdk.Target("app", "b", sdk.Origin("http", "10.0.0.2", 80))
    flow.upstream = sdk.Origin("http", "10.0.0.2", 80)
    flow.generation = 3
    flow.bytes_in, flow.bytes_out = 12, 345
    flow.timings.started_at = calendar.timegm((2026, 11, 22, 7, 47, 55)) + 0.1095
    t0 = flow.timings.request_head
    flow.timings.upstream_connected = t0 + 0.002
    flow.timings.response_head = t0 + 0.0125
    flow.timings.done = t0 + 0.020
    flow.response = sdk.Response.make(201, b"", [("set-cookie", "id=s3cr3t"), ("x-a", "1")])
    flow.record("router: rule 2 -> api")
    flow.record("ratelimit: ok")
    flow.stash[sdk.TRACE] = sdk.TraceContext("ab" * 16, "cd" * 8)
    return flow


def test_every_field() -> None:
    record = build_record(finished_flow(), RecordOptions())
    flow_id = record.pop("id")
    assert isinstance(flow_id, str)
    assert flow_id
    assert record == {
        "ts": "2026-11-22T07:47:55.109Z",
        "client_ip": "192.0.2.7",
        "method": "POST",
        "host": "site.test:8080",
        "path": "/api/items?token=abc",
        "status": 201,
        "route": "api",
        "group": "app",
        "target": "b",
        "upstream": "http://10.0.0.2",
        "duration_ms": 20.0,
        "upstream_ms": 10.5,
        "bytes_in": 12,
        "bytes_out": 345,
        "decisions": ["router: rule 2 -> api", "ratelimit: ok"],
        "error": None,
        "trace_id": "ab" * 16,
        "user_agent": "curl/8.0",
        "generation": 3,
    }
    assert list(build_record(finished_flow(), RecordOptions())) == list(FIELDS[:-2])


def test_no_secret_without_headers_and_redacted_with_them() -> None:
    plain = json_line(build_record(finished_flow(), RecordOptions(redact=frozenset())))
    assert b"s3cr3t" not in plain
    assert b"c2VjcmV0" not in plain
    options = RecordOptions(
        headers=True,
        redact=frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"}),
    )
    record = build_record(finished_flow(), options)
    assert record["request_headers"] == [
        ["host", "site.test:8080"],
        ["user-agent", "curl/8.0"],
        ["authorization", REDACTED],
        ["cookie", REDACTED],
        ["proxy-authorization", REDACTED],
    ]
    assert record["response_headers"] == [["set-cookie", REDACTED], ["x-a", "1"]]
    line = json_line(record)
    assert b"s3cr3t" not in line
    assert b"c2VjcmV0" not in line
    # Configured otherwise: an empty redact list logs the values.
    shown = build_record(finished_flow(), RecordOptions(headers=True))
    assert ["cookie", "session=s3cr3t"] in shown["request_headers"]


def test_options_query_and_decisions() -> None:
    record = build_record(finished_flow(), RecordOptions(query=False, decisions=False))
    assert record["path"] == "/api/items"
    assert record["decisions"] == []


def test_unfinished_and_failed_flows() -> None:
    flow = make_flow("GET", "http://site.test/")
    record = build_record(flow, RecordOptions())
    assert (record["status"], record["duration_ms"], record["upstream_ms"]) == (None, None, None)
    assert (record["route"], record["group"], record["target"], record["upstream"]) == (
        "",
        None,
        None,
        None,
    )
    assert (record["trace_id"], record["user_agent"], record["error"]) == (None, None, None)
    flow.error = sdk.UpstreamConnectError("connect to 10.0.0.9:80 refused")
    flow.response = sdk.Response.make(502)
    record = build_record(flow, RecordOptions())
    assert (record["status"], record["error"]) == (502, "connect to 10.0.0.9:80 refused")
    # A local answer: a response head but no upstream connection.
    flow.timings.response_head = flow.timings.request_head + 0.001
    assert build_record(flow, RecordOptions())["upstream_ms"] is None


def test_iso_utc_and_json_line() -> None:
    now = time.time()
    assert iso_utc(now) == time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + (
        f".{int((now % 1) * 1000):03d}Z"
    )
    assert iso_utc(0.0) == "1970-01-01T00:00:00.000Z"
    record = build_record(finished_flow(), RecordOptions())
    record["path"] = "/\u00e9\n"
    line = json_line(record)
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert json.loads(line) == record
