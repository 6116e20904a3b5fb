"""sdk._http: Headers, Origin, Request, Response."""

from __future__ import annotations

import re
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

import sdk
from sdk import Headers, LocalProtocolError, Origin, Request, Response

# ---------------------------------------------------------------------------
# Headers: reading
# ---------------------------------------------------------------------------


def _sample() -> Headers:
    return Headers(
        [
            ("Host", "example.test"),
            ("Accept", "text/html"),
            ("X-Tag", "a"),
            ("accept", "application/json"),
            ("X-TAG", "b, c"),
        ]
    )


def test_names_are_case_insensitive_and_stored_lower_case() -> None:
    h = _sample()
    assert h["host"] == h["HOST"] == h[b"Host"] == "example.test"
    assert h.fields[0] == (b"host", b"example.test")
    assert all(n == n.lower() for n, _ in h.fields)


def test_order_and_duplicates_are_kept() -> None:
    h = _sample()
    assert len(h) == 5
    assert list(h.items()) == [
        ("host", "example.test"),
        ("accept", "text/html"),
        ("x-tag", "a"),
        ("accept", "application/json"),
        ("x-tag", "b, c"),
    ]


def test_getitem_and_get_return_the_first_value() -> None:
    h = _sample()
    assert h["Accept"] == "text/html"
    assert h.get("accept") == "text/html"
    assert h.get("missing") is None
    assert h.get("missing", "dflt") == "dflt"
    with pytest.raises(KeyError):
        h["missing"]


def test_get_all_and_get_list() -> None:
    h = _sample()
    assert h.get_all("ACCEPT") == ["text/html", "application/json"]
    assert h.get_all("missing") == []
    # get_list splits comma-separated elements and drops empty ones (RFC 9110 §5.6.1).
    assert h.get_list("x-tag") == ["a", "b", "c"]
    assert Headers([("Cache-Control", " no-cache ,, max-age=0 , ")]).get_list("cache-control") == [
        "no-cache",
        "max-age=0",
    ]
    assert h.get_list("missing") == []


def test_contains() -> None:
    h = _sample()
    assert "x-tag" in h
    assert "X-Tag" in h
    assert b"HOST" in h
    assert "missing" not in h
    assert 42 not in h
    assert None not in h


def test_iteration_gives_distinct_names_in_first_appearance_order() -> None:
    assert list(_sample()) == ["host", "accept", "x-tag"]
    assert list(Headers()) == []


def test_a_loop_that_adds_ends() -> None:
    h = _sample()
    for turns, (name, value) in enumerate(h.items()):
        assert turns < len(_sample())  # the old code visited every add: it never ended
        h.add(name, value)
    for turns, name in enumerate(h):
        assert turns < 3
        h.add("x-" + name, "1")
    assert len(h) == 2 * len(_sample()) + 3


def test_items_walks_the_fields_as_they_were_when_the_loop_began() -> None:
    h = _sample()
    seen = []
    for name, value in h.items():  # used to never end: each add was visited in turn
        seen.append(name)
        h.add("x-copy-" + name, value)
        if name == "accept":
            h["host"] = "other.test"  # a replacing change mid-loop: not seen either
    assert seen == ["host", "accept", "x-tag", "accept", "x-tag"]
    assert list(h.items()) == [
        ("host", "other.test"),
        ("accept", "text/html"),
        ("x-tag", "a"),
        ("accept", "application/json"),
        ("x-tag", "b, c"),
        ("x-copy-host", "example.test"),
        ("x-copy-accept", "text/html"),
        ("x-copy-x-tag", "a"),
        ("x-copy-accept", "application/json"),
        ("x-copy-x-tag", "b, c"),
    ]


def test_names_walk_the_fields_as_they_were_when_the_loop_began() -> None:
    h = _sample()
    seen = []
    for name in h:  # used to never end: each new name was visited in turn
        seen.append(name)
        h.add("x-seen-" + name, "1")
        h.remove("x-tag")  # removed after the loop began: still walked
    assert seen == ["host", "accept", "x-tag"]
    assert list(h) == ["host", "accept", "x-seen-host", "x-seen-accept", "x-seen-x-tag"]


def test_names_that_cannot_be_encoded_are_simply_absent() -> None:
    h = _sample()
    assert h.get("h\u20acst") is None
    assert "h\u20acst" not in h
    assert h.get_all("h\u20acst") == []
    assert h.remove("h\u20acst") == 0


# ---------------------------------------------------------------------------
# Headers: writing
# ---------------------------------------------------------------------------


