"""The HTTP/1.1 codec interface: what the I/O shell may ask of a codec.

Two implementations sit behind it, as in uvicorn: :mod:`.h11_codec` (h11, the
reference) and :mod:`.httptools_codec` (llhttp, the fast one). Both are
sans-IO: bytes go in through ``receive_data`` and come out of ``send_*``; the
caller owns the socket. Both make every accept/reject decision through
:mod:`.validate`, so they agree on what a hostile peer may send; a differential
test (``tests/kernel/protocol/test_differential.py``) holds them to it.

Rules every codec follows (the kernel relies on them):

- ``receive_data`` is only called after ``next_event`` returned ``NEED_DATA``,
  with at most one socket read (<= 64 KiB), so a codec buffers at most one
  head or one read. ``b""`` means the peer closed its side.
- A server codec returns ``PAUSED`` after a request's ``EndOfMessage`` until
  ``start_next_cycle``; pipelined bytes stay buffered and are parsed then.
- ``Data`` events are never empty; chunked framing is removed; trailers come
  in ``EndOfMessage``.
- ``next_event`` raises :class:`sdk._errors.RemoteProtocolError` on bad input,
  with ``status_hint`` 400/413/414/431/501/505 on the server side and 502 on
  the client side. After that the receiving side is dead.
- ``send_*`` raise :class:`sdk._errors.LocalProtocolError` when asked to send
  something HTTP/1.1 does not allow (more body than Content-Length, a body on
  a HEAD response, ...). After that the sending side is dead.

The second half of this module is those sending rules, as functions both
codecs call (:func:`plan_response` and friends): they follow h11's choices,
which the h11 codec gets from h11 itself, so the two write alike.

May import: stdlib, attrs, kernel.protocol.events, sdk._errors. The two codec
modules are imported lazily by the factories, so importing this module never
needs httptools.
"""

from __future__ import annotations

import importlib.util
import re
from http import HTTPStatus
from typing import Final, Literal, Protocol

import attrs

from kernel.protocol.events import (
    ConnectionClosed,
    Data,
    EndOfMessage,
    Fields,
    InformationalResponse,
    RequestHead,
    ResponseHead,
    Sentinel,
)
from sdk._errors import LocalProtocolError

__all__ = [
    "CHUNKED",
    "GOOD_NAMES",
    "GOOD_VALUES",
    "LOWER_NAME",
    "NO_BODY",
    "TCHAR",
    "TOKEN",
    "UNTIL_CLOSE",
    "VALUE",
    "ClientCodec",
    "CodecKind",
    "Limits",
    "ServerCodec",
    "asks_websocket",
    "check_informational",
    "make_client_codec",
    "make_server_codec",
    "plan_response",
    "reason_phrase",
    "remember",
    "resolve_kind",
    "send_fields",
    "send_request_check",
    "switches_to_websocket",
    "tokens",
    "with_close",
]

#: Body framings, besides a byte count (an int >= 0).
CHUNKED: Final = -1
UNTIL_CLOSE: Final = -2  # HTTP/1.0 style: the body ends when the connection does
NO_BODY: Final = -3  # HEAD, 1xx, 204, 304 (sending side)

#: RFC 9110 §5.6.2 token, as a regex and as the set of its characters.
TOKEN: Final = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
TCHAR: Final = frozenset(
    b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)

#: What ``[server] http1`` may say. ``"auto"`` means httptools when importable.
CodecKind = Literal["auto", "h11", "httptools"]


@attrs.frozen(kw_only=True)
class Limits:
    """Size limits on what a peer may send; each breach has its own status.

    Sizes are in bytes and count what is on the wire. Both codecs apply them
    at the same points (:mod:`.validate`), including while a head is still
    incomplete, so a slow peer cannot make us buffer more than these.
    """

    #: Request-line (or status-line) length without its CRLF; above it: 414.
    max_request_line: int = attrs.field(default=8192, validator=attrs.validators.ge(1))
    #: The field lines of a head (or trailer section), CRLFs included; above it: 431.
    max_header_bytes: int = attrs.field(default=65536, validator=attrs.validators.ge(1))
    #: The number of field lines in a head or trailer section; above it: 431.
    max_header_count: int = attrs.field(default=100, validator=attrs.validators.ge(1))
    #: Body size; 0 means unlimited. A larger Content-Length is refused at
    #: head time, a chunked body as soon as its chunk sizes pass it: 413.
    max_body_bytes: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    #: Chunk extensions (everything after the hex size on a chunk-size line);
    #: above it: 400. Nobody uses extensions; they are only a way to make us buffer.
    max_chunk_ext: int = attrs.field(default=4096, validator=attrs.validators.ge(0))


