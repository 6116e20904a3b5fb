"""The reference HTTP/1.1 codecs, on h11.

h11 parses every head and body and writes every message; it is the codec the
fast one (:mod:`.httptools_codec`) is measured against. Around it:

- :mod:`.validate` sees each head *before* h11 does and makes every
  accept/reject decision (h11 is lenient where a proxy must not be: bare LF,
  obs-fold, CTLs in values, ``Content-Length: 3, 3``, 17-digit chunk sizes),
  so both codecs refuse alike.
- Framing: h11 is fed exactly one message at a time, its head and then the
  body bytes :mod:`.validate` measured out (a Content-Length count, or what
  :class:`~kernel.protocol.validate.ChunkedDecoder` consumed). Bytes of a
  pipelined next request stay in our buffer, never in h11's, so the next
  head is validated like the first.
- Sending: :func:`~kernel.protocol.http1.plan_response` and the other rules
  in :mod:`.http1` run first; h11 then writes the message and enforces the
  Content-Length. (The rules follow h11, so h11 never disagrees with them.)
  Their field checks (:func:`~kernel.protocol.http1.send_fields`: lower-case
  token names, values without CTLs or surrounding whitespace) are h11's own
  regexes or stricter, so the events are built with h11's ``_parsed=True``,
  which skips its second pass of regexes over every field (~9% of the h11
  path's instructions); h11 still normalizes, frames and checks Host. The
  flag is private: ``pyproject.toml`` pins h11 below 0.17 and
  ``test_h11_codec.py`` fails if a release drops or changes it.
  The framing fields h11 sets in a response head itself are written back
  lower-case and in the fast codec's order (:func:`_as_planned`), so both
  codecs send the same bytes.
- Cost: h11's own machinery is most of this codec's work, so around it the
  codec asks h11 only for events it can have (a body is fed before h11 is
  asked for it), tests h11's events by exact type (``isinstance`` on them
  goes through ``ABCMeta``), reads fields with ``raw_items()`` (iterating
  ``Headers`` is a Python call per field) and sends one shared
  ``EndOfMessage``.

May import: stdlib, h11, kernel.protocol, sdk._errors.
"""

from __future__ import annotations

from typing import Final

import h11

from kernel.protocol import validate as v
from kernel.protocol.codec_state import (
    BODY,
    CLOSED,
    DONE,
    FAILED,
    HEAD,
    IDLE,
    SENDING,
    SENT,
    ClientSide,
    ServerSide,
    Side,
)
from kernel.protocol.events import (
    NEED_DATA,
    ConnectionClosed,
    Data,
    EndOfMessage,
    Fields,
    InformationalResponse,
    RequestHead,
    ResponseHead,
    Sentinel,
)
from kernel.protocol.http1 import (
    CHUNKED,
    Limits,
    asks_websocket,
    plan_response,
    send_fields,
    send_request_check,
    switches_to_websocket,
)
from sdk._errors import LocalProtocolError, RemoteProtocolError

__all__ = ["H11ClientCodec", "H11ServerCodec"]


_H11_CHUNKED: Final = b"\r\nTransfer-Encoding: chunked\r\n"
_H11_CONNECTION: Final = b"\r\nConnection: "
#: The end of a message without trailers: h11's events are immutable, so one
#: serves every message (building one normalizes an empty field list).
_END: Final = h11.EndOfMessage()


def _as_planned(head: bytes) -> bytes:
    """A response head h11 wrote, with the framing fields as the fast codec writes them.

    h11 sets ``Transfer-Encoding: chunked`` itself whenever the body is
    chunked, and ``Connection`` when it knows the connection closes (the
    request said so, or was HTTP/1.0): it removes the fields it was given,
    then appends its own, title-cased (``set_comma_header``), so our
    lower-case ones cannot stop it. They are the fields
    :func:`~kernel.protocol.http1.plan_response` planned, which the fast
    codec writes lower-case with ``transfer-encoding`` last; h11 puts a
    ``Connection`` it set after it. Only h11's own lines are title-cased
    (every field we send is lower-cased) and no line can hold a CR or LF, so
    matching whole lines is exact.
    """
    if _H11_CHUNKED in head:
        head = head.replace(_H11_CHUNKED, b"\r\n", 1)[:-2] + b"transfer-encoding: chunked\r\n\r\n"
    return head.replace(_H11_CONNECTION, b"\r\nconnection: ")


