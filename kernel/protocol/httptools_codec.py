"""The fast HTTP/1.1 codecs: llhttp (through httptools) parses field lines.

This is the hot path, so it is written for speed: one buffer (``bytes`` plus
an offset, so a body read is handed on without copying), heads located with
``bytes.find``, one parser call per head, messages written with ``b"".join``.

Division of labour. :mod:`.validate` frames every message: it finds where a
head ends, checks the start line, the framing fields and the size limits,
and decodes the chunked coding. llhttp only parses the field lines of a
head, which it validates strictly (CTLs, bare CR/LF, obs-fold, bad names):
exactly what :func:`.validate.check_field_block` refuses, as a test holds it
to. It also reads a few values itself (Content-Length, Transfer-Encoding,
Connection); where that is stricter than RFC 9110 (``chunked<HTAB>``), a
leniency flag leaves the decision to :mod:`.validate`, and the differential
test's grid of those fields with every OWS keeps the two codecs in step.
llhttp is fed a canned status line (``304``) plus the real field lines, so
its method table, URL parser and version rules never decide anything, and it
never frames a body (a 304 has none). If it did, we could not know where a
message ends in our buffer, which pipelining needs, and it would switch away
from HTTP after an ``Upgrade`` request, which we treat as an ordinary request
(as h11 does). As every head ends its message there, one parser serves the
whole process, head after head.

May import: stdlib, httptools, kernel.protocol, sdk._errors.
"""

from __future__ import annotations

from typing import Final

from httptools import HttpParserError, HttpResponseParser

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
    NO_BODY,
    UNTIL_CLOSE,
    Limits,
    asks_websocket,
    plan_response,
    send_fields,
    send_request_check,
    switches_to_websocket,
)
from sdk._errors import LocalProtocolError, RemoteProtocolError

__all__ = ["HttptoolsClientCodec", "HttptoolsServerCodec"]


#: What llhttp reads before the field lines of every head, request or
#: response (the field-line grammar is one): a 304 never has a body, so llhttp
#: completes the message at the blank line, whatever the fields say about
#: framing or upgrades, and the same parser takes the next head.
_START: Final = b"HTTP/1.1 304 Not Modified\r\n"


class _Collector:
    """llhttp's callback target: the field lines of the head being parsed."""

    __slots__ = ("fields",)

    def __init__(self) -> None:
        self.fields: Fields = []

    def on_header(self, name: bytes, value: bytes) -> None:
        # llhttp calls this once per field line; it strips leading OWS only.
        self.fields.append((name.lower(), value.rstrip(b" \t")))


def _new_parser() -> HttpResponseParser:
    parser = HttpResponseParser(_COLLECTOR)
    # Transfer-Encoding is validate's decision (request_framing); llhttp's
    # own check refuses legal OWS such as "chunked\t", which h11 accepts.
    # Connection: close must not end the parser's life: it parses heads of
    # many connections, one after another.
    parser.set_dangerous_leniencies(lenient_transfer_encoding=True, lenient_keep_alive=True)
    return parser


#: One parser for the process: parsing a head is one synchronous call, so
#: heads never interleave, and a parser per message cost ~0.5 µs to make.
_COLLECTOR = _Collector()
_parser = _new_parser()


def _parse_fields(block: bytes) -> Fields:
    """The field lines of a head (``block``: from after the start line to
    the blank line included), names lower-cased, trailing OWS dropped."""
    global _parser
    fields: Fields = []
    _COLLECTOR.fields = fields
    try:
        _parser.feed_data(_START + block)
    except HttpParserError:
        # A failed llhttp parses nothing more, and a used one may fail where
        # a fresh one would not: it keeps some state from message to message
        # (after a "Connection: close" head its Content-Length digits pile
        # up until they overflow, so every 3rd-20th valid head was refused).
        # Only a fresh parser's refusal counts.
        _parser = _new_parser()
        fields.clear()
        try:
            _parser.feed_data(_START + block)
        except HttpParserError as exc:
            _parser = _new_parser()
            raise RemoteProtocolError(f"malformed header field line ({exc})") from None
    return fields


def _head(start: bytes, fields: Fields) -> bytes:
    parts = [start]
    for name, value in fields:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


