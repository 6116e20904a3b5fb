"""HTTP/2 <-> HTTP/1.1 field translation, as pure functions.

The wire-level refusal matrix (each case through a real h2 client) is in
``test_h2_server.py``; these pin the translation details and the sending side.
"""

from __future__ import annotations

import pytest
from hpack import NeverIndexedHeaderTuple

from kernel.protocol.events import RequestHead
from kernel.protocol.h2_fields import (
    check_trailers,
    content_length,
    header_list_size,
    request_fields,
    request_from_h2,
    response_fields,
    response_from_h2,
    salvage_request_head,
    sent_length,
    trailer_fields,
)
from kernel.protocol.http1 import GOOD_NAMES, GOOD_VALUES, remember
from sdk._errors import LocalProtocolError, RemoteProtocolError

GET = [
    (b":method", b"GET"),
    (b":scheme", b"https"),
    (b":authority", b"a.example"),
    (b":path", b"/"),
]
BIG = 65536


def parse(fields: list[tuple[bytes, bytes]], end_stream: bool = True) -> RequestHead:
    return request_from_h2(fields, end_stream=end_stream, max_list_size=BIG).head


def refused(fields: list[tuple[bytes, bytes]], end_stream: bool = True) -> int:
    with pytest.raises(RemoteProtocolError) as exc:
        request_from_h2(fields, end_stream=end_stream, max_list_size=BIG)
    return exc.value.status_hint


def test_request_head_host_first_cookies_joined() -> None:
    fields = [
        *GET,
        (b"cookie", b"a=1"),
        (b"accept", b"*/*"),
        (b"host", b"a.example"),
        (b"cookie", b"b=2"),
    ]
    parsed = request_from_h2(fields, end_stream=True, max_list_size=BIG)
    assert (parsed.scheme, parsed.authority, parsed.content_length) == (
        b"https",
        b"a.example",
        None,
    )
    assert parsed.head == RequestHead(
        b"GET",
        b"/",
        [(b"host", b"a.example"), (b"cookie", b"a=1; b=2"), (b"accept", b"*/*")],
        http_version=b"2",
        keep_alive=True,
    )


def test_host_alone_stands_for_authority_and_ipv6_is_checked() -> None:
    head = parse([GET[0], GET[1], GET[3], (b"host", b"[::1]:8080")])
    assert head.headers == [(b"host", b"[::1]:8080")]
    assert refused([GET[0], GET[1], GET[3], (b"host", b"[::g]")]) == 400


def test_host_must_name_the_authority_in_any_case() -> None:
    assert parse([*GET, (b"host", b"A.Example")]).headers[0] == (b"host", b"a.example")
    assert refused([*GET, (b"host", b"b.example")]) == 400


def test_expect_continue_and_content_length() -> None:
    fields = [*GET, (b"content-length", b"10"), (b"expect", b"100-Continue")]
    parsed = request_from_h2(fields, end_stream=False, max_list_size=BIG)
    assert parsed.head.expect_continue
    assert parsed.content_length == 10
    # Without a body to wait for, there is nothing to continue.
    assert not parse([*GET, (b"expect", b"100-continue")]).expect_continue
    assert parse([*GET, (b"content-length", b"0")]).headers[-1] == (b"content-length", b"0")
    for bad in (b"-1", b"1,1", b"0x1", b"", b"1" * 19):
        assert refused([*GET, (b"content-length", bad)], end_stream=False) == 400


def test_other_expectations_are_refused_with_417_after_any_400() -> None:
    assert refused([*GET, (b"expect", b"fancy")]) == 417
    assert refused([*GET, (b"expect", b"100-continue, fancy")], end_stream=False) == 417
    both = [*GET, (b"expect", b"fancy"), (b"content-length", b"x")]
    assert refused(both, end_stream=False) == 400


def test_te_trailers_is_the_only_te() -> None:
    assert parse([*GET, (b"te", b"trailers")]).headers[-1] == (b"te", b"trailers")
    assert refused([*GET, (b"te", b"Trailers")]) == 400


def test_limit_and_status_hints() -> None:
    fields = [*GET, (b"x", b"v" * 100)]
    assert request_from_h2(fields, end_stream=True, max_list_size=header_list_size(fields))
    with pytest.raises(RemoteProtocolError) as exc:
        request_from_h2(fields, end_stream=True, max_list_size=header_list_size(fields) - 1)
    assert exc.value.status_hint == 431
    assert refused([(b":method", b"CONNECT"), (b":authority", b"a:1")]) == 501
    assert parse([(b":method", b"get"), *GET[1:]]).method == b"get"