def _fields(head: h11.Request | h11.InformationalResponse | h11.Response) -> Fields:
    """The fields h11 parsed, as iterating its ``headers`` gives them.

    That iteration goes through the ``Sequence`` protocol (a Python call per
    field); ``raw_items()`` is one list of ``(name as received, value)``,
    and h11's lower-case name is ``name.lower()``. h11's parser yields
    ``bytes`` (regex groups), never bytearrays.
    """
    return [(n.lower(), v) for n, v in head.headers.raw_items()]


class _Codec(Side):
    """What both sides share: our buffer and framing, h11's parse and writer."""

    def __init__(self, role: type[h11.CLIENT] | type[h11.SERVER], limits: Limits) -> None:
        self._limits = limits
        # h11 only ever holds one validated message, so its own limit is moot.
        self._role = role
        self._conn = h11.Connection(role, max_incomplete_event_size=1 << 30)
        self._buf = b""
        self._pos = 0
        self._eof = False
        self._eof_fed = False
        self._rstate = HEAD
        self._scanner = v.HeadScanner(limits)
        self._body = 0
        self._chunks: v.ChunkedDecoder | None = None
        self._method = b""
        self._sstate = IDLE
        #: The response being sent is not chunked: its trailers are dropped (as
        #: the fast codec does; a request's trailers must fit its framing).
        self._drops_trailers = False

    def receive_data(self, data: bytes) -> None:
        if not data:
            self._eof = True
        elif self._eof:
            raise LocalProtocolError("data received after EOF")
        else:
            self._buf = self._buf[self._pos :] + data
            self._pos = 0

    def _feed_head(self, end: int) -> h11.Request | h11.InformationalResponse | h11.Response:
        self._conn.receive_data(self._buf[self._pos : end])
        self._pos = end
        event = self._h11_event()
        assert (
            type(event) is h11.Request
            or type(event) is h11.Response
            or type(event) is h11.InformationalResponse
        )
        return event

    def _h11_event(self) -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
        """h11's next event.

        Callers test it with ``type(event) is ...``: h11's events are never
        subclassed ("Don't subclass these"), and ``isinstance`` on them goes
        through ``ABCMeta.__instancecheck__`` (a Python call) unless it is the
        exact class.
        """
        try:
            return self._conn.next_event()
        except h11.RemoteProtocolError as exc:
            # Only reachable if h11 is stricter than validate: a bug to fix there.
            raise RemoteProtocolError(f"h11 refused what validate accepted: {exc}") from None

    def _start_body(self, body: int) -> None:
        self._body = body
        self._chunks = (
            v.ChunkedDecoder(self._limits, refuse_forbidden=self._role is h11.SERVER)
            if body == CHUNKED
            else None
        )
        self._rstate = BODY

    def _read_body(self) -> Data | EndOfMessage | Sentinel:
        if self._chunks is None:
            # Asking h11 for a body it was not given runs its machinery for a
            # NEED_DATA: feed first. Without chunks h11 never holds an event
            # back (one Data takes all it has of the body). A chunked body's
            # fed chunks come out one Data each, and before our decoder reads
            # further (and perhaps refuses what follows): h11 is asked first.
            self._feed_body()
        while True:
            event = self._h11_event()
            if type(event) is h11.Data:
                return Data(bytes(event.data))
            if type(event) is h11.EndOfMessage:
                self._rstate = DONE
                # Trailers come from our decoder: h11 never sees them (below).
                return EndOfMessage(self._chunks.trailers if self._chunks is not None else [])
            if not self._feed_body():
                if self._eof:
                    raise RemoteProtocolError("connection closed in the middle of a body")
                return NEED_DATA

    def _feed_body(self) -> bool:
        """Give h11 the next framed piece of the body; False if none yet."""
        buf = self._buf
        pos = self._pos
        body = self._body
        if body == CHUNKED:
            chunks = self._chunks
            assert chunks is not None
            new = max(chunks.step(buf, pos))
            if new == pos:
                assert not chunks.done, "h11 did not see the end of a chunked body"
                return False
            if chunks.done:
                # h11 gets the body's end without its trailer fields, which the
                # decoder checked (and may have pruned): h11 would judge some
                # of them itself, and not as the fast codec does.
                self._conn.receive_data(buf[pos : chunks.trailers_at] + b"\r\n")
                self._pos = new
                return True
        elif body >= 0:
            new = min(len(buf), pos + body)
            if new == pos:
                return False
            self._body -= new - pos
        elif pos < len(buf):  # UNTIL_CLOSE
            new = len(buf)
        elif self._eof and not self._eof_fed:
            self._eof_fed = True
            self._conn.receive_data(b"")
            return True
        else:
            return False
        self._conn.receive_data(buf[pos:new])
        self._pos = new
        return True

    def _send(self, event: h11.Event) -> bytes:
        try:
            data = self._conn.send(event)
        except h11.LocalProtocolError as exc:
            raise self._send_failed(str(exc)) from None
        assert data is not None
        return data

    def send_data(self, data: bytes) -> bytes:
        if self._sstate != SENDING:
            raise self._send_failed("no body is being sent")
        return self._send(h11.Data(data=data)) if data else b""

    def send_end(self, trailers: Fields | None = None) -> bytes:
        if self._sstate != SENDING:
            raise self._send_failed("no body is being sent")
        if trailers and self._drops_trailers:
            trailers = None  # optional metadata the response's framing cannot carry
        if trailers:
            try:
                send_fields(trailers)
            except LocalProtocolError:
                self._sstate = FAILED
                raise
        data = self._send(h11.EndOfMessage(headers=trailers, _parsed=True) if trailers else _END)
        self._sstate = SENT
        return data