class _Codec(Side):
    """What both sides share: the receive buffer and body reading, the
    sending of bodies and the send state."""

    __slots__ = ("_body", "_chunks", "_eof", "_limits", "_mode")

    #: The server side. It sends responses, whose trailers are optional
    #: metadata (RFC 9110 §6.5): dropped when the framing cannot carry them
    #: (Content-Length, or close-delimited to HTTP/1.0); a request's must fit.
    #: It receives requests, which forbidden trailer fields fail (400); in a
    #: response they are left out (see ChunkedDecoder).
    _SERVER = False

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._buf = b""
        self._pos = 0
        self._eof = False
        self._rstate = HEAD
        self._scanner = v.HeadScanner(limits)
        self._body = 0  # remaining Content-Length, or CHUNKED / UNTIL_CLOSE
        self._chunks: v.ChunkedDecoder | None = None
        self._method = b""
        self._sstate = IDLE
        self._mode = NO_BODY  # what send_data may write: a count, CHUNKED, ...

    def receive_data(self, data: bytes) -> None:
        if not data:
            self._eof = True
        elif self._eof:
            raise LocalProtocolError("data received after EOF")
        elif self._pos >= len(self._buf):
            self._buf = data
            self._pos = 0
        else:
            self._buf = self._buf[self._pos :] + data
            self._pos = 0

    def _start_body(self, body: int) -> None:
        self._body = body
        self._chunks = (
            v.ChunkedDecoder(self._limits, refuse_forbidden=self._SERVER)
            if body == CHUNKED
            else None
        )
        self._rstate = BODY

    def _read_body(self) -> Data | EndOfMessage | Sentinel:
        buf = self._buf
        pos = self._pos
        body = self._body
        if body > 0:
            n = len(buf) - pos
            if n:
                if n > body:
                    n = body
                self._body = body - n
                self._pos = pos + n
                return Data(buf if n == len(buf) else buf[pos : pos + n])
        elif body == 0:
            self._rstate = DONE
            return EndOfMessage()
        elif body == CHUNKED:
            chunks = self._chunks
            assert chunks is not None
            start, end = chunks.step(buf, pos)
            self._pos = end
            if end > start:
                return Data(buf[start:end])
            if chunks.done:
                self._rstate = DONE
                return EndOfMessage(chunks.trailers)
        elif len(buf) > pos:  # UNTIL_CLOSE: everything until EOF
            self._pos = len(buf)
            return Data(buf[pos:] if pos else buf)
        elif self._eof:
            self._rstate = DONE
            return EndOfMessage()
        if self._eof:
            raise RemoteProtocolError("connection closed in the middle of a body")
        return NEED_DATA

    def send_data(self, data: bytes) -> bytes:
        mode = self._mode
        if self._sstate != SENDING:
            raise self._send_failed("no body is being sent")
        if not data:
            return b""
        if mode == CHUNKED:
            return b"".join((b"%x\r\n" % len(data), data, b"\r\n"))
        if mode >= 0:
            if len(data) > mode:
                raise self._send_failed("more data than the declared Content-Length")
            self._mode = mode - len(data)
            return data
        if mode == UNTIL_CLOSE:
            return data
        raise self._send_failed("this message has no body")

    def send_end(self, trailers: Fields | None = None) -> bytes:
        mode = self._mode
        if self._sstate != SENDING:
            raise self._send_failed("no body is being sent")
        out = b""
        if mode == CHUNKED:
            if trailers:
                try:
                    send_fields(trailers)
                except LocalProtocolError:
                    self._sstate = FAILED
                    raise
                out = _head(b"0\r\n", trailers)
            else:
                out = b"0\r\n\r\n"
        elif trailers and not self._SERVER:
            raise self._send_failed("trailers need a chunked body")
        elif mode > 0:
            raise self._send_failed("less data than the declared Content-Length")
        self._sstate = SENT
        return out