def test_header_list_size_is_rfc_9113() -> None:
    assert header_list_size([(b"ab", b"cde")]) == 37
    assert header_list_size([]) == 0


def test_response_translation() -> None:
    status, fields, length = response_from_h2(
        [(b":status", b"404"), (b"content-length", b"3"), (b"x", b"y")], max_list_size=BIG
    )
    assert (status, fields, length) == (404, [(b"content-length", b"3"), (b"x", b"y")], 3)
    assert response_from_h2([(b":status", b"103")], max_list_size=BIG)[0] == 103
    for bad in (
        [(b":status", b"600")],
        [(b":status", b"2000")],
        [(b":status", b"101")],
        [(b":status", b"200"), (b"x", b" y")],
        [(b":status", b"200"), (b"X", b"y")],
        [(b":status", b"200"), (b"upgrade", b"y")],
    ):
        with pytest.raises(RemoteProtocolError) as exc:
            response_from_h2(bad, max_list_size=BIG)
        assert exc.value.status_hint == 502


def test_response_trailers_leave_forbidden_fields_out() -> None:
    got = check_trailers(
        [(b"x-sum", b"1"), (b"content-length", b"9"), (b"set-cookie", b"a=1")],
        max_list_size=BIG,
        drop=True,
    )
    assert got == [(b"x-sum", b"1")]
    with pytest.raises(RemoteProtocolError):
        check_trailers([(b"x", b"\x00")], max_list_size=BIG, drop=True)


def test_received_trailers() -> None:
    assert check_trailers([(b"x-sum", b"1")], max_list_size=BIG) == [(b"x-sum", b"1")]
    for bad in ([(b":status", b"200")], [(b"content-length", b"1")], [(b"host", b"a")]):
        with pytest.raises(RemoteProtocolError):
            check_trailers(bad, max_list_size=BIG)


def test_response_fields_to_send() -> None:
    fields = [
        (b"Content-Type", b"text/html "),
        (b"Connection", b"close"),
        (b"keep-alive", b"1"),
        (b"Transfer-Encoding", b"chunked"),
        (b"upgrade", b"x"),
        (b"proxy-connection", b"x"),
        (b"te", b"trailers"),
        (b":path", b"/sneaky"),
    ]
    assert response_fields(200, fields) == [(b":status", b"200"), (b"content-type", b"text/html")]
    for status in (101, 99, 600):
        with pytest.raises(LocalProtocolError):
            response_fields(status, [])
    for bad in ([(b"x", b"a\r\nb: c")], [(b"x", b"a\x00")], [(b"a b", b"1")]):
        with pytest.raises(LocalProtocolError):
            response_fields(200, bad)


@pytest.mark.parametrize(("status", "kept"), [(103, False), (204, False), (200, True), (304, True)])
def test_no_content_length_on_1xx_and_204(status: int, kept: bool) -> None:
    """A 204 from the upstream with content-length: 5 went out as is, and curl
    and nghttp2 reset the stream (RFC 9110 §8.6; 304 may say its length)."""
    sent = response_fields(status, [(b"Content-Length", b"5"), (b"x", b"1")])
    assert ((b"content-length", b"5") in sent) is kept
    assert (b"x", b"1") in sent


def test_credentials_are_sent_never_indexed() -> None:
    """Authorization and short cookies stay out of HPACK's tables (RFC 7541 §7.1.3)."""
    fields = [
        (b"Authorization", b"Basic dTpw"),
        (b"proxy-authorization", b"Basic dTpw"),
        (b"cookie", b"sid=1"),
        (b"cookie", b"long=" + b"x" * 20),
        (b"x-other", b"1"),
    ]
    sent = response_fields(200, fields)[1:]
    assert sent == [(n.lower(), v) for n, v in fields]
    assert [isinstance(f, NeverIndexedHeaderTuple) for f in sent] == [
        True, True, True, False, False,
    ]  # fmt: skip
    head = RequestHead(b"GET", b"/", [(b"host", b"a"), (b"authorization", b"Bearer t")])
    assert isinstance(request_fields(head, b"https", b"a")[-1], NeverIndexedHeaderTuple)
    # Credentials never travel in trailers (RFC 9110 §6.5.1): left out.
    assert trailer_fields([(b"authorization", b"t"), (b"grpc-status", b"0")]) == [
        (b"grpc-status", b"0")
    ]


