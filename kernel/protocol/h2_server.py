"""The server side of HTTP/2: one client connection, sans-IO.

The I/O shell detects the h2c preface (:func:`.looks_like_h2_preface`) or
ALPN ``h2``, makes an :class:`H2Server`, calls :meth:`~H2Server.initiate`,
then loops: ``receive_data(bytes, now)`` -> events, write ``data_to_send()``.
Each :class:`.StreamRequest` starts a flow, exactly like an HTTP/1.1 request
head; its body arrives as :class:`.StreamData` (acknowledge each with
``ack_data`` once consumed) and :class:`.StreamEnd`. The response goes out
with ``send_response``, ``send_data`` (bounded by the windows: wait for
:class:`.WindowOpen` for the rest) and ``send_end``.

What a hostile client can make this layer do is bounded by :class:`.H2Limits`
(concurrency, header sizes, flood budgets, outbound buffer); what it can make
the *shell* do is the shell's to bound: one handler task per open stream (at
most ``max_concurrent_streams``), cancelled on :class:`.StreamReset`, and the
idle / header timeouts (a client that trickles a header block or never reads
is not our business here: we have no clock of our own).

May import: stdlib, kernel.protocol.events, kernel.protocol.h2_*,
sdk._errors.
"""

from __future__ import annotations

from kernel.protocol.events import Fields
from kernel.protocol.h2_common import StreamRefused, StreamRequest
from kernel.protocol.h2_core import Stream
from kernel.protocol.h2_endpoint import H2Endpoint
from kernel.protocol.h2_fields import (
    request_from_h2,
    response_fields,
    salvage_request_head,
    sent_length,
)
from kernel.protocol.h2_frames import ENHANCE_YOUR_CALM, NO_ERROR, REFUSED_STREAM, Head
from sdk._errors import LocalProtocolError, RemoteProtocolError

__all__ = ["H2Server"]


class H2Server(H2Endpoint):
    """One HTTP/2 connection from a client.

    Requests are validated per stream (:func:`.request_from_h2`): a
    malformed one becomes :class:`.StreamRefused` for the shell to answer,
    never a connection error. A stream over ``max_concurrent_streams`` gets
    RST_STREAM REFUSED_STREAM. Floods end the connection with GOAWAY
    ENHANCE_YOUR_CALM and a :class:`.ConnectionEnding`.

    Once our response is complete, a request still arriving is cut short
    with RST_STREAM NO_ERROR (RFC 9113 §8.1): nobody would read the rest.
    """

    _client = False

    # -- sending ---------------------------------------------------------------------
    def send_informational(self, stream_id: int, status: int, fields: Fields) -> None:
        """A 1xx response (100 Continue, 103 Early Hints; never 101)."""
        if not 100 <= status < 200:
            raise LocalProtocolError("an informational status is 1xx")
        st = self._head_stream(stream_id)
        if st is not None:
            self._conn.send_headers(stream_id, response_fields(status, fields))

    def send_response(
        self, stream_id: int, status: int, fields: Fields, end_stream: bool = False
    ) -> None:
        """The final response head; names are lower-cased and connection,
        keep-alive, proxy-connection, transfer-encoding, upgrade and te dropped.

        A response to HEAD, a 204 and a 304 take no body; otherwise a
        ``content-length`` is held to (``send_data``/``send_end`` raise
        :class:`LocalProtocolError`). A stream that is gone is a no-op.
        """
        if status < 200:
            raise LocalProtocolError("use send_informational for 1xx")
        st = self._head_stream(stream_id)
        if st is None:
            return
        headers = response_fields(status, fields)
        st.no_body = st.method == b"HEAD" or status in (204, 304)
        st.send_expected = None if st.no_body else sent_length(headers)
        if end_stream and st.send_expected:
            raise LocalProtocolError("content-length without a body")
        self._conn.send_headers(stream_id, headers, end_stream=end_stream)
        st.head_sent = True
        if end_stream:
            self._sent_end(stream_id, st)

    def _head_stream(self, stream_id: int) -> Stream | None:
        if self._ended:
            return None
        st = self._streams.get(stream_id)
        if st is not None and st.head_sent:
            raise LocalProtocolError("the response head was already sent")
        return st

    def _sent_end(self, stream_id: int, st: Stream) -> None:
        st.send_done = True
        if not st.recv_done:
            self._conn.reset_stream(stream_id, NO_ERROR)
        self._forget(stream_id)

    # -- receiving -------------------------------------------------------------------
    def _on_head(self, event: Head) -> None:
        self._on_request(event.stream_id, event.fields, event.end_stream)

    def _on_request(self, stream_id: int, fields: Fields, end_stream: bool) -> None:
        lim = self.limits
        late = self._goaway_last is not None and stream_id > self._goaway_last
        if late or len(self._streams) >= lim.max_concurrent_streams:
            self._conn.reset_stream(stream_id, REFUSED_STREAM)
            if not self._guard.resets.take(self._now):
                self._fatal(ENHANCE_YOUR_CALM, "too many refused streams")
            return
        st = Stream(head_sent=False, got_head=True)
        st.recv_done = end_stream
        self._streams[stream_id] = st
        try:
            req = request_from_h2(
                fields, end_stream=end_stream, max_list_size=lim.max_header_list_size
            )
        except RemoteProtocolError as e:
            st.refused = True
            head = salvage_request_head(fields)
            self._events.append(StreamRefused(stream_id, e.status_hint, e.message, head))
            return
        head = req.head
        if len(head.method) + len(head.target) + 10 > lim.max_request_line:
            refusal = 414, "request line too long"
        elif len(head.headers) > lim.max_header_count:
            refusal = 431, "too many header fields"
        else:
            refusal = None
        if refusal is not None:
            st.refused = True
            self._events.append(StreamRefused(stream_id, *refusal, head))
            return
        st.method = head.method
        st.expected = req.content_length
        self._events.append(
            StreamRequest(stream_id, req.head, req.scheme, req.authority, end_stream)
        )
