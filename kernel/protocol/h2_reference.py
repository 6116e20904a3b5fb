"""h2's ``H2Connection`` behind the machine's interface: the reference HTTP/2 engine.

HTTP/2 has two engines, as HTTP/1.1 has two codecs: :class:`.Machine` (ours,
the default, ``[server.h2] engine = "trellis"``) and :class:`H2Engine`, the
python-hyper ``h2`` library (``engine = "h2"``), which the design notes name
for HTTP/2. Both take the same whole frames from :class:`.H2Core` and report
the same events; the protocol tests run against both.

What differs is what h2 decides alone: it makes some stream errors
connection errors (a frame on a stream it closed, DATA beyond a stream
window) and keeps no memory of why a stream closed. Its own GOAWAY is
dropped: :class:`.H2Core` sends ours for the :class:`.H2Error` raised here.

May import: stdlib, h2, kernel.protocol.h2_common, .h2_frames, .hpack_encoder,
.hpack_decoder, sdk._errors.
"""

from __future__ import annotations

from collections.abc import Iterable

import h2.events as ev
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.exceptions import ProtocolError
from h2.settings import SettingCodes, Settings

from kernel.protocol.h2_common import H2_PREFACE
from kernel.protocol.h2_frames import (
    ENABLE_PUSH,
    MAX_CONCURRENT_STREAMS,
    MAX_HEADER_LIST_SIZE,
    Data,
    Ended,
    Event,
    H2Error,
    Head,
    Reset,
    SettingsChanged,
    Trailers,
    Window,
    frame,
)
from kernel.protocol.hpack_decoder import Decoder
from kernel.protocol.hpack_encoder import Encoder
from sdk._errors import LocalProtocolError

__all__ = ["H2Engine"]

#: What h2 must know before the peer acknowledges anything: it enforces these
#: from the start (the others wait for the ACK, as the machine's do).
_AT_ONCE = (ENABLE_PUSH, MAX_CONCURRENT_STREAMS, MAX_HEADER_LIST_SIZE)


def _fields(headers: Iterable[tuple[bytes | str, bytes | str]]) -> list[tuple[bytes, bytes]]:
    # Bytes: h2 decodes nothing (header_encoding=None).
    return [(name, value) for name, value in headers]  # type: ignore[misc]


