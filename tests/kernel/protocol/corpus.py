"""Drivers and a hostile corpus for the HTTP/1.1 codec tests (not a test module).

- :func:`run_server` drives a server codec the way ``kernel.io`` does and
  returns a normalised transcript, so two codecs can be compared.
- :func:`run_client` does the same for a client codec and a response stream.
- :class:`Pair` links a client codec to a server codec (h11's ConnectionPair).
- :data:`REQUESTS` and :data:`RESPONSES` are the hostile corpora: each entry
  is (id, bytes, expected) where expected is ``None`` (accepted) or the
  status hint the codec must refuse with.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from kernel.protocol.events import (
    NEED_DATA,
    PAUSED,
    ConnectionClosed,
    Data,
    EndOfMessage,
    InformationalResponse,
    RequestHead,
    ResponseHead,
)
from kernel.protocol.http1 import (
    ClientCodec,
    Limits,
    ServerCodec,
    make_client_codec,
    make_server_codec,
)
from sdk._errors import RemoteProtocolError

KINDS = ("h11", "httptools")
SMALL = Limits(max_request_line=64, max_header_bytes=256, max_header_count=4, max_body_bytes=100)

Transcript = list[tuple[Any, ...]]


def _add(out: Transcript, item: tuple[Any, ...]) -> None:
    # Body pieces may be cut differently; only the bytes matter.
    if item[0] == "body" and out and out[-1][0] == "body":
        out[-1] = ("body", out[-1][1] + item[1])
    else:
        out.append(item)


def run_server(
    kind: str, chunks: Iterable[bytes], limits: Limits | None = None, respond: bool = True
) -> Transcript:
    """Feed ``chunks`` (then EOF) to a fresh server codec, like the kernel does.

    Each request gets an empty 200 after its end; the cycle restarts while
    the codec allows keep-alive. The transcript ends with ``("closed",)``,
    ``("stop",)`` (not kept alive) or ``("error", status_hint)``.
    """
    codec = make_server_codec(kind, limits or Limits())  # type: ignore[arg-type]
    pending = list(chunks)
    out: Transcript = []
    try:
        while True:
            event = codec.next_event()
            if event is NEED_DATA:
                codec.receive_data(pending.pop(0) if pending else b"")
            elif event is PAUSED:
                if not respond:
                    out.append(("paused",))
                    return out
                # (a 2xx to CONNECT would open a tunnel: the kernel says 501)
                status = 501 if codec.request_method == b"CONNECT" else 200
                head = ResponseHead(status_code=status, headers=[(b"content-length", b"0")])
                codec.send_response_head(head)
                codec.send_end()
                if not codec.keep_alive:
                    out.append(("stop",))
                    return out
                codec.start_next_cycle()
            elif isinstance(event, RequestHead):
                _add(
                    out,
                    (
                        "head",
                        event.method,
                        event.target,
                        event.http_version,
                        tuple(event.headers),
                        event.keep_alive,
                        event.expect_continue,
                    ),
                )
            elif isinstance(event, Data):
                assert event.data, "Data events are never empty"
                _add(out, ("body", event.data))
            elif isinstance(event, EndOfMessage):
                _add(out, ("end", tuple(event.trailers)))
            else:
                assert isinstance(event, ConnectionClosed)
                out.append(("closed",))
                return out
    except RemoteProtocolError as exc:
        out.append(("error", exc.status_hint))
        return out


def run_client(
    kind: str, request: RequestHead, chunks: Iterable[bytes], limits: Limits | None = None
) -> Transcript:
    """Send ``request`` (no body) on a fresh client codec, then parse ``chunks``."""
    codec = make_client_codec(kind, limits)  # type: ignore[arg-type]
    codec.send_request_head(request)
    codec.send_end()
    pending = list(chunks)
    out: Transcript = []
    try:
        while True:
            event = codec.next_event()
            if event is NEED_DATA:
                codec.receive_data(pending.pop(0) if pending else b"")
            elif event is PAUSED:
                out.append(("done", codec.keep_alive))
                return out
            elif isinstance(event, InformationalResponse):
                out.append(("info", event.status_code, tuple(event.headers), event.reason))
            elif isinstance(event, ResponseHead):
                out.append(
                    (
                        "head",
                        event.status_code,
                        event.reason,
                        event.http_version,
                        tuple(event.headers),
                        event.keep_alive,
                    )
                )
            elif isinstance(event, Data):
                assert event.data, "Data events are never empty"
                _add(out, ("body", event.data))
            else:
                assert isinstance(event, EndOfMessage)
                out.append(("end", tuple(event.trailers)))
    except RemoteProtocolError as exc:
        out.append(("error", exc.status_hint))
        return out


def split(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    """``data`` cut at the given offsets (out-of-range and repeated cuts ignored)."""
    points = sorted({c for c in cuts if 0 < c < len(data)})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


class Pair:
    """A client codec and a server codec joined by a fake link (h11 style)."""

    def __init__(self, client_kind: str, server_kind: str) -> None:
        self.client: ClientCodec = make_client_codec(client_kind)  # type: ignore[arg-type]
        self.server: ServerCodec = make_server_codec(server_kind, Limits())  # type: ignore[arg-type]

    @staticmethod
    def _drain(codec: ClientCodec | ServerCodec, data: bytes) -> list[Any]:
        if data:
            codec.receive_data(data)
        events: list[Any] = []
        while True:
            event = codec.next_event()
            if event is NEED_DATA or event is PAUSED:
                return events
            events.append(event)

    def to_server(self, data: bytes) -> list[Any]:
        return self._drain(self.server, data)

    def to_client(self, data: bytes) -> list[Any]:
        return self._drain(self.client, data)


def _req(head: bytes, body: bytes = b"") -> bytes:
    return head.replace(b"\n", b"\r\n") + b"\r\n" + body


def _post(fields: bytes, body: bytes) -> bytes:
    return _req(b"POST / HTTP/1.1\nHost: a\n" + fields, body)


_LONG = b"a" * 70
REQUESTS: list[tuple[str, bytes, int | None]] = [
    # -- accepted -------------------------------------------------------
    ("get", _req(b"GET / HTTP/1.1\nHost: a\n"), None),
    ("post-cl", _post(b"Content-Length: 5\n", b"hello"), None),
    ("chunked", _post(b"Transfer-Encoding: chunked\n", b"3;x=y\r\nabc\r\n0\r\nT: v\r\n\r\n"), None),
    ("chunked-case-ows", _post(b"Transfer-Encoding:  ChUnKeD \n", b"0\r\n\r\n"), None),
    ("chunked-tab-ows", _post(b"Transfer-Encoding:\tchunked\t\n", b"0\r\n\r\n"), None),
    ("length-tab-ows", _post(b"Content-Length:\t2\t\n", b"hi"), None),
    (
        "chunk-ext-quoted",
        _post(b"Transfer-Encoding: chunked\n", b'2;a="b c";d\r\nhi\r\n0\r\n\r\n'),
        None,
    ),
    (
        "chunk-zeros",
        _post(b"Transfer-Encoding: chunked\n", b"0000000000000002\r\nhi\r\n0\r\n\r\n"),
        None,
    ),
    (
        "pipelined",
        _req(b"GET /1 HTTP/1.1\nHost: a\n")
        + _post(b"Content-Length: 2\n", b"hi")
        + _req(b"GET /3 HTTP/1.1\nHost: a\n"),
        None,
    ),
    ("absolute-form", _req(b"GET http://h.example:8080/p?q HTTP/1.1\nHost: other\n"), None),
    ("absolute-https-upper", _req(b"GET HTTPS://h/ HTTP/1.1\nHost: h\n"), None),
    ("options-star", _req(b"OPTIONS * HTTP/1.1\nHost: a\n"), None),
    ("connect", _req(b"CONNECT h.example:443 HTTP/1.1\nHost: h.example:443\n"), None),
    ("leading-crlf", b"\r\n\r\n" + _req(b"GET / HTTP/1.1\nHost: a\n"), None),
    ("http10", _req(b"GET / HTTP/1.0\n"), None),
    ("http10-keepalive-asked", _req(b"GET / HTTP/1.0\nConnection: keep-alive\n"), None),
    ("close", _req(b"GET / HTTP/1.1\nHost: a\nConnection: close\n") + b"GET / HTTP/1.1\r\n", None),
    (
        "upgrade-is-ordinary",
        _req(b"GET / HTTP/1.1\nHost: a\nConnection: upgrade\nUpgrade: websocket\n")
        + _req(b"GET /2 HTTP/1.1\nHost: a\n"),
        None,
    ),
    (
        "upgrade-with-body",
        _post(b"Connection: Upgrade\nUpgrade: h2c\nContent-Length: 3\n", b"abc")
        + _req(b"GET /2 HTTP/1.1\nHost: a\n"),
        None,
    ),
    ("expect-100", _post(b"Expect: 100-continue\nContent-Length: 2\n", b"hi"), None),
    (
        "values",
        _req(b"GET / HTTP/1.1\nHost: a\nX:  a \t b\t \nY:\nZ: \xff\x80 caf\xc3\xa9\n"),
        None,
    ),
    (
        "host-forms",
        _req(b"GET / HTTP/1.1\nHost: [::1]:8080\n")
        + _req(b"GET / HTTP/1.1\nHost: 10.0.0.1\n")
        + _req(b"GET / HTTP/1.1\nHost:\n")
        + _req(b"GET / HTTP/1.1\nHost: xn--d1a.%41:1\n"),
        None,
    ),
    (
        "odd-methods",
        _req(b"get / HTTP/1.1\nHost: a\n") + _req(b"FOO-BAR / HTTP/1.1\nHost: a\n"),
        None,
    ),
    ("eof-between", _req(b"GET / HTTP/1.1\nHost: a\n"), None),
    # -- smuggling: one framing per message (RFC 9112 §6) ------------------
    ("cl-te", _post(b"Content-Length: 4\nTransfer-Encoding: chunked\n", b"0\r\n\r\n"), 400),
    ("te-cl", _post(b"Transfer-Encoding: chunked\nContent-Length: 4\n", b"0\r\n\r\n"), 400),
    (
        "te-te",
        _post(b"Transfer-Encoding: chunked\nTransfer-Encoding: chunked\n", b"0\r\n\r\n"),
        400,
    ),
    (
        "te-split",
        _post(b"Transfer-Encoding: gzip\nTransfer-Encoding: chunked\n", b"0\r\n\r\n"),
        400,
    ),
    ("te-chunked-twice", _post(b"Transfer-Encoding: chunked, chunked\n", b"0\r\n\r\n"), 400),
    ("te-gzip-chunked", _post(b"Transfer-Encoding: gzip, chunked\n", b"0\r\n\r\n"), 501),
    ("te-params", _post(b'Transfer-Encoding: x;q="1", chunked\n', b"0\r\n\r\n"), 501),
    ("te-chunked-gzip", _post(b"Transfer-Encoding: chunked, gzip\n", b"0\r\n\r\n"), 400),
    ("te-identity", _post(b"Transfer-Encoding: identity\n", b"abc"), 400),
    ("te-vt", _post(b"Transfer-Encoding: chunked\x0b\n", b"0\r\n\r\n"), 400),
    ("te-xchunked", _post(b"Transfer-Encoding: xchunked\n", b"0\r\n\r\n"), 400),
    ("te-chunked-false", _post(b"Transfer-Encoding:  chunked-false\n", b"0\r\n\r\n"), 400),
    ("te-quoted", _post(b'Transfer-Encoding: "chunked"\n', b"0\r\n\r\n"), 400),
    ("te-empty-element", _post(b"Transfer-Encoding: , chunked\n", b"0\r\n\r\n"), 400),
    ("te-empty", _post(b"Transfer-Encoding: \n", b"0\r\n\r\n"), 400),
    ("te-chunked-param", _post(b"Transfer-Encoding: chunked;a=b\n", b"0\r\n\r\n"), 400),
    ("te-http10", _req(b"POST / HTTP/1.0\nTransfer-Encoding: chunked\n", b"0\r\n\r\n"), 400),
    ("te-space-name", _post(b"Transfer-Encoding : chunked\n", b"0\r\n\r\n"), 400),
    ("cl-cl", _post(b"Content-Length: 3\nContent-Length: 3\n", b"abc"), 400),
    ("cl-list", _post(b"Content-Length: 3, 3\n", b"abc"), 400),
    ("cl-plus", _post(b"Content-Length: +3\n", b"abc"), 400),
    ("cl-space", _post(b"Content-Length: 1 3\n", b"abc"), 400),
    ("cl-empty", _post(b"Content-Length:\n", b""), 400),
    ("cl-hex", _post(b"Content-Length: 0x3\n", b"abc"), 400),
    ("cl-19-digits", _post(b"Content-Length: 0000000000000000003\n", b"abc"), 400),
    ("cl-huge", _post(b"Content-Length: 99999999999999999999999\n", b"abc"), 400),
    # -- field syntax (RFC 9112 §5) ------------------------------------------
    ("obs-fold", _req(b"GET / HTTP/1.1\nHost: a\nX: y\n z\n"), 400),
    ("obs-fold-first", _req(b"GET / HTTP/1.1\n X: y\nHost: a\n"), 400),
    ("bare-lf", b"GET / HTTP/1.1\nHost: a\n\n", 400),
    ("bare-lf-field", b"GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n", 400),
    ("bare-lf-end", b"GET / HTTP/1.1\r\nHost: a\r\n\n", 400),
    ("bare-cr", _req(b"GET / HTTP/1.1\nHost: a\rX: y\n"), 400),
    ("bare-cr-line", b"GET / HTTP/1.1\r\nHost: a\r\n\rX: y\r\n\r\n", 400),
    ("bare-cr-end", b"GET / HTTP/1.1\r\nHost: a\r\n\r\r\n", 400),
    ("fragment", _req(b"GET /a#frag HTTP/1.1\nHost: a\n"), 400),
    ("host-port-over", _req(b"GET / HTTP/1.1\nHost: a:65536\n"), 400),
    ("host-comma", _req(b"GET / HTTP/1.1\nHost: a,for=1.2.3.4\n"), 400),
    ("nul", _req(b"GET / HTTP/1.1\nHost: a\nX: y\x00z\n"), 400),
    ("ctl", _req(b"GET / HTTP/1.1\nHost: a\nX: y\x01z\n"), 400),
    ("del", _req(b"GET / HTTP/1.1\nHost: a\nX: y\x7fz\n"), 400),
    ("space-before-colon", _req(b"GET / HTTP/1.1\nHost: a\nX : y\n"), 400),
    ("tab-before-colon", _req(b"GET / HTTP/1.1\nHost: a\nX\t: y\n"), 400),
    ("bad-name", _req(b"GET / HTTP/1.1\nHost: a\nX(y): z\n"), 400),
    ("empty-name", _req(b"GET / HTTP/1.1\nHost: a\n: z\n"), 400),
    ("no-colon", _req(b"GET / HTTP/1.1\nHost: a\nXyz\n"), 400),
    ("high-byte-name", _req(b"GET / HTTP/1.1\nHost: a\n\xffX: z\n"), 400),
    # -- request line (RFC 9112 §3) ------------------------------------------
    ("double-space", _req(b"GET  / HTTP/1.1\nHost: a\n"), 400),
    ("http2", _req(b"GET / HTTP/2.0\nHost: a\n"), 505),
    ("http12", _req(b"GET / HTTP/1.2\nHost: a\n"), 505),
    ("http09", _req(b"GET / HTTP/0.9\nHost: a\n"), 505),
    ("httx", _req(b"GET / HTTX/1.1\nHost: a\n"), 400),
    ("lower-http", _req(b"GET / http/1.1\nHost: a\n"), 400),
    ("no-version", _req(b"GET /\nHost: a\n"), 400),
    ("target-high", _req(b"GET /\xff HTTP/1.1\nHost: a\n"), 400),
    ("target-tab", _req(b"GET /a\tb HTTP/1.1\nHost: a\n"), 400),
    ("method-at", _req(b"G@T / HTTP/1.1\nHost: a\n"), 400),
    ("garbage", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),
    ("tls-hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 100, 400),
    ("space-first", b" GET / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("bare-lf-request-line", b"GET / HTTP/1.1\nHost: a\r\n\r\n", 400),
    ("ftp-target", _req(b"GET ftp://h/ HTTP/1.1\nHost: h\n"), 400),
    ("empty-host-uri", _req(b"GET http:///p HTTP/1.1\nHost: h\n"), 400),
    ("userinfo-uri", _req(b"GET http://u@h/ HTTP/1.1\nHost: h\n"), 400),
    ("fragment-uri", _req(b"GET http://h#f HTTP/1.1\nHost: h\n"), 400),
    ("authority-form-get", _req(b"GET h:80 HTTP/1.1\nHost: h\n"), 400),
    ("relative-target", _req(b"GET p/q HTTP/1.1\nHost: h\n"), 400),
    ("connect-origin-form", _req(b"CONNECT / HTTP/1.1\nHost: h\n"), 400),
    ("connect-no-port", _req(b"CONNECT h HTTP/1.1\nHost: h\n"), 400),
    ("star-get", _req(b"GET * HTTP/1.1\nHost: h\n"), 400),
    # -- Host (RFC 9112 §3.2) -------------------------------------------------
    ("no-host", _req(b"GET / HTTP/1.1\n"), 400),
    ("two-hosts", _req(b"GET / HTTP/1.1\nHost: a\nHost: a\n"), 400),
    ("host-space", _req(b"GET / HTTP/1.1\nHost: a b\n"), 400),
    ("host-port-alpha", _req(b"GET / HTTP/1.1\nHost: a:b\n"), 400),
    ("host-port-long", _req(b"GET / HTTP/1.1\nHost: a:123456\n"), 400),
    ("host-bad-ipv6", _req(b"GET / HTTP/1.1\nHost: [::g]\n"), 400),
    ("host-userinfo", _req(b"GET / HTTP/1.1\nHost: u@a\n"), 400),
    ("host-bad-pct", _req(b"GET / HTTP/1.1\nHost: a%zz\n"), 400),
    ("host-slash", _req(b"GET / HTTP/1.1\nHost: a/b\n"), 400),
    ("two-hosts-http10", _req(b"GET / HTTP/1.0\nHost: a\nHost: b\n"), 400),
    # -- chunked body (RFC 9112 §7.1) ------------------------------------------
    (
        "chunk-17-digits",
        _post(b"Transfer-Encoding: chunked\n", b"00000000000000003\r\nabc\r\n0\r\n\r\n"),
        400,
    ),
    ("chunk-overflow", _post(b"Transfer-Encoding: chunked\n", b"10000000000000000\r\nabc"), 400),
    ("chunk-not-hex", _post(b"Transfer-Encoding: chunked\n", b"z\r\nabc\r\n0\r\n\r\n"), 400),
    ("chunk-size-space", _post(b"Transfer-Encoding: chunked\n", b"3 \r\nabc\r\n0\r\n\r\n"), 400),
    ("chunk-bws-ext", _post(b"Transfer-Encoding: chunked\n", b"3 ;a\r\nabc\r\n0\r\n\r\n"), 400),
    ("chunk-negative", _post(b"Transfer-Encoding: chunked\n", b"-3\r\nabc\r\n0\r\n\r\n"), 400),
    ("chunk-no-crlf", _post(b"Transfer-Encoding: chunked\n", b"3\r\nabcX0\r\n\r\n"), 400),
    ("chunk-lf-only", _post(b"Transfer-Encoding: chunked\n", b"3\nabc\n0\n\n"), 400),
    ("chunk-ext-ctl", _post(b"Transfer-Encoding: chunked\n", b"3;\x01\r\nabc\r\n0\r\n\r\n"), 400),
    (
        "chunk-ext-long",
        _post(b"Transfer-Encoding: chunked\n", b"3;" + b"a" * 5000 + b"\r\nabc\r\n0\r\n\r\n"),
        400,
    ),
    ("trailer-fold", _post(b"Transfer-Encoding: chunked\n", b"0\r\nT: v\r\n w\r\n\r\n"), 400),
    ("trailer-bare-lf", _post(b"Transfer-Encoding: chunked\n", b"0\r\nT: v\n\r\n"), 400),
    ("trailer-bare-cr", _post(b"Transfer-Encoding: chunked\n", b"0\r\n\rX\r\n\r\n"), 400),
    ("trailer-no-colon", _post(b"Transfer-Encoding: chunked\n", b"0\r\nT v\r\n\r\n"), 400),
    # RFC 9110 §6.5.1: framing, routing, credentials and the forwarding chain
    # never come in trailers (h11 checked only CL and TE there; llhttp nothing).
    *(
        (f"trailer-{name.decode()}", _post(b"Transfer-Encoding: chunked\n", trailer), 400)
        for name, trailer in (
            (b"cl", b"0\r\nContent-Length: 100\r\n\r\n"),
            (b"cl-bad", b"0\r\nContent-Length: abc\r\n\r\n"),
            (b"cl-list", b"0\r\nContent-Length: 1, 1\r\n\r\n"),
            (b"te", b"0\r\nTransfer-Encoding: Chunked\r\n\r\n"),
            (b"host", b"0\r\nHost: evil\r\n\r\n"),
            (b"connection", b"0\r\nConnection: close\r\n\r\n"),
            (b"proxy-auth", b"0\r\nProxy-Authorization: Basic eA==\r\n\r\n"),
            (b"xff", b"0\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n"),
        )
    ),
    ("chunk-huge-eof", _post(b"Transfer-Encoding: chunked\n", b"ffffffffffffffff\r\nabc"), 400),
    # -- EOF (RFC 9112 §8) --------------------------------------------------
    ("eof-mid-head", b"GET / HTTP/1.1\r\nHost: a\r\n", 400),
    ("eof-mid-body", _post(b"Content-Length: 10\n", b"abc"), 400),
    ("eof-mid-chunk", _post(b"Transfer-Encoding: chunked\n", b"5\r\nab"), 400),
]

# Limits: run with SMALL (64-byte line, 256-byte block, 4 fields, 100-byte body).
LIMIT_REQUESTS: list[tuple[str, bytes, int | None]] = [
    ("line-at-limit", _req(b"GET /" + b"a" * 50 + b" HTTP/1.1\nHost: a\n"), None),
    ("line-over", _req(b"GET /" + b"a" * 51 + b" HTTP/1.1\nHost: a\n"), 414),
    ("line-incomplete", b"GET /" + _LONG, 414),
    ("block-over", _req(b"GET / HTTP/1.1\nHost: a\nX: " + b"a" * 250 + b"\n"), 431),
    ("block-incomplete", b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"a" * 300, 431),
    ("count-at-limit", _req(b"GET / HTTP/1.1\nHost: a\nA: 1\nB: 2\nC: 3\n"), None),
    ("count-over", _req(b"GET / HTTP/1.1\nHost: a\nA: 1\nB: 2\nC: 3\nD: 4\n"), 431),
    ("count-incomplete", b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE", 431),
    ("cl-over", _post(b"Content-Length: 101\n", b"a" * 101), 413),
    ("cl-at-limit", _post(b"Content-Length: 100\n", b"a" * 100), None),
    (
        "chunked-over",
        _post(b"Transfer-Encoding: chunked\n", b"40\r\n" + b"a" * 64 + b"\r\n25\r\n"),
        413,
    ),
    (
        "trailers-over",
        _post(b"Transfer-Encoding: chunked\n", b"0\r\nT: " + b"a" * 300 + b"\r\n\r\n"),
        431,
    ),
    (
        "trailer-count",
        _post(
            b"Transfer-Encoding: chunked\n", b"0\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\nE: 1\r\n\r\n"
        ),
        431,
    ),
]


def _resp(head: bytes, body: bytes = b"") -> bytes:
    return head.replace(b"\n", b"\r\n") + b"\r\n" + body


# Responses to a GET (client side): every refusal is a 502 for our client.
RESPONSES: list[tuple[str, bytes, int | None]] = [
    ("cl", _resp(b"HTTP/1.1 200 OK\nContent-Length: 2\n", b"hi"), None),
    (
        "chunked",
        _resp(b"HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n", b"2\r\nhi\r\n0\r\nT: 1\r\n\r\n"),
        None,
    ),
    ("until-close", _resp(b"HTTP/1.1 200 OK\n", b"hello"), None),
    ("http10", _resp(b"HTTP/1.0 200 OK\nContent-Length: 2\n", b"hi"), None),
    ("no-reason", b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", None),
    ("empty-reason", b"HTTP/1.1 204 \r\n\r\n", None),
    (
        "interim",
        _resp(b"HTTP/1.1 100 Continue\n")
        + _resp(b"HTTP/1.1 103 Early Hints\nLink: </a>\n")
        + _resp(b"HTTP/1.1 200 OK\nContent-Length: 0\n"),
        None,
    ),
    ("304-with-cl", _resp(b"HTTP/1.1 304 Not Modified\nContent-Length: 99\n"), None),
    ("close", _resp(b"HTTP/1.1 200 OK\nConnection: close\nContent-Length: 0\n"), None),
    (
        "cl-te",
        _resp(b"HTTP/1.1 200 OK\nContent-Length: 2\nTransfer-Encoding: chunked\n", b"0\r\n\r\n"),
        502,
    ),
    ("cl-cl", _resp(b"HTTP/1.1 200 OK\nContent-Length: 2\nContent-Length: 2\n", b"hi"), 502),
    ("cl-bad", _resp(b"HTTP/1.1 200 OK\nContent-Length: -2\n", b"hi"), 502),
    ("te-gzip", _resp(b"HTTP/1.1 200 OK\nTransfer-Encoding: gzip\n", b"hi"), 502),
    (
        "te-gzip-chunked",
        _resp(b"HTTP/1.1 200 OK\nTransfer-Encoding: gzip, chunked\n", b"0\r\n\r\n"),
        502,
    ),
    ("te-http10", _resp(b"HTTP/1.0 200 OK\nTransfer-Encoding: chunked\n", b"0\r\n\r\n"), 502),
    (
        "te-te",
        _resp(
            b"HTTP/1.1 200 OK\nTransfer-Encoding: chunked\nTransfer-Encoding: chunked\n",
            b"0\r\n\r\n",
        ),
        502,
    ),
    ("obs-fold", _resp(b"HTTP/1.1 200 OK\nX: a\n b\nContent-Length: 0\n"), 502),
    ("bare-lf", b"HTTP/1.1 200 OK\nContent-Length: 0\n\n", 502),
    ("nul", _resp(b"HTTP/1.1 200 OK\nX: \x00\nContent-Length: 0\n"), 502),
    ("http2", _resp(b"HTTP/2.0 200 OK\nContent-Length: 0\n"), 502),
    ("short-status", _resp(b"HTTP/1.1 20 OK\nContent-Length: 0\n"), 502),
    ("status-099", _resp(b"HTTP/1.1 099 Odd\nContent-Length: 0\n"), 502),
    ("status-600", _resp(b"HTTP/1.1 600 Weird\nContent-Length: 0\n"), 502),
    ("status-999", _resp(b"HTTP/1.1 999 Weird\nContent-Length: 0\n"), 502),
    ("switching", _resp(b"HTTP/1.1 101 Switching Protocols\nUpgrade: x\n"), 502),
    ("reason-ctl", _resp(b"HTTP/1.1 200 O\x01K\nContent-Length: 0\n"), 502),
    ("chunk-bad", _resp(b"HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n", b"zz\r\n"), 502),
    # Forbidden trailer fields are left out of a response (its body is on its
    # way already), even ones h11 alone would refuse.
    *(
        (
            f"trailer-{name}",
            _resp(b"HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n", b"0\r\n" + trailer + b"\r\n"),
            None,
        )
        for name, trailer in (
            ("cl", b"Content-Length: 5\r\nX-Sum: 1\r\n"),
            ("cl-bad", b"Content-Length: abc\r\n"),
            ("te", b"Transfer-Encoding: gzip\r\n"),
            ("set-cookie", b"Set-Cookie: t=1\r\n"),
        )
    ),
    ("eof-before-head", b"", 502),
    ("eof-mid-head", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", 502),
    ("eof-mid-body", _resp(b"HTTP/1.1 200 OK\nContent-Length: 5\n", b"hi"), 502),
    ("eof-mid-chunked", _resp(b"HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n", b"5\r\nhi"), 502),
]
