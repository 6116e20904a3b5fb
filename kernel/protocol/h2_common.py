"""HTTP/2 vocabulary shared by :mod:`.h2_server` and :mod:`.h2_client`.

The two sides are sans-IO (frames and streams: :mod:`.h2_machine`): the I/O shell
feeds them socket bytes through ``receive_data(data, now)``, gets a list of the
events below, and writes ``data_to_send()`` to the socket. Each stream is one
flow through the same pipeline as an HTTP/1.1 exchange, which is why requests
and responses arrive as the HTTP/1.1 heads of :mod:`.events`
(:class:`RequestHead`, :class:`ResponseHead`) with ``http_version=b"2"``.

What lives here: :class:`H2Limits` (sizes, windows and flood budgets), the
events, :class:`RateBudget` (the token bucket behind every flood budget),
and the h2c prior-knowledge preface helpers. Elsewhere: the field rules in
:mod:`.h2_fields`, the frame checks made before the engine parses anything in
:mod:`.h2_guard`, what both sides share in :mod:`.h2_core` (receiving) and
:mod:`.h2_endpoint` (sending), the sides in :mod:`.h2_server` and
:mod:`.h2_client`.

Flow control is end to end: we never acknowledge received DATA on our own.
The shell calls ``ack_data(stream_id, flow_length)`` once a :class:`StreamData`
was consumed downstream of us, and only then does the peer get its window
back. A slow consumer therefore slows the peer, within one stream window
(and the connection window across streams).

May import: stdlib, attrs, kernel.protocol.events.
"""

from __future__ import annotations

from typing import Final

import attrs

from kernel.protocol.events import Fields, RequestHead, ResponseHead

__all__ = [
    "H2_PREFACE",
    "ConnectionEnding",
    "H2Event",
    "H2Limits",
    "RateBudget",
    "StreamData",
    "StreamEnd",
    "StreamInformational",
    "StreamRefused",
    "StreamRequest",
    "StreamReset",
    "StreamResponse",
    "WindowOpen",
    "looks_like_h2_preface",
]

#: What an h2c client with prior knowledge sends first (RFC 9113 §3.4).
H2_PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def looks_like_h2_preface(prefix: bytes) -> bool | None:
    """Does a connection that starts with ``prefix`` speak HTTP/2?

    ``None`` while ``prefix`` is a (possibly empty) proper prefix of the
    preface: read more. The shell decides on the first bytes of a cleartext
    connection; ``Upgrade: h2c`` is never honoured.
    """
    n = min(len(prefix), len(H2_PREFACE))
    if prefix[:n] != H2_PREFACE[:n]:
        return False
    return True if n == len(H2_PREFACE) else None