def test_setitem_replaces_every_field_at_the_first_position() -> None:
    h = _sample()
    h["ACCEPT"] = "*/*"
    assert list(h.items()) == [
        ("host", "example.test"),
        ("accept", "*/*"),
        ("x-tag", "a"),
        ("x-tag", "b, c"),
    ]


def test_setitem_appends_a_new_name() -> None:
    h = Headers([("a", "1")])
    h["B"] = "2"
    assert h.fields == [(b"a", b"1"), (b"b", b"2")]


def test_add_appends_and_keeps_existing_fields() -> None:
    h = Headers([("Via", "1.1 a"), ("X", "1")])
    h.add("VIA", "1.1 b")
    assert h.fields == [(b"via", b"1.1 a"), (b"x", b"1"), (b"via", b"1.1 b")]


def test_remove_returns_the_count() -> None:
    h = _sample()
    assert h.remove("X-Tag") == 2
    assert "x-tag" not in h
    assert h.remove("x-tag") == 0
    assert len(h) == 3


def test_delitem() -> None:
    h = _sample()
    del h["ACCEPT"]
    assert h.get_all("accept") == []
    assert len(h) == 3
    with pytest.raises(KeyError):
        del h["accept"]


def test_setdefault() -> None:
    h = Headers([("a", "1")])
    assert h.setdefault("A", "2") == "1"
    assert h.setdefault("b", "  2 ") == "2"  # what is stored: stripped
    assert h.setdefault(b"c", b"3") == "3"
    assert h.fields == [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")]


def test_values_are_stripped_of_surrounding_whitespace_only() -> None:
    h = Headers([("a", " \t x  y \t ")])
    assert h["a"] == "x  y"


def test_equality() -> None:
    assert Headers([("A", "1"), ("b", "2")]) == Headers([("a", "1"), ("B", "2")])
    assert Headers([("a", "1"), ("b", "2")]) != Headers([("b", "2"), ("a", "1")])
    assert Headers([("a", "1")]) != Headers([("a", "1"), ("a", "1")])
    assert Headers() != [("a", "1")]
    assert Headers() == Headers()


def test_unhashable() -> None:
    with pytest.raises(TypeError):
        hash(Headers())
    with pytest.raises(TypeError):
        {Headers(): 1}


def test_copy_is_independent() -> None:
    h = _sample()
    c = h.copy()
    assert c == h
    assert c.fields is not h.fields
    c["host"] = "other.test"
    c.add("x-new", "1")
    assert h["host"] == "example.test"
    assert "x-new" not in h


def test_from_wire_does_not_copy() -> None:
    fields = [(b"host", b"a")]
    h = Headers.from_wire(fields)
    assert h.fields is fields
    fields.append((b"x", b"1"))
    assert h["x"] == "1"


def test_repr() -> None:
    assert repr(Headers([("A", "1")])) == "Headers([('a', '1')])"


# ---------------------------------------------------------------------------
# Headers: what is refused (RFC 9110 §5.1, §5.5)
# ---------------------------------------------------------------------------

BAD_VALUES = ["a\r\nx-evil: 1", "a\nb", "a\rb", "a\x00b", "\n", b"a\r\nb"]
BAD_NAMES = ["", "a b", "a:b", "x-foo\n", "\nx", "é", "h\u20acst", "(x)", b"a\x00", "a\tb"]


@pytest.mark.parametrize("value", BAD_VALUES)
def test_cr_lf_nul_are_refused_everywhere(value: str | bytes) -> None:
    h = Headers()
    with pytest.raises(LocalProtocolError):
        Headers([("x", value)])
    with pytest.raises(LocalProtocolError):
        h["x"] = value
    with pytest.raises(LocalProtocolError):
        h.add("x", value)
    with pytest.raises(LocalProtocolError):
        h.setdefault("x", value)
    assert len(h) == 0


@pytest.mark.parametrize("name", BAD_NAMES)
def test_invalid_names_are_refused(name: str | bytes) -> None:
    h = Headers()
    with pytest.raises(LocalProtocolError):
        Headers([(name, "v")])
    with pytest.raises(LocalProtocolError):
        h[name] = "v"
    with pytest.raises(LocalProtocolError):
        h.add(name, "v")
    assert len(h) == 0


def test_value_outside_latin1_is_refused() -> None:
    with pytest.raises(LocalProtocolError, match="ISO-8859-1"):
        Headers([("x", "\u20ac")])


@pytest.mark.parametrize("char", [c for c in range(0x20) if c != 0x09] + [0x7F])
def test_every_control_character_but_tab_is_refused(char: int) -> None:
    # What the kernel would refuse to send is refused where a plugin sets it.
    with pytest.raises(LocalProtocolError, match="control character"):
        Headers([("x", f"a{chr(char)}b")])
    assert Headers([("x", "a\tb")])["x"] == "a\tb"


def test_a_value_that_is_not_text_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="str or bytes, not int"):
        Headers([("x", 1)])  # type: ignore[list-item]