class H11ServerCodec(_Codec, ServerSide):
    """:class:`~kernel.protocol.http1.ServerCodec` on h11."""

    def __init__(self, limits: Limits) -> None:
        super().__init__(h11.SERVER, limits)
        self._version = b""
        self._req_keep_alive = False
        self._keep_alive = False
        self._sent_100 = False

    def _read_head(self) -> RequestHead | ConnectionClosed | Sentinel:
        pos = self._pos = v.skip_empty_lines(self._buf, self._pos)  # as the fast codec
        if pos:
            self._scanner.reset()
            self._buf = self._buf[pos:]
            pos = self._pos = 0
        buf = self._buf
        scanner = self._scanner
        end = scanner.find_end(buf, pos)
        if end < 0:
            if not self._eof:
                return NEED_DATA
            if buf:
                raise RemoteProtocolError("connection closed in the middle of a request head")
            self._rstate = CLOSED
            return ConnectionClosed()
        method, _, version = v.parse_request_line(buf, pos, scanner.line_end)
        v.check_field_block(buf, scanner.line_end + 1, end - 2)
        raw = v.split_fields(buf, scanner.line_end + 1, end - 2)
        body, keep_alive, expect = v.request_framing(method, version, raw, self._limits)
        request = self._feed_head(end)
        assert type(request) is h11.Request
        self._method = method
        self._version = version
        self._req_keep_alive = keep_alive
        self._start_body(body)
        return RequestHead(
            method=bytes(request.method),
            target=bytes(request.target),
            headers=_fields(request),
            http_version=bytes(request.http_version),
            keep_alive=keep_alive,
            expect_continue=expect,
        )

    def send_informational(self, status_code: int, headers: Fields) -> bytes:
        reason = self._informational_reason(status_code, headers)
        event = h11.InformationalResponse(
            status_code=status_code, headers=headers, reason=reason, _parsed=True
        )
        return self._send(event)

    def send_response_head(self, head: ResponseHead) -> bytes:
        if self._sstate != IDLE:
            raise self._send_failed("a response was already started")
        reusable = self._req_keep_alive and self._rstate == DONE
        # A head refused here (a plugin's bad edit) changes nothing: the
        # error page can still go out in its place.
        fields, reason, mode, keep_alive = plan_response(
            head, self._method, self._version, reusable
        )
        data = self._send(
            h11.Response(status_code=head.status_code, headers=fields, reason=reason, _parsed=True)
        )
        data = _as_planned(data)
        self._drops_trailers = mode != CHUNKED
        self._keep_alive = keep_alive
        self._sstate = SENDING
        return data

    def start_next_cycle(self) -> None:
        super().start_next_cycle()
        self._conn.start_next_cycle()