class ServerCodec(Protocol):
    """One per client connection: parses requests, frames responses."""

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes from the client; ``b""`` means it closed its side."""

    def next_event(self) -> RequestHead | Data | EndOfMessage | ConnectionClosed | Sentinel:
        """The next request event, ``NEED_DATA`` or ``PAUSED``.

        ``ConnectionClosed`` only comes between requests; EOF inside a message
        raises :class:`RemoteProtocolError` (400).
        """
        ...

    def send_informational(self, status_code: int, headers: Fields) -> bytes:
        """A 1xx interim response (100 at most once, never to HTTP/1.0, never 101)."""
        ...

    def send_response_head(self, head: ResponseHead) -> bytes:
        """The final response head, with framing and ``connection`` fixed up.

        ``content-length`` is used and enforced when present. Otherwise the body
        is chunked for an HTTP/1.1 client, close-delimited for HTTP/1.0. HEAD
        requests and 1xx/204/304 statuses get a head only.
        """
        ...

    def send_data(self, data: bytes) -> bytes:
        """Frame a piece of the response body (``b""`` is a no-op)."""
        ...

    def send_end(self, trailers: Fields | None = None) -> bytes:
        """End the response body; trailers need a chunked body."""
        ...

    def start_next_cycle(self) -> None:
        """Get ready for the next request (after EndOfMessage and send_end)."""

    @property
    def keep_alive(self) -> bool:
        """May the connection carry another request after this cycle?"""
        ...

    @property
    def request_method(self) -> bytes:
        """The method of the current request (``b""`` before the first head)."""
        ...

    def trailing_data(self) -> bytes:
        """Received bytes not parsed yet (after a request we switch protocols for)."""
        ...

    @property
    def buffered(self) -> bool:
        """Received bytes are waiting to be parsed.

        After ``NEED_DATA`` between requests this tells an idle keep-alive
        connection (False) from one where the next head has begun to arrive
        (True: its head deadline is running).
        """
        ...


class ClientCodec(Protocol):
    """One per upstream connection: frames requests, parses responses."""

    def send_request_head(self, head: RequestHead) -> bytes:
        """The request head as given; ``content-length`` or
        ``transfer-encoding: chunked`` (or neither: no body) sets the framing.

        A request that :func:`asks_websocket` may be answered ``101``: then
        ``next_event`` returns that InformationalResponse, the codec is done
        with the connection, and :meth:`trailing_data` has what followed it.
        """
        ...

    def trailing_data(self) -> bytes:
        """Received bytes not parsed yet (after a 101: the new protocol's first bytes)."""
        ...

    def send_data(self, data: bytes) -> bytes:
        """Frame a piece of the request body (``b""`` is a no-op)."""
        ...

    def send_end(self, trailers: Fields | None = None) -> bytes:
        """End the request body; trailers need a chunked body."""
        ...

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes from the upstream; ``b""`` means it closed its side."""

    def next_event(
        self,
    ) -> InformationalResponse | ResponseHead | Data | EndOfMessage | Sentinel:
        """The next response event, ``NEED_DATA`` or ``PAUSED`` (after the end)."""
        ...

    def start_next_cycle(self) -> None:
        """Get ready to send the next request on this connection."""

    @property
    def keep_alive(self) -> bool:
        """May the connection carry another request after this cycle?

        Never when bytes came after the response's end: they are no answer
        to the next request (RFC 9112 §6.3).
        """
        ...


def resolve_kind(kind: CodecKind) -> Literal["h11", "httptools"]:
    """Turn ``"auto"`` into the codec we will really use."""
    if kind == "auto":
        return "httptools" if importlib.util.find_spec("httptools") is not None else "h11"
    if kind not in ("h11", "httptools"):
        raise ValueError(f"unknown HTTP/1.1 codec {kind!r}")
    return kind


def make_server_codec(kind: CodecKind, limits: Limits) -> ServerCodec:
    """A fresh server codec of the requested kind."""
    if resolve_kind(kind) == "httptools":
        from kernel.protocol.httptools_codec import HttptoolsServerCodec

        return HttptoolsServerCodec(limits)
    from kernel.protocol.h11_codec import H11ServerCodec

    return H11ServerCodec(limits)


def make_client_codec(kind: CodecKind, limits: Limits | None = None) -> ClientCodec:
    """A fresh client codec of the requested kind (default limits if None)."""
    limits = Limits() if limits is None else limits
    if resolve_kind(kind) == "httptools":
        from kernel.protocol.httptools_codec import HttptoolsClientCodec

        return HttptoolsClientCodec(limits)
    from kernel.protocol.h11_codec import H11ClientCodec

    return H11ClientCodec(limits)


# -- what a codec agrees to send (both codecs call these) ----------------------------
#: A field name as it travels inside the kernel (the :data:`Fields` contract)
#: and on HTTP/2: a lower-case token (RFC 9110 §5.1, RFC 9113 §8.2.1).
LOWER_NAME: Final = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-z]+")
#: A field value we send, or take from HTTP/2: no CTL but HTAB, no leading or
#: trailing whitespace (RFC 9110 §5.5, RFC 9113 §8.2.1).
VALUE: Final = re.compile(rb"(?:[\x21-\x7e\x80-\xff](?:[\t\x20-\x7e\x80-\xff]*+(?<![ \t]))?)?")
_METHOD = re.compile(TOKEN)
_TARGET = re.compile(rb"[\x21-\x7e]+")
_REASON = re.compile(rb"[\t\x20-\x7e\x80-\xff]*+")
_REASONS: Final = {s.value: s.phrase.encode("ascii") for s in HTTPStatus}
#: Names and values that matched :data:`LOWER_NAME` / :data:`VALUE` before.
#: They repeat from message to message (and from HTTP/1.1 to HTTP/2: the rules
#: are the same), so a set lookup replaces the regex; bounded by
#: :func:`remember`. Halves the cost of checking a head.
GOOD_NAMES: set[bytes] = set()
GOOD_VALUES: set[bytes] = set()


def asks_websocket(method: bytes, fields: Fields) -> bool:
    """Whether a request asks to switch to WebSocket (RFC 6455 §4.1).

    A GET whose ``Connection`` names ``upgrade`` and whose ``Upgrade`` names
    ``websocket`` (case-insensitively). Other upgrades are never honoured:
    the request sent on names only ``websocket``, whatever else the client
    listed, and a ``101`` must switch to it (:func:`switches_to_websocket`).
    """
    return method == b"GET" and switches_to_websocket(fields)


def switches_to_websocket(fields: Fields) -> bool:
    """Whether ``Connection`` names ``upgrade`` and ``Upgrade`` names ``websocket``."""
    connection = upgrade = False
    for name, value in fields:
        if name == b"connection":
            connection = connection or b"upgrade" in tokens(value)
        elif name == b"upgrade":
            upgrade = upgrade or any(t.split(b"/")[0] == b"websocket" for t in tokens(value))
    return connection and upgrade


def tokens(value: bytes) -> list[bytes]:
    """The lower-cased elements of a comma-separated list field (RFC 9110 §5.6.1)."""
    return [t.strip(b" \t") for t in value.lower().split(b",")]


def send_fields(fields: Fields) -> tuple[int | None, bool, int]:
    """Check fields we are about to send: ``(declared framing, says close, Hosts)``.

    The framing is ``None`` without Content-Length and Transfer-Encoding, the
    length for Content-Length, :data:`CHUNKED` for ``chunked``. Refused:
    a name that is not a lower-case token (the :data:`Fields` contract), a
    value with CTLs or surrounding whitespace (RFC 9110 §5.5), ambiguous framing.
    """
    length: int | None = None
    close = False
    hosts = 0
    for name, value in fields:
        if name not in GOOD_NAMES:
            if LOWER_NAME.fullmatch(name) is None:
                raise LocalProtocolError(f"invalid header name {name!r}")
            remember(GOOD_NAMES, name)
        if value not in GOOD_VALUES:
            if VALUE.fullmatch(value) is None:
                raise LocalProtocolError(f"invalid value for header {name!r}: {value!r}")
            remember(GOOD_VALUES, value)
        if name == b"content-length":
            if length is not None or not value.isdigit() or len(value) > 18:
                raise LocalProtocolError("invalid or ambiguous Content-Length")
            length = int(value)
        elif name == b"transfer-encoding":
            if length is not None or value.lower() != b"chunked":
                raise LocalProtocolError("only one Transfer-Encoding: chunked is allowed")
            length = CHUNKED
        elif name == b"connection":
            close = close or b"close" in tokens(value)
        elif name == b"host":
            hosts += 1
    return length, close, hosts


def remember(good: set[bytes], item: bytes) -> None:
    """Add ``item`` to :data:`GOOD_NAMES` or :data:`GOOD_VALUES`, within bounds.

    At most 4,096 items of at most 256 bytes each: a peer sending ever new
    values fills the set once (about 1 MiB at worst), and from then on it
    only stops remembering.
    """
    if len(good) < 4096 and len(item) <= 256:
        good.add(item)


def send_request_check(head: RequestHead) -> tuple[int | None, bool]:
    """:func:`send_fields` plus the request line and h11's Host rule."""
    if head.http_version != b"1.1":
        raise LocalProtocolError("we only send HTTP/1.1 requests")
    if _METHOD.fullmatch(head.method) is None or _TARGET.fullmatch(head.target) is None:
        raise LocalProtocolError(f"invalid request line {head.method!r} {head.target!r}")
    length, close, hosts = send_fields(head.headers)
    if hosts != 1:
        raise LocalProtocolError("a request needs exactly one Host header")
    return length, close


def reason_phrase(status: int, reason: bytes) -> bytes:
    """The reason to send: the standard phrase when empty, else checked."""
    if not reason:
        return _REASONS.get(status, b"")
    if _REASON.fullmatch(reason) is None:
        raise LocalProtocolError(f"invalid reason phrase {reason!r}")
    return reason


def with_close(fields: Fields) -> Fields:
    """``fields`` saying ``connection: close``, as h11 writes it.

    The Connection tokens minus ``keep-alive`` plus ``close``, sorted, one
    field line each, after the other fields (h11's ``set_comma_header``).
    """
    names = {b"close"}
    rest: Fields = []
    for field in fields:
        if field[0] == b"connection":
            names.update(t for t in tokens(field[1]) if t)
        else:
            rest.append(field)
    names.discard(b"keep-alive")
    rest.extend((b"connection", t) for t in sorted(names))
    return rest


def check_informational(status: int, headers: Fields, version: bytes, sent_100: bool) -> bytes:
    """Refuse a 1xx we may not send; else return its reason phrase.

    Never 101 (no upgrades), never to HTTP/1.0 (RFC 9110 §15.2), 100 at most
    once, and no framing fields.
    """
    if (
        not 100 <= status < 200
        or status == 101
        or version != b"1.1"
        or (status == 100 and sent_100)
        or send_fields(headers)[0] is not None
    ):
        raise LocalProtocolError(f"cannot send a {status} interim response now")
    return reason_phrase(status, b"")


def plan_response(
    head: ResponseHead, method: bytes, version: bytes, reusable: bool
) -> tuple[Fields, bytes, int, bool]:
    """Fields, reason, body framing and keep-alive of a final response.

    ``method`` and ``version`` are the request's (``b""`` when no head was
    parsed: refused). ``reusable``: the request allows keep-alive *and* was
    read to its end (else the connection closes after this response: the
    simple answer to an unread body, e.g. after ignoring 100-continue).

    The framing follows h11 (``_clean_up_response_headers_for_sending``): a
    Content-Length is kept and enforced; without one the body is chunked for
    HTTP/1.1, close-delimited for HTTP/1.0; HEAD, 204 and 304 have no body,
    and a HEAD response gets the framing fields a GET would have had. A
    ``transfer-encoding: chunked`` from the kernel just means "length unknown".
    """
    status = head.status_code
    if not 200 <= status < 1000 or not version:
        raise LocalProtocolError(f"cannot send a {status} response now")
    if method == b"CONNECT" and status < 300:  # RFC 9110 §9.3.6
        raise LocalProtocolError("a 2xx to CONNECT opens a tunnel: not supported")
    declared, close, _ = send_fields(head.headers)
    reason = reason_phrase(status, head.reason)
    fields = head.headers
    if declared == CHUNKED:
        fields = [f for f in fields if f[0] != b"transfer-encoding"]
        declared = None
    http11 = version == b"1.1"
    if status == 204 and declared is not None:
        # RFC 9110 §8.6: never a Content-Length on a 204 (a 304 may repeat the GET's).
        fields = [f for f in fields if f[0] != b"content-length"]
        declared = None
    if method == b"HEAD" or status in (204, 304):
        mode = NO_BODY
    elif declared is not None:
        mode = declared
    else:
        mode = CHUNKED if http11 else UNTIL_CLOSE
    keep_alive = reusable and head.keep_alive and not close and mode != UNTIL_CLOSE
    if not keep_alive:
        fields = with_close(fields)
    if declared is None and http11 and status not in (204, 304):
        fields = [*fields, (b"transfer-encoding", b"chunked")]
    return fields, reason, mode, keep_alive