def test_local_protocol_error_is_a_proxy_error() -> None:
    with pytest.raises(sdk.ProxyError) as info:
        Headers([("x", "a\nb")])
    assert info.value.status_hint == 500


@pytest.mark.parametrize("byte", range(0x80, 0x100))
def test_latin1_round_trip_of_high_bytes(byte: int) -> None:
    as_str = Headers([("x", f"a{chr(byte)}b")])
    assert as_str.fields == [(b"x", bytes([0x61, byte, 0x62]))]
    assert as_str["x"] == f"a{chr(byte)}b"
    as_bytes = Headers([(b"x", bytes([byte]))])
    assert as_bytes["x"] == chr(byte)
    assert as_bytes["x"].encode("latin-1") == bytes([byte])


_TOKEN_CHARS = "!#$%&'*+-.^_`|~" + string.ascii_letters + string.digits
_VALUE_CHARS = st.characters(
    min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f", include_characters="\t"
)
_FIELDS = st.lists(
    st.tuples(st.text(_TOKEN_CHARS, min_size=1, max_size=20), st.text(_VALUE_CHARS, max_size=40)),
    max_size=12,
)


@given(_FIELDS)
def test_valid_fields_round_trip(fields: list[tuple[str, str]]) -> None:
    h = Headers(fields)
    expected = [(n.lower(), v.strip(" \t")) for n, v in fields]
    assert list(h.items()) == expected
    assert Headers(h.items()) == h
    assert Headers((n.encode("latin-1"), v.encode("latin-1")) for n, v in fields) == h
    for name, _ in fields:
        assert h.get_all(name) == [v for n, v in expected if n == name.lower()]


# ---------------------------------------------------------------------------
# Origin
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "origin", "base"),
    [
        ("http://example.test", Origin("http", "example.test", 80), ""),
        ("http://example.test/", Origin("http", "example.test", 80), ""),
        ("https://example.test", Origin("https", "example.test", 443), ""),
        ("http://Example.TEST:8080", Origin("http", "example.test", 8080), ""),
        ("https://example.test:80", Origin("https", "example.test", 80), ""),
        ("http://127.0.0.1:9000/api/", Origin("http", "127.0.0.1", 9000), "/api"),
        ("http://h/a/b//", Origin("http", "h", 80), "/a/b"),
        ("http://[::1]:8443/base", Origin("http", "::1", 8443), "/base"),
        ("https://[2001:DB8::1]", Origin("https", "2001:db8::1", 443), ""),
        ("http://h:/x", Origin("http", "h", 80), "/x"),  # empty port: the default
        ("http://h:65535", Origin("http", "h", 65535), ""),
    ],
)
def test_origin_parse(url: str, origin: Origin, base: str) -> None:
    assert Origin.parse(url) == (origin, base)


@pytest.mark.parametrize(
    "url",
    [
        "example.test",
        "ftp://example.test/",
        "HTTP//example.test",
        "http://",
        "http:///path",
        "http://:8080",
        "http://h:port",
        "http://h:-1",
        "http://h:0",
        "http://h:65536",
        "http://h:\u00b2",
        "http://user@h/",
        "http://h/x?y=1",
        "http://h/#frag",
        "http://[::1/",
        "http://[::1]x/",
        "http://::1/",
        "http://ho st/",
        "http://h:80\n",
    ],
)
def test_origin_parse_refuses(url: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(url))):
        Origin.parse(url)


@pytest.mark.parametrize(
    ("origin", "authority", "text"),
    [
        (Origin("http", "h", 80), "h", "http://h"),
        (Origin("http", "h", 443), "h:443", "http://h:443"),
        (Origin("https", "h", 443), "h", "https://h"),
        (Origin("https", "h", 8443), "h:8443", "https://h:8443"),
        (Origin("http", "::1", 80), "[::1]", "http://[::1]"),
        (Origin("http", "::1", 81), "[::1]:81", "http://[::1]:81"),
    ],
)
def test_origin_authority_omits_default_port(origin: Origin, authority: str, text: str) -> None:
    assert origin.authority == authority
    assert str(origin) == text


def test_origin_is_frozen_and_hashable() -> None:
    o = Origin("http", "h", 80)
    assert {o: 1}[Origin("http", "h", 80)] == 1
    with pytest.raises(AttributeError):
        o.port = 81  # type: ignore[misc]


# ---------------------------------------------------------------------------
# Request
# ---------------------------------------------------------------------------