class HttptoolsServerCodec(_Codec, ServerSide):
    """:class:`~kernel.protocol.http1.ServerCodec` on llhttp."""

    __slots__ = ()

    _SERVER = True

    def __init__(self, limits: Limits) -> None:
        super().__init__(limits)
        self._version = b""  # of the current request; b"" until a head parsed
        self._req_keep_alive = False
        self._keep_alive = False
        self._sent_100 = False

    def _read_head(self) -> RequestHead | ConnectionClosed | Sentinel:
        buf = self._buf
        pos = self._pos
        if pos >= len(buf):  # the idle keep-alive case
            if self._eof:
                self._rstate = CLOSED
                return ConnectionClosed()
            return NEED_DATA
        if buf[pos] == 0x0D:  # RFC 9112 §2.2: skip empty lines before a request
            skipped = v.skip_empty_lines(buf, pos)
            if skipped != pos:
                pos = self._pos = skipped
                self._scanner.reset()
        scanner = self._scanner
        end = scanner.find_end(buf, pos)
        if end < 0:
            if not self._eof:
                return NEED_DATA
            if pos < len(buf):
                raise RemoteProtocolError("connection closed in the middle of a request head")
            self._rstate = CLOSED
            return ConnectionClosed()
        method, target, version = v.parse_request_line(buf, pos, scanner.line_end)
        fields = _parse_fields(buf[scanner.line_end + 1 : end])
        body, keep_alive, expect = v.request_framing(method, version, fields, self._limits)
        self._pos = end
        self._method = method
        self._version = version
        self._req_keep_alive = keep_alive
        self._start_body(body)
        return RequestHead(
            method=method,
            target=target,
            headers=fields,
            http_version=version,
            keep_alive=keep_alive,
            expect_continue=expect,
        )

    def send_informational(self, status_code: int, headers: Fields) -> bytes:
        reason = self._informational_reason(status_code, headers)
        return _head(b"HTTP/1.1 %d %s\r\n" % (status_code, reason), headers)

    def send_response_head(self, head: ResponseHead) -> bytes:
        if self._sstate != IDLE:
            raise self._send_failed("a response was already started")
        reusable = self._req_keep_alive and self._rstate == DONE
        # A head refused here (a plugin's bad edit) changes nothing: the
        # error page can still go out in its place.
        fields, reason, self._mode, self._keep_alive = plan_response(
            head, self._method, self._version, reusable
        )
        self._sstate = SENDING
        return _head(b"HTTP/1.1 %d %s\r\n" % (head.status_code, reason), fields)


class HttptoolsClientCodec(_Codec, ClientSide):
    """:class:`~kernel.protocol.http1.ClientCodec` on llhttp."""

    __slots__ = ("_websocket",)

    def __init__(self, limits: Limits) -> None:
        super().__init__(limits)
        self._req_keep_alive = False
        self._resp_keep_alive = False
        self._early = False  # the response came before the request was sent
        self._websocket = False  # the request in flight asks to switch to WebSocket

    def send_request_head(self, head: RequestHead) -> bytes:
        if self._sstate != IDLE:
            raise self._send_failed("a request is already in progress")
        try:
            declared, close = send_request_check(head)
        except LocalProtocolError:
            self._sstate = FAILED
            raise
        self._method = head.method
        self._mode = 0 if declared is None else declared
        self._req_keep_alive = not close
        self._websocket = asks_websocket(head.method, head.headers)
        self._sstate = SENDING
        fields = head.headers
        if fields and fields[0][0] != b"host" and any(n == b"host" for n, _ in fields):
            # RFC 9110 §7.2: Host first, as h11 writes it (the kernel's own
            # requests have it there already).
            fields = [f for f in fields if f[0] == b"host"] + [f for f in fields if f[0] != b"host"]
        return _head(b"%s %s HTTP/1.1\r\n" % (head.method, head.target), fields)

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
        status, reason, version = v.parse_status_line(buf, pos, scanner.line_end)
        fields = _parse_fields(buf[scanner.line_end + 1 : end])
        body, keep_alive = v.response_framing(status, version, fields, self._method, self._limits)
        if status == 101:
            if not self._websocket:
                raise RemoteProtocolError("101 Switching Protocols was not asked for")
            if not switches_to_websocket(fields):
                raise RemoteProtocolError("101 to a protocol other than WebSocket")
            self._pos = end
            self._rstate = CLOSED  # the connection speaks another protocol now
            self._resp_keep_alive = False
            return InformationalResponse(status_code=101, headers=fields, reason=reason)
        self._pos = end
        scanner.reset()
        if status < 200:
            return InformationalResponse(
                status_code=status, headers=fields, reason=reason, http_version=version
            )
        self._resp_keep_alive = keep_alive
        self._early = self._sstate != SENT
        self._start_body(body)
        return ResponseHead(
            status_code=status,
            headers=fields,
            reason=reason,
            http_version=version,
            keep_alive=keep_alive and self._req_keep_alive,
        )
