"""RFC 9110 §7.6 forwarding rules, as pure functions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernel.protocol.forwarding import (
    HOP_BY_HOP,
    ForwardingPolicy,
    canonical_length,
    downstream_response_fields,
    strip_hop_by_hop,
    upstream_request_fields,
)

POLICY = ForwardingPolicy.build(via="trellis", x_forwarded=True, forwarded=True, trusted=[])


def test_fixed_hop_by_hop_fields_are_removed() -> None:
    fields = [(name, b"1") for name in sorted(HOP_BY_HOP)] + [(b"x-keep", b"2")]
    assert strip_hop_by_hop(fields) == [(b"x-keep", b"2")]


def test_fields_named_in_connection_are_removed_but_host_is_protected() -> None:
    fields = [
        (b"connection", b"close, X-Secret ,host"),
        (b"x-secret", b"s"),
        (b"host", b"h"),
        (b"content-length", b"0"),
    ]
    assert strip_hop_by_hop(fields) == [(b"host", b"h"), (b"content-length", b"0")]


def test_proxy_authorization_kept_for_plugins_then_never_forwarded() -> None:
    fields = [(b"proxy-authorization", b"Basic x"), (b"host", b"h")]
    kept = strip_hop_by_hop(fields, keep_proxy_auth=True)
    assert (b"proxy-authorization", b"Basic x") in kept
    out = upstream_request_fields(kept, POLICY, client_address="1.2.3.4", scheme="http", host=b"h")
    assert all(n != b"proxy-authorization" for n, _ in out)


def test_expect_is_never_asked_of_the_upstream() -> None:
    """The kernel answers 100-continue itself; the codecs refuse the rest (417)."""
    fields = [
        (b"expect", b"100-Continue"),
        (b"expect", b"100-continue, 100-continue"),
        (b"x", b"1"),
    ]
    out = upstream_request_fields(fields, POLICY, client_address="1.2.3.4", scheme="http", host=b"")
    assert [n for n, _ in out if n == b"expect"] == []
    assert (b"x", b"1") in out


def test_untrusted_client_forwarding_fields_are_replaced() -> None:
    fields = [
        (b"x-forwarded-for", b"6.6.6.6"),
        (b"x-forwarded-proto", b"https"),
        (b"x-forwarded-host", b"evil"),
        (b"forwarded", b"for=6.6.6.6"),
    ]
    out = dict(
        upstream_request_fields(fields, POLICY, client_address="1.2.3.4", scheme="http", host=b"h")
    )
    assert out[b"x-forwarded-for"] == b"1.2.3.4"
    assert out[b"x-forwarded-proto"] == b"http"
    assert out[b"x-forwarded-host"] == b"h"
    assert out[b"forwarded"] == b'for=1.2.3.4;proto=http;host="h"'
    assert out[b"via"] == b"1.1 trellis"


def test_trusted_proxy_values_are_appended_to() -> None:
    policy = ForwardingPolicy.build(
        via="edge", x_forwarded=True, forwarded=True, trusted=["10.0.0.0/8"]
    )
    fields = [(b"x-forwarded-for", b"7.7.7.7"), (b"forwarded", b"for=7.7.7.7"), (b"via", b"1.1 lb")]
    out = dict(
        upstream_request_fields(fields, policy, client_address="10.1.1.1", scheme="http", host=b"h")
    )
    assert out[b"x-forwarded-for"] == b"7.7.7.7, 10.1.1.1"
    assert out[b"forwarded"] == b'for=7.7.7.7, for=10.1.1.1;proto=http;host="h"'
    assert out[b"via"] == b"1.1 lb, 1.1 edge"


@pytest.mark.parametrize(
    ("version", "via"), [(b"1.1", b"1.1 trellis"), (b"2", b"2 trellis"), (b"1.0", b"1.0 trellis")]
)
def test_via_names_the_protocol_the_message_came_in(version: bytes, via: bytes) -> None:
    """RFC 9110 §7.6.3: a request received over HTTP/2 used to say "1.1"."""
    out = dict(
        upstream_request_fields(
            [], POLICY, client_address="1.2.3.4", scheme="http", host=b"h", version=version
        )
    )
    assert out[b"via"] == via
    assert dict(downstream_response_fields([], POLICY, version))[b"via"] == via
    off = ForwardingPolicy.build(via="", x_forwarded=False, forwarded=False, trusted=[])
    assert off.via_for(version) == b""


def test_ipv6_client_is_bracketed_and_quoted_in_forwarded() -> None:
    out = dict(upstream_request_fields([], POLICY, client_address="::1", scheme="http", host=b""))
    assert out[b"forwarded"] == b'for="[::1]";proto=http'


def test_everything_can_be_switched_off() -> None:
    policy = ForwardingPolicy.build(via="", x_forwarded=False, forwarded=False, trusted=[])
    out = upstream_request_fields(
        [(b"a", b"b")], policy, client_address="1.2.3.4", scheme="http", host=b"h"
    )
    assert out == [(b"a", b"b")]


def test_response_gets_via_and_loses_hop_by_hop() -> None:
    fields = [
        (b"connection", b"x-a"),
        (b"x-a", b"1"),
        (b"via", b"1.0 origin"),
        (b"transfer-encoding", b"chunked"),
    ]
    assert downstream_response_fields(fields, POLICY) == [(b"via", b"1.0 origin, 1.1 trellis")]


def test_content_length_goes_on_without_leading_zeros() -> None:
    assert canonical_length(b"0") == b"0"
    assert canonical_length(b"000") == b"0"
    assert canonical_length(b"0012") == b"12"
    request = [(b"host", b"h"), (b"content-length", b"005")]
    out = upstream_request_fields(
        request, POLICY, client_address="1.2.3.4", scheme="http", host=b"h"
    )
    assert (b"content-length", b"5") in out
    response = [(b"content-length", b"0100"), (b"x", b"0100")]
    out = downstream_response_fields(response, POLICY)
    assert out[:2] == [(b"content-length", b"100"), (b"x", b"0100")]


_names = st.sampled_from([b"connection", b"te", b"x-a", b"x-b", b"host", b"upgrade", b"keep-alive"])


@given(st.lists(st.tuples(_names, st.sampled_from([b"x-a", b"x-b", b"close", b"keep-alive"]))))
def test_strip_never_leaves_a_connection_listed_field(fields: list[tuple[bytes, bytes]]) -> None:
    listed = {v.lower() for n, v in fields if n == b"connection"}
    out = strip_hop_by_hop(fields)
    for name, _ in out:
        assert name not in HOP_BY_HOP
        assert name not in listed or name in (b"host", b"content-length")


def test_http2_settings_never_passes_even_unlisted() -> None:
    # An h2c upgrade attempt whose Connection does not name HTTP2-Settings.
    fields = [(b"upgrade", b"h2c"), (b"http2-settings", b"AAMAAABkAAQAoAAAAAIAAAAA"), (b"a", b"1")]
    assert strip_hop_by_hop(fields) == [(b"a", b"1")]


def test_underscore_twins_of_fields_we_set_or_frame_by_are_dropped() -> None:
    """CGI-style upstreams read x_forwarded_for and x-forwarded-for as one
    variable: a client could forge ours, or a Transfer_Encoding."""
    fields = [
        (b"x_forwarded_for", b"6.6.6.6"),
        (b"transfer_encoding", b"chunked"),
        (b"content_length", b"5"),
        (b"x_api_key", b"k"),
        (b"my_header", b"1"),
    ]
    out = upstream_request_fields(fields, POLICY, client_address="1.2.3.4", scheme="http", host=b"")
    names = [n for n, _ in out]
    assert b"x_forwarded_for" not in names
    assert b"transfer_encoding" not in names
    assert b"content_length" not in names
    assert (b"x_api_key", b"k") in out  # other underscores are the client's business
    assert (b"my_header", b"1") in out
    assert dict(out)[b"x-forwarded-for"] == b"1.2.3.4"