class H2Engine:
    """h2 doing what :class:`.Machine` does (same methods, same events)."""

    def __init__(self, client: bool) -> None:
        self.client = client
        # Fields are validated and normalised by h2_fields: h2's own checks
        # would make a malformed request a connection error.
        config = H2Configuration(
            client_side=client,
            header_encoding=None,
            validate_inbound_headers=False,
            normalize_inbound_headers=False,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        self._h2 = h2 = H2Connection(config)
        self.encoder = h2.encoder = Encoder()  # type: ignore[assignment]
        self.decoder = h2.decoder = Decoder()  # type: ignore[assignment]
        self.out = bytearray()
        self._preface = not client  # h2 wants the client preface H2Core skipped

    # -- what H2Core reads -------------------------------------------------------------
    @property
    def highest_inbound_stream_id(self) -> int:
        return self._h2.highest_inbound_stream_id

    @property
    def highest_outbound_stream_id(self) -> int:
        return self._h2.highest_outbound_stream_id

    @property
    def max_inbound_frame_size(self) -> int:
        return self._h2.max_inbound_frame_size

    @property
    def max_outbound_frame_size(self) -> int:
        return self._h2.max_outbound_frame_size

    @property
    def remote_max_concurrent_streams(self) -> int:
        return self._h2.remote_settings.max_concurrent_streams

    # -- set-up ------------------------------------------------------------------------
    def initiate(self, settings: dict[int, int]) -> None:
        h2 = self._h2
        first = {SettingCodes(k): v for k, v in settings.items() if k in _AT_ONCE}
        h2.local_settings = Settings(client=self.client, initial_values=first)
        h2.initiate_connection()
        if not self.client:
            # h2 makes a stream over its limit a connection error; we refuse
            # it (REFUSED_STREAM, H2Server), so h2 itself gets no limit.
            first[SettingCodes.MAX_CONCURRENT_STREAMS] = 2**31 - 1
            h2.local_settings = Settings(client=False, initial_values=first)
        later: dict[SettingCodes | int, int] = {
            SettingCodes(k): v for k, v in settings.items() if k not in _AT_ONCE
        }
        if later:
            h2.update_settings(later)
        self._drain()

    def open_connection_window(self, n: int) -> None:
        if n > 0:
            self._h2.increment_flow_control_window(n)
            self._drain()

    # -- receiving ---------------------------------------------------------------------
    def receive(
        self, ftype: int, flags: int, sid: int, payload: bytes | bytearray, events: list[Event]
    ) -> None:
        data = frame(ftype, flags, sid, bytes(payload))
        if self._preface:
            data, self._preface = H2_PREFACE + data, False
        self._drain()
        try:
            h2_events = self._h2.receive_data(data)
        except ProtocolError as e:
            self._h2.data_to_send()  # h2's GOAWAY: H2Core sends its own
            raise H2Error(int(e.error_code), f"h2: {e}") from e
        ended_with_head: set[int] = set()
        for event in h2_events:
            sid = getattr(event, "stream_id", None) or 0
            if isinstance(event, ev.RequestReceived | ev.ResponseReceived):
                end = event.stream_ended is not None
                if end:
                    ended_with_head.add(sid)
                events.append(Head(sid, _fields(event.headers or ()), end, False))
            elif isinstance(event, ev.InformationalResponseReceived):
                events.append(Head(sid, _fields(event.headers or ()), False, True))
            elif isinstance(event, ev.DataReceived):
                flow = event.flow_controlled_length or 0
                events.append(Data(sid, event.data or b"", flow))
            elif isinstance(event, ev.TrailersReceived):
                events.append(Trailers(sid, _fields(event.headers or ())))
            elif isinstance(event, ev.StreamEnded):
                if sid not in ended_with_head:
                    events.append(Ended(sid))
            elif isinstance(event, ev.StreamReset):
                events.append(Reset(sid, int(event.error_code or 0), event.remote_reset))
            elif isinstance(event, ev.WindowUpdated):
                events.append(Window(sid))
            elif isinstance(event, ev.RemoteSettingsChanged):
                change = event.changed_settings.get(SettingCodes.INITIAL_WINDOW_SIZE)
                grew = change is not None and change.new_value > (change.original_value or 0)
                events.append(SettingsChanged(grew))
        self._drain()

    # -- sending -----------------------------------------------------------------------
    def next_stream_id(self) -> int:
        return self._h2.get_next_available_stream_id()

    def send_headers(
        self,
        sid: int,
        fields: Iterable[tuple[bytes, bytes] | tuple[bytes, bytes, bool]],
        end_stream: bool = False,
    ) -> None:
        try:
            self._h2.send_headers(sid, list(fields), end_stream=end_stream)  # type: ignore[arg-type]
        except ProtocolError as e:
            raise LocalProtocolError(f"h2 refused to send: {e}") from e
        self._drain()

    def send_data(self, sid: int, data: bytes, end_stream: bool = False) -> None:
        try:
            if data:
                self._h2.send_data(sid, data, end_stream=end_stream)
            elif end_stream:
                self._h2.end_stream(sid)
        except ProtocolError as e:
            raise LocalProtocolError(f"h2 refused to send: {e}") from e
        self._drain()

    def reset_stream(self, sid: int, code: int) -> None:
        try:
            self._h2.reset_stream(sid, code)
        except ProtocolError:
            return  # over already
        self._drain()

    def send_window(self, sid: int) -> int:
        try:
            return max(0, self._h2.local_flow_control_window(sid))
        except ProtocolError:
            return 0

    def acknowledge(self, sid: int, n: int) -> None:
        try:
            self._h2.acknowledge_received_data(n, sid)
        except (ProtocolError, ValueError):
            pass  # a stream h2 never knew
        self._drain()

    def _drain(self) -> None:
        self.out += self._h2.data_to_send()