def test_request_properties() -> None:
    r = Request(method="GET", path="/a/b?x=1&y", authority="Example.test:8080")
    assert r.host == "example.test"
    assert r.port == 8080
    assert r.path_only == "/a/b"
    assert r.query == "x=1&y"
    assert r.url == "http://Example.test:8080/a/b?x=1&y"
    assert r.headers == Headers()
    assert r.http_version == "1.1"


@pytest.mark.parametrize(
    ("scheme", "authority", "host", "port"),
    [
        ("http", "h", "h", 80),
        ("https", "h", "h", 443),
        ("https", "h:8443", "h", 8443),
        ("http", "[::1]:81", "::1", 81),
        ("https", "[::1]", "::1", 443),
        ("http", "", "", 80),
    ],
)
def test_request_host_and_port(scheme: str, authority: str, host: str, port: int) -> None:
    r = Request(method="GET", path="/", scheme=scheme, authority=authority)
    assert (r.host, r.port) == (host, port)


def test_request_without_query() -> None:
    r = Request(method="GET", path="/only", scheme="https", authority="h")
    assert r.path_only == "/only"
    assert r.query == ""
    assert r.url == "https://h/only"


def test_request_is_mutable_and_compared_by_identity() -> None:
    a = Request(method="GET", path="/")
    b = Request(method="GET", path="/")
    assert a != b
    a.path = "/new"
    assert a.path_only == "/new"


# ---------------------------------------------------------------------------
# Response
# ---------------------------------------------------------------------------


def test_response_make_with_str_body_sets_content_type() -> None:
    r = Response.make(404, "n\u00f6t found\n")
    assert r.status_code == 404
    assert r.body == "n\u00f6t found\n".encode()
    assert r.headers.get_all("content-type") == ["text/plain; charset=utf-8"]


def test_response_make_with_bytes_body_sets_no_content_type() -> None:
    r = Response.make(200, b"\x00\x01")
    assert r.body == b"\x00\x01"
    assert "content-type" not in r.headers
    assert len(r.headers) == 0


def test_response_make_content_type_argument_wins() -> None:
    r = Response.make(200, "{}", [("Content-Type", "text/html")], content_type="application/json")
    assert r.headers.get_all("content-type") == ["application/json"]
    r = Response.make(200, b"{}", content_type="application/json")
    assert r.headers["content-type"] == "application/json"


def test_response_make_keeps_given_headers_and_their_content_type() -> None:
    r = Response.make(201, "x", [("Content-Type", "text/csv"), ("X-A", "1")])
    assert list(r.headers.items()) == [("content-type", "text/csv"), ("x-a", "1")]


def test_response_make_defaults() -> None:
    r = Response.make()
    assert (r.status_code, r.body, r.reason, r.http_version) == (200, b"", "", "1.1")
    assert "content-length" not in r.headers  # the kernel frames bodies when sending


def test_response_make_checks_headers() -> None:
    with pytest.raises(LocalProtocolError):
        Response.make(200, b"", [("x", "a\r\nb")])


def test_relayed_response_has_no_body() -> None:
    assert Response(status_code=204).body is None


# Headers: cookies (the one parser: kernel sticky sessions, canary, the hash strategy)
def test_cookies_of_every_cookie_field() -> None:
    headers = Headers(
        [("cookie", ' a=1 ;b="two words"; ;=x; novalue; a=again'), ("cookie", "c=3=3")]
    )
    assert headers.cookies() == {"a": "1", "b": "two words", "c": "3=3"}
    assert Headers().cookies() == {}


def test_cookie_edge_cases() -> None:
    def cookie(fields: list[str], name: str) -> str | None:
        return Headers([("cookie", f) for f in fields]).cookies().get(name)

    assert cookie([], "a") is None
    assert cookie(["a"], "a") is None  # no '='
    assert cookie([" a = 1 ;b=2"], "a") == "1"
    assert cookie(["x=1", "a=; a=2"], "a") == ""
    assert cookie(['a=""'], "a") == ""
    # the first of a name wins, across fields; names are case-sensitive
    assert cookie(['a=1; srv="x"', "srv=y;b=2", "srv"], "srv") == "x"
    assert cookie(["SRV=1"], "srv") is None


@pytest.mark.parametrize("port", [0, 65536, 99999, -1, "80"])
def test_an_origin_refuses_what_is_not_a_port(port: object) -> None:
    """99999 used to be accepted, and the socket connected to 99999 % 65536."""
    with pytest.raises(ValueError, match="is not a port number"):
        sdk.Origin("http", "127.0.0.1", port)  # type: ignore[arg-type]
