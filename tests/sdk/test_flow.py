"""sdk._flow: Flow, ClientInfo, Timings and flow ids."""

from __future__ import annotations

import re

import sdk
from sdk._flow import new_flow_id
from sdk.testing import make_flow, make_request


def _flow() -> sdk.Flow:
    return sdk.Flow(
        id="f-1",
        request=make_request("GET", "http://example.test/x"),
        client=sdk.ClientInfo(address="::1", port=5555, listener="main"),
    )


def test_defaults() -> None:
    flow = _flow()
    assert flow.route == ""
    assert flow.upstream is None
    assert flow.response is None
    assert flow.error is None
    assert flow.decisions == []
    assert (flow.bytes_in, flow.bytes_out, flow.generation) == (0, 0, 0)
    assert len(flow.stash) == 0
    assert flow.timings.done is None
    assert flow.client.tls is False
    assert flow.client.connection_id == 0


def test_mutable_defaults_are_per_flow() -> None:
    a, b = _flow(), _flow()
    a.record("x")
    a.stash[sdk.AUTH_USER] = "alice"
    a.timings.done = 1.0
    assert b.decisions == []
    assert sdk.AUTH_USER not in b.stash
    assert b.timings.done is None


def test_record_appends_decisions_in_order() -> None:
    flow = _flow()
    flow.record("router: rule 2 -> api")
    flow.record("auth: alice")
    assert flow.decisions == ["router: rule 2 -> api", "auth: alice"]


def test_flows_compare_by_identity() -> None:
    a, b = _flow(), _flow()
    assert a != b
    by_flow = {a: "a"}  # identity-hashed: usable as a key (e.g. in weak maps)
    assert by_flow[a] == "a"
    assert b not in by_flow


def test_plugins_mutate_the_flow_in_place() -> None:
    flow = _flow()
    flow.request.headers["x-a"] = "1"
    flow.upstream = sdk.Origin("http", "up.test", 8080)
    flow.response = sdk.Response.make(204)
    assert flow.request.headers["x-a"] == "1"
    assert flow.upstream.authority == "up.test:8080"
    assert flow.response.status_code == 204


def test_timings_duration() -> None:
    t = sdk.Timings(started_at=1_700_000_000.0, request_head=100.0)
    assert t.duration is None
    t.upstream_connected = 100.1
    t.response_head = 100.2
    assert t.duration is None
    t.done = 100.5
    assert t.duration == 0.5


def test_new_flow_id_is_unique_and_shaped() -> None:
    ids = [new_flow_id() for _ in range(10_000)]
    assert len(set(ids)) == 10_000
    prefixes = {i.split("-")[0] for i in ids}
    assert len(prefixes) == 1  # one process, one prefix
    assert all(re.fullmatch(r"[0-9a-f]{6}-[0-9a-f]{8,}", i) for i in ids)
    counters = [int(i.split("-")[1], 16) for i in ids]
    assert counters == sorted(counters)  # increasing within the process


def test_testing_make_flow_uses_new_ids() -> None:
    a, b = make_flow(), make_flow()
    assert a.id != b.id
    assert a.client == a.client
    assert a.client.listener == "main"


def test_public_classes_are_final() -> None:
    for cls in (sdk.Flow, sdk.ClientInfo, sdk.Timings):
        assert getattr(cls, "__final__", False) is True, cls


def test_client_info_tls_fields_default_to_cleartext() -> None:
    info = sdk.ClientInfo(address="::1", port=1, listener="main")
    assert (info.tls, info.tls_version, info.alpn, info.sni) == (False, "", "", "")
    assert info.client_cert_subject is None
    tls = sdk.ClientInfo(
        address="::1",
        port=1,
        listener="edge",
        tls=True,
        tls_version="TLSv1.3",
        alpn="h2",
        sni="www.example.com",
        client_cert_subject="CN=alice,O=Example",
    )
    assert tls.client_cert_subject == "CN=alice,O=Example"
