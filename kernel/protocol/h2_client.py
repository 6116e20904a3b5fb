"""The client side of HTTP/2: one upstream connection, sans-IO.

The upstream pool makes an :class:`H2Client` per connection (ALPN ``h2``, or
h2c with prior knowledge), calls :meth:`~H2Client.initiate`, and opens one
stream per flow with :meth:`~H2Client.send_request` while
``available_streams`` allows. The response comes back as
:class:`.StreamInformational`, :class:`.StreamResponse`, :class:`.StreamData`
(acknowledge with ``ack_data`` once relayed) and :class:`.StreamEnd`.

A response is validated like a request (:func:`.response_from_h2`); a bad one
becomes :class:`.StreamReset` with ``remote=False``, and the shell answers 502.
After the upstream's GOAWAY (:class:`.ConnectionEnding` with ``remote``),
``is_usable`` is false; streams it did not process were reset with
REFUSED_STREAM and are safe to send again on another connection.

May import: stdlib, kernel.protocol.events, kernel.protocol.h2_*,
sdk._errors.
"""

from __future__ import annotations

from kernel.protocol.events import Fields, RequestHead, ResponseHead
from kernel.protocol.h2_common import StreamInformational, StreamReset, StreamResponse
from kernel.protocol.h2_core import Stream
from kernel.protocol.h2_endpoint import H2Endpoint
from kernel.protocol.h2_fields import (
    request_fields,
    response_from_h2,
    sent_length,
)
from kernel.protocol.h2_frames import PROTOCOL_ERROR, REFUSED_STREAM, Head
from sdk._errors import LocalProtocolError, RemoteProtocolError

__all__ = ["H2Client"]

_LAST_ID = 2**31 - 1


class H2Client(H2Endpoint):
    """One HTTP/2 connection to an upstream; streams are requests we send."""

    _client = True

    @property
    def is_usable(self) -> bool:
        """May a new request go on this connection? (No GOAWAY either way,
        no error, stream ids left.)"""
        return (
            not self._ended
            and not self._goaway_received
            and self._goaway_last is None
            and self._conn.highest_outbound_stream_id + 2 <= _LAST_ID
        )

    @property
    def available_streams(self) -> int:
        """Streams we may open now: the peer's limit (and ours) minus open ones."""
        if not self.is_usable:
            return 0
        peer = self._conn.remote_max_concurrent_streams
        return max(0, min(peer, self.limits.max_concurrent_streams) - len(self._streams))

    def send_request(
        self, head: RequestHead, scheme: bytes, authority: bytes, end_stream: bool
    ) -> int:
        """Open a stream with ``head``; returns its id.

        ``:authority`` is ``authority`` (``host`` is dropped), connection-specific
        fields too, ``te`` survives only as ``trailers``. A ``content-length``
        is held to. Raises :class:`LocalProtocolError` when no stream is
        available (check ``available_streams``) or the head cannot be sent.
        """
        if self.available_streams <= 0:
            raise LocalProtocolError("no stream available on this connection")
        headers = request_fields(head, scheme, authority)
        expected = sent_length(headers)
        if end_stream and expected:
            raise LocalProtocolError("content-length without a body")
        stream_id = self._conn.next_stream_id()
        self._conn.send_headers(stream_id, headers, end_stream=end_stream)
        st = Stream(head.method, head_sent=True, got_head=False)
        st.send_expected = expected
        st.send_done = end_stream
        self._streams[stream_id] = st
        return stream_id

    # -- receiving -------------------------------------------------------------------
    def _on_head(self, event: Head) -> None:
        if event.informational:
            self._on_informational(event.stream_id, event.fields)
        else:
            self._on_response(event.stream_id, event.fields, event.end_stream)

    def _parse(self, stream_id: int, fields: Fields) -> tuple[int, Fields, int | None] | None:
        try:
            return response_from_h2(fields, max_list_size=self.limits.max_header_list_size)
        except RemoteProtocolError as e:
            self._reset_stream(stream_id, PROTOCOL_ERROR, e.message)
            return None

    def _on_informational(self, stream_id: int, fields: Fields) -> None:
        if stream_id not in self._streams:
            return
        parsed = self._parse(stream_id, fields)
        if parsed is not None:
            self._events.append(StreamInformational(stream_id, parsed[0], parsed[1]))

    def _on_response(self, stream_id: int, fields: Fields, end_stream: bool) -> None:
        st = self._streams.get(stream_id)
        if st is None:
            return  # we reset it already
        parsed = self._parse(stream_id, fields)
        if parsed is None:
            return
        status, regular, length = parsed
        if status < 200:
            self._reset_stream(stream_id, PROTOCOL_ERROR, "malformed informational response")
            return
        bodyless = st.method == b"HEAD" or status in (204, 304)
        st.expected = 0 if bodyless else length
        if end_stream and st.expected:
            self._reset_stream(stream_id, PROTOCOL_ERROR, "content-length without a body")
            return
        st.got_head = True
        head = ResponseHead(status, regular, http_version=b"2")
        self._events.append(StreamResponse(stream_id, head, end_stream))
        if end_stream:
            st.recv_done = True
            if st.send_done:
                self._forget(stream_id)

    def _on_goaway(self, last: int, code: int, debug: bytes) -> None:
        # Streams above ``last`` were never processed: retryable (RFC 9113 §6.8).
        for sid in [s for s in self._streams if s > last]:
            self._reset_stream_quietly(sid)
        super()._on_goaway(last, code, debug)

    def _reset_stream_quietly(self, stream_id: int) -> None:
        reason = "not processed by the peer (GOAWAY)"
        self._events.append(StreamReset(stream_id, REFUSED_STREAM, remote=True, reason=reason))
        self._forget(stream_id)