def test_request_fields_to_send() -> None:
    head = RequestHead(
        b"POST",
        b"https://other.example/p?q=1",
        [(b"Host", b"other.example"), (b"TE", b"gzip"), (b"content-length", b"2")],
    )
    assert request_fields(head, b"https", b"a.example") == [
        (b":method", b"POST"),
        (b":scheme", b"https"),
        (b":authority", b"a.example"),
        (b":path", b"/p?q=1"),
        (b"content-length", b"2"),
    ]
    star = RequestHead(b"OPTIONS", b"*", [])
    assert request_fields(star, b"http", b"a")[3] == (b":path", b"*")
    bare = RequestHead(b"GET", b"http://a.example", [])
    assert request_fields(bare, b"http", b"a")[3] == (b":path", b"/")
    query = RequestHead(b"GET", b"http://a.example?x", [])
    assert request_fields(query, b"http", b"a")[3] == (b":path", b"/?x")


def test_trailers_and_lengths_to_send() -> None:
    assert trailer_fields([(b"X-A", b"1"), (b"content-length", b"3"), (b"host", b"h")]) == [
        (b"x-a", b"1")
    ]
    assert sent_length([(b"content-length", b"12")]) == 12
    assert sent_length([(b"content-length", b"1"), (b"content-length", b"1")]) == 1
    assert sent_length([]) is None
    for bad in (
        [(b"content-length", b"1"), (b"content-length", b"2")],
        [(b"content-length", b"x")],
    ):
        with pytest.raises(LocalProtocolError):
            sent_length(bad)


def test_content_length_is_one_number() -> None:
    assert content_length(b"42", 1, 400) == 42
    with pytest.raises(RemoteProtocolError):
        content_length(b"42", 2, 400)


def test_known_good_fields_do_not_open_a_door() -> None:
    """The memory of good names and values (shared with HTTP/1.1) skips only
    the regexes: what differs from a remembered field is still checked."""
    ua = (b"user-agent", b"known-good-agent/1")
    assert (b"user-agent", b"known-good-agent/1") in parse([*GET, ua]).headers
    assert b"user-agent" in GOOD_NAMES
    assert b"known-good-agent/1" in GOOD_VALUES
    assert refused([*GET, (b"User-Agent", b"known-good-agent/1")]) == 400  # upper case
    assert refused([*GET, (b"user-agent", b"known-good-agent/1 ")]) == 400  # trailing space
    # A good name and a good value are still refused as connection-specific.
    for name in (b"connection", b"upgrade"):
        remember(GOOD_NAMES, name)
    assert refused([*GET, (b"connection", b"known-good-agent/1")]) == 400


def test_sending_normalises_what_is_not_known_yet() -> None:
    name, value = b"X-Not-Seen-Before-H2", b"  padded value\t"
    assert name.lower() not in GOOD_NAMES
    sent = response_fields(200, [(name, value)])
    assert sent == [(b":status", b"200"), (b"x-not-seen-before-h2", b"padded value")]
    assert b"x-not-seen-before-h2" in GOOD_NAMES
    assert b"padded value" in GOOD_VALUES
    # Known now, and still dropped where the caller drops it.
    assert response_fields(200, [(b"x-not-seen-before-h2", b"padded value")]) == sent
    remember(GOOD_NAMES, b"transfer-encoding")
    assert response_fields(200, [(b"transfer-encoding", b"chunked")]) == [(b":status", b"200")]
    with pytest.raises(LocalProtocolError):
        response_fields(200, [(b"x-not-seen-before-h2", b"bad\x00value")])


@pytest.mark.parametrize(
    ("fields", "told"),
    [
        (
            [(b":method", b"GET"), (b":path", b"/a"), (b":authority", b"h:1"), (b"X", b"1")],
            (b"GET", b"/a", [(b"host", b"h:1")]),
        ),
        ([(b":method", b"G T"), (b":path", b"/a b"), (b":authority", b"a b")], (b"", b"", [])),
        ([(b":method", b"OPTIONS"), (b":path", b"*")], (b"OPTIONS", b"*", [])),
        # Nothing after the first regular field is looked at.
        ([(b"x", b"1"), (b":method", b"GET")], (b"", b"", [])),
        ([], (b"", b"", [])),
    ],
)
def test_salvage_tells_only_the_valid_pseudo_headers(
    fields: list[tuple[bytes, bytes]], told: tuple[bytes, bytes, list[tuple[bytes, bytes]]]
) -> None:
    head = salvage_request_head(fields)
    assert (head.method, head.target, head.headers) == told
    assert head.http_version == b"2"