def _pos(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 1:
        raise ValueError(f"{attribute.name} must be at least 1")


@attrs.frozen(kw_only=True)
class H2Limits:
    """What one HTTP/2 connection may cost us; both sides use the same kind.

    Sizes are in bytes. The flood budgets are token buckets
    (:class:`RateBudget`): each holds ``*_budget`` tokens and refills at
    ``*_budget / budget_window_s`` per second, so the budget is both the
    largest burst and the sustained rate over the window. A peer that goes
    over any of them gets GOAWAY ENHANCE_YOUR_CALM.
    """

    #: SETTINGS_MAX_CONCURRENT_STREAMS we advertise (server); the most streams
    #: we open (client). A stream over it is refused with REFUSED_STREAM.
    max_concurrent_streams: int = attrs.field(default=100, validator=_pos)
    #: SETTINGS_MAX_HEADER_LIST_SIZE we advertise (RFC 9113 §6.5.2 size:
    #: names + values + 32 per field). A request over it is answered 431; the
    #: HPACK decoder stops at twice this (connection error), and so does the
    #: encoded size of one header block (HEADERS + CONTINUATION).
    max_header_list_size: int = attrs.field(default=65536, validator=_pos)
    #: SETTINGS_HEADER_TABLE_SIZE: the dynamic table of *our* HPACK decoder.
    header_table_size: int = attrs.field(default=4096, validator=attrs.validators.ge(0))
    #: SETTINGS_INITIAL_WINDOW_SIZE: how much each stream may send unacknowledged.
    initial_window_size: int = attrs.field(
        default=65535, validator=attrs.validators.and_(_pos, attrs.validators.le(2**31 - 1))
    )
    #: The connection receive window (a WINDOW_UPDATE right after SETTINGS);
    #: HTTP/2 cannot make it smaller than 65535.
    connection_window: int = attrs.field(
        default=1 << 20,
        validator=attrs.validators.and_(attrs.validators.ge(65535), attrs.validators.le(2**31 - 1)),
    )
    #: SETTINGS_MAX_FRAME_SIZE; a larger frame header ends the connection at
    #: once (FRAME_SIZE_ERROR) instead of being buffered (h2 would buffer it).
    max_frame_size: int = attrs.field(
        default=16384,
        validator=attrs.validators.and_(attrs.validators.ge(16384), attrs.validators.le(2**24 - 1)),
    )
    #: Rapid reset (CVE-2023-44487): streams the peer cancels (RST_STREAM)
    #: before we finished them, plus streams we refuse (over the concurrency
    #: limit, or after our GOAWAY). A browser cancels at most its in-flight
    #: streams at once (<= 100); 200 allows two such bursts, 20/s sustained,
    #: and cuts an attack after 200 wasted flows (server side only).
    reset_budget: int = attrs.field(default=200, validator=_pos)
    #: Frames that make us work or answer but carry no request: SETTINGS and
    #: PING needing an ACK, PRIORITY, GOAWAY, RST_STREAM on finished streams,
    #: unknown frame types (CVE-2019-9512/9515). Real peers send a handful,
    #: BDP-probing ones a few per second; 100/s sustained is far above that.
    control_budget: int = attrs.field(default=1000, validator=_pos)
    #: DATA frames with no data and no END_STREAM (CVE-2019-9518): useless.
    empty_data_budget: int = attrs.field(default=100, validator=_pos)
    #: The window the three budgets above are counted over, in seconds.
    budget_window_s: float = attrs.field(default=10.0, validator=attrs.validators.gt(0))
    #: CONTINUATION frames in one header block. h2 allows 64 frames of up to
    #: max_frame_size (1 MiB buffered); encoders fill frames, so a block of
    #: 2 x 64 KiB needs 8 at 16 KiB: 16 leaves room for small-frame peers.
    max_continuation_frames: int = attrs.field(default=16, validator=attrs.validators.ge(0))
    #: Bytes queued for the socket above which ``outbound_pressure`` is true
    #: and ``send_window`` shrinks to 0: the shell writes before it reads more.
    max_outbound_buffer: int = attrs.field(default=256 * 1024, validator=_pos)
    #: A request's line as HTTP/1.1 would write it (method, target, version),
    #: over which it is answered 414: the HTTP/1.1 listener's limit, so that
    #: a request cannot reach an upstream through HTTP/2 that the same
    #: listener refuses over HTTP/1.1 (server side only).
    max_request_line: int = attrs.field(default=8192, validator=_pos)
    #: Fields in a request (after cookies are joined), over which it is
    #: answered 431; the HTTP/1.1 listener's limit too (server side only).
    max_header_count: int = attrs.field(default=100, validator=_pos)


class RateBudget:
    """A token bucket: ``capacity`` tokens, refilled over ``window_s`` seconds.

    Time is whatever the caller passes as ``now`` (monotonic seconds), so
    tests are deterministic; time going backwards refills nothing.
    """

    __slots__ = ("_capacity", "_last", "_rate", "_tokens")

    def __init__(self, capacity: int, window_s: float) -> None:
        self._capacity = float(capacity)
        self._rate = capacity / window_s
        self._tokens = float(capacity)
        self._last: float | None = None

    def take(self, now: float) -> bool:
        """Spend one token; False (and nothing spent) when the bucket is empty."""
        last = self._last
        if last is None or now > last:
            if last is not None:
                self._tokens = min(self._capacity, self._tokens + (now - last) * self._rate)
            self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


# -- events ------------------------------------------------------------------------


@attrs.frozen(slots=True)
class StreamRequest:
    """A client opened a stream with a valid request (server side).

    ``head.target`` is ``:path``; ``host`` (from ``:authority``) is the first
    field. With ``end_stream`` the request has no body and no
    :class:`StreamEnd` follows.
    """

    stream_id: int
    head: RequestHead
    scheme: bytes
    authority: bytes
    end_stream: bool


@attrs.frozen(slots=True)
class StreamRefused:
    """A malformed request whose header block we could decode (server side).

    The shell answers it with ``status`` (400; 414 or 431 over a limit; 501
    for CONNECT) and never forwards it. Its body, if any, is discarded (and
    acknowledged) by us; no other event comes for the stream except a
    :class:`StreamReset` if the client gives up. ``head`` is what can be
    told of the request, for its flow (logs, metrics): the whole head when
    only a limit refused it, else the method, path and authority that were
    valid (:func:`.h2_fields.salvage_request_head`).
    """

    stream_id: int
    status: int
    reason: str
    head: RequestHead | None = attrs.field(default=None, eq=False)


@attrs.frozen(slots=True)
class StreamResponse:
    """The final response head on a stream we opened (client side).

    With ``end_stream`` the response has no body and no :class:`StreamEnd`
    follows.
    """

    stream_id: int
    head: ResponseHead
    end_stream: bool


@attrs.frozen(slots=True)
class StreamInformational:
    """A 1xx interim response (client side; never 101, which HTTP/2 forbids)."""

    stream_id: int
    status: int
    fields: Fields


@attrs.frozen(slots=True)
class StreamData:
    """Body bytes, in order, never empty.

    ``flow_length`` counts padding too: pass it to ``ack_data`` once the data
    was consumed, which gives the peer its window back.
    """

    stream_id: int
    data: bytes
    flow_length: int


@attrs.frozen(slots=True)
class StreamEnd:
    """The peer finished its side of the stream; ``trailers`` may be empty."""

    stream_id: int
    trailers: Fields = attrs.field(factory=list)


@attrs.frozen(slots=True)
class StreamReset:
    """The stream is dead: cancel whatever works for it.

    ``remote``: the peer sent RST_STREAM (or its GOAWAY or EOF left the stream
    unfinished). Otherwise we reset it because the peer broke the protocol on
    that stream (bad trailers, DATA beyond ``content-length``, a malformed
    response): on the client side the shell answers 502. An error code of
    REFUSED_STREAM from the peer means it did not process the request, which
    is safe to retry (RFC 9113 §8.7).
    """

    stream_id: int
    error_code: int
    remote: bool
    reason: str = ""


@attrs.frozen(slots=True)
class WindowOpen:
    """A stream (``stream_id``) or the whole connection (0) may send again.

    Only sent for streams that ``send_data``/``send_window`` left waiting,
    at most once per stream per ``receive_data``.
    """

    stream_id: int


@attrs.frozen(slots=True)
class ConnectionEnding:
    """The connection is going away; after ours, ``receive_data`` returns nothing.

    ``remote``: the peer sent GOAWAY (or closed the socket). Streams of ours
    with an id above ``last_stream_id`` were not processed by the peer and are
    safe to retry elsewhere (a StreamReset REFUSED_STREAM was emitted for each);
    the others may finish when ``error_code`` is 0 (graceful shutdown).
    Otherwise we ended it (flood, protocol error): every open stream got a
    :class:`StreamReset` first, and the GOAWAY is in ``data_to_send()``; write
    it and close. On the client side ``last_stream_id`` is then our highest
    stream: none is known to be unprocessed.
    """

    error_code: int
    reason: str
    last_stream_id: int
    remote: bool = False


H2Event = (
    StreamRequest
    | StreamRefused
    | StreamResponse
    | StreamInformational
    | StreamData
    | StreamEnd
    | StreamReset
    | WindowOpen
    | ConnectionEnding
)