class H11ClientCodec(_Codec, ClientSide):
    """:class:`~kernel.protocol.http1.ClientCodec` on h11."""

    def __init__(self, limits: Limits) -> None:
        super().__init__(h11.CLIENT, limits)
        self._req_keep_alive = False
        self._resp_keep_alive = False
        self._early = False
        self._websocket = False  # the request in flight asks to switch to WebSocket

    def send_request_head(self, head: RequestHead) -> bytes:
        if self._sstate != IDLE:
            raise self._send_failed("a request is already in progress")
        try:
            _, close = send_request_check(head)
        except LocalProtocolError:
            self._sstate = FAILED
            raise
        data = self._send(
            h11.Request(method=head.method, target=head.target, headers=head.headers, _parsed=True)
        )
        self._method = head.method
        self._websocket = asks_websocket(head.method, head.headers)
        self._req_keep_alive = not close
        self._sstate = SENDING
        return data

    def _read_head(self) -> InformationalResponse | ResponseHead | Sentinel:
        buf = self._buf
        pos = self._pos
        scanner = self._scanner
        end = scanner.find_end(buf, pos)
        if end < 0:
            if self._eof:
                raise RemoteProtocolError("connection closed before a complete response")
            v.check_response_start(buf, pos)
            return NEED_DATA
        if self._sstate == IDLE:
            raise RemoteProtocolError("response received before any request was sent")
        status, _, version = v.parse_status_line(buf, pos, scanner.line_end)
        v.check_field_block(buf, scanner.line_end + 1, end - 2)
        raw = v.split_fields(buf, scanner.line_end + 1, end - 2)
        body, keep_alive = v.response_framing(status, version, raw, self._method, self._limits)
        if status == 101:
            if not self._websocket:
                raise RemoteProtocolError("101 Switching Protocols was not asked for")
            if not switches_to_websocket(raw):
                raise RemoteProtocolError("101 to a protocol other than WebSocket")
            # h11 is not told: the connection speaks another protocol now.
            reason = v.parse_status_line(buf, pos, scanner.line_end)[1]
            self._pos = end
            self._rstate = CLOSED
            self._resp_keep_alive = False
            return InformationalResponse(status_code=101, headers=raw, reason=reason)
        response = self._feed_head(end)
        scanner.reset()
        fields = _fields(response)
        if type(response) is h11.InformationalResponse:
            return InformationalResponse(
                status_code=status,
                headers=fields,
                reason=bytes(response.reason),
                http_version=bytes(response.http_version),
            )
        assert type(response) is h11.Response
        self._resp_keep_alive = keep_alive
        self._early = self._sstate != SENT
        self._start_body(body)
        return ResponseHead(
            status_code=status,
            headers=fields,
            reason=bytes(response.reason),
            http_version=bytes(response.http_version),
            keep_alive=keep_alive and self._req_keep_alive,
        )

    def start_next_cycle(self) -> None:
        super().start_next_cycle()
        self._conn.start_next_cycle()
