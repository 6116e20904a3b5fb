"""What both HTTP/1.1 codecs keep about a connection, apart from their parsers.

:mod:`.h11_codec` and :mod:`.httptools_codec` parse and write with different
engines, but the state around the engine is one: where receiving and
sending stand (the constants below), when a connection may carry another
message, what a server or client side answers before its parser is asked.
That part lives here, once: :class:`Side` is the base of each codec's own
base class, and a codec class lists one of the two mixins *after* that base
(so the base's ``_read_body`` comes first in the MRO):

- :class:`ServerSide`: ``keep_alive``, ``request_method``, ``buffered``,
  ``next_event``, the checks before an interim response,
  ``start_next_cycle``;
- :class:`ClientSide`: ``keep_alive``, ``next_event`` (every failure is the
  upstream's: 502), ``start_next_cycle``.

A codec provides the attributes the mixins read (``_rstate``, ``_sstate``,
``_buf``, ``_pos``, ...) and the parser-specific ``_read_head`` and
``_read_body``.

May import: stdlib, kernel.protocol, sdk._errors.
"""

from __future__ import annotations

from typing import Final

from kernel.protocol.events import (
    PAUSED,
    ConnectionClosed,
    Data,
    EndOfMessage,
    Fields,
    InformationalResponse,
    RequestHead,
    ResponseHead,
    Sentinel,
)
from kernel.protocol.http1 import check_informational
from kernel.protocol.validate import HeadScanner
from sdk._errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "BODY",
    "CLOSED",
    "DONE",
    "ERROR",
    "FAILED",
    "HEAD",
    "IDLE",
    "SENDING",
    "SENT",
    "ClientSide",
    "ServerSide",
    "Side",
]

# Receive states.
HEAD: Final = 0
BODY: Final = 1
DONE: Final = 2  # message complete: PAUSED until start_next_cycle
CLOSED: Final = 3  # ConnectionClosed returned (or the connection switched protocols)
ERROR: Final = 4
# Send states.
IDLE: Final = 0
SENDING: Final = 1
SENT: Final = 2
FAILED: Final = 3


class Side:
    """What both sides of both codecs answer the same way (a codec's base class)."""

    # Every field the mixins below read or set, for both sides: a slot a
    # side does not use costs a pointer, and one layout serves both mixins.
    __slots__ = (
        "_buf", "_early", "_keep_alive", "_method", "_pos", "_req_keep_alive",
        "_resp_keep_alive", "_rstate", "_scanner", "_sent_100", "_sstate", "_version",
    )  # fmt: skip

    _buf: bytes
    _pos: int
    _rstate: int
    _sstate: int
    _method: bytes
    _scanner: HeadScanner

    def trailing_data(self) -> bytes:
        return self._buf[self._pos :]

    def _send_failed(self, message: str) -> LocalProtocolError:
        """The sending side is dead after this; the error to raise."""
        self._sstate = FAILED
        return LocalProtocolError(message)

    def _read_body(self) -> Data | EndOfMessage | Sentinel:
        raise NotImplementedError  # the codec's base provides it


class ServerSide(Side):
    """The server side's state: requests in, responses out."""

    __slots__ = ()

    _version: bytes
    _req_keep_alive: bool
    _keep_alive: bool
    _sent_100: bool

    @property
    def keep_alive(self) -> bool:
        if self._sstate == IDLE:
            return self._req_keep_alive
        return self._keep_alive and self._sstate != FAILED

    @property
    def request_method(self) -> bytes:
        return self._method

    @property
    def buffered(self) -> bool:
        return self._pos < len(self._buf)

    def next_event(self) -> RequestHead | Data | EndOfMessage | ConnectionClosed | Sentinel:
        state = self._rstate
        try:
            if state == BODY:
                return self._read_body()
            if state == HEAD:
                return self._read_head()
        except RemoteProtocolError:
            self._rstate = ERROR
            self._req_keep_alive = self._keep_alive = False
            raise
        if state == DONE:
            return PAUSED
        if state == CLOSED:
            return ConnectionClosed()
        raise RemoteProtocolError("the connection already failed")

    def _read_head(self) -> RequestHead | ConnectionClosed | Sentinel:
        raise NotImplementedError  # the codec provides it

    def _informational_reason(self, status_code: int, headers: Fields) -> bytes:
        """Check an interim response may go out now; its reason phrase."""
        if self._sstate != IDLE:
            raise LocalProtocolError("the final response has already started")
        reason = check_informational(status_code, headers, self._version, self._sent_100)
        self._sent_100 = self._sent_100 or status_code == 100
        return reason

    def start_next_cycle(self) -> None:
        """Check the exchange is over and the connection reusable; reset for the next."""
        if self._rstate != DONE or self._sstate != SENT or not self._keep_alive:
            raise LocalProtocolError("the connection cannot carry another request")
        self._rstate = HEAD
        self._sstate = IDLE
        self._scanner.reset()
        self._sent_100 = False


class ClientSide(Side):
    """The client side's state: requests out, responses in."""

    __slots__ = ()

    _req_keep_alive: bool
    _resp_keep_alive: bool
    _early: bool

    @property
    def keep_alive(self) -> bool:
        # Bytes past the end of the response (a second response, a body longer
        # than announced) must never be taken for the next request's answer
        # (RFC 9112 §6.3): such a connection is not reused.
        return (
            self._req_keep_alive
            and self._resp_keep_alive
            and not self._early
            and self._sstate == SENT
            and self._pos == len(self._buf)
        )

    def next_event(self) -> InformationalResponse | ResponseHead | Data | EndOfMessage | Sentinel:
        state = self._rstate
        try:
            if state == BODY:
                return self._read_body()
            if state == HEAD:
                return self._read_head()
            if state == DONE:
                return PAUSED
            raise RemoteProtocolError("the connection already failed")
        except RemoteProtocolError as exc:
            self._rstate = ERROR
            # Whatever the upstream did wrong, our client sees a 502.
            raise RemoteProtocolError(exc.message, status_hint=502) from None

    def _read_head(self) -> InformationalResponse | ResponseHead | Sentinel:
        raise NotImplementedError  # the codec provides it

    def start_next_cycle(self) -> None:
        """Check the response is over and the connection reusable; reset for the next."""
        if self._rstate != DONE or not self.keep_alive:
            raise LocalProtocolError("the connection cannot carry another request")
        self._rstate = HEAD
        self._sstate = IDLE
        self._scanner.reset()
