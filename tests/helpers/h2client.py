"""HTTP/2 clients for tests: a well-behaved one (h2) and a raw frame writer (hyperframe).

:class:`H2Client` drives the ``h2`` library over a trio stream (h2c prior
knowledge, or TLS with ALPN ``h2``). Its outbound header validation is off,
so tests can send exactly the fields they want (CR/LF in a value, upper-case
names, ``connection``) and see what the proxy does with them. Responses are
collected per stream in :class:`StreamResult`.

:class:`RawH2` writes hand-made frames (floods, CONTINUATION games, more
streams than allowed) that h2 itself would refuse to send, and parses what
comes back into hyperframe frames, so a test can look for the GOAWAY and its
error code.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterable
from typing import Any

import attrs
import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import hpack
import trio
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    RstStreamFrame,
    SettingsFrame,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
GOAWAY_TYPE = 0x7
Fields = list[tuple[bytes, bytes]]

# RFC 9113 §7 error codes.
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
REFUSED_STREAM = 0x7
CANCEL = 0x8
ENHANCE_YOUR_CALM = 0xB


def request_fields(
    method: bytes = b"GET",
    path: bytes = b"/",
    *,
    authority: bytes | None = b"example.test",
    scheme: bytes = b"http",
    extra: Iterable[tuple[bytes, bytes]] = (),
) -> Fields:
    fields: Fields = [(b":method", method), (b":scheme", scheme)]
    if authority is not None:
        fields.append((b":authority", authority))
    fields.append((b":path", path))
    fields.extend(extra)
    return fields


async def open_stream(
    port: int,
    *,
    tls: ssl.SSLContext | None = None,
    server_hostname: str = "localhost",
) -> trio.abc.Stream:
    """A TCP connection to the proxy, wrapped in TLS (handshake done) when asked."""
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    if tls is None:
        return tcp
    stream = trio.SSLStream(tcp, tls, server_hostname=server_hostname)
    await stream.do_handshake()
    return stream


@attrs.define
class StreamResult:
    """What came back on one stream."""

    status: int | None = None
    headers: Fields = attrs.field(factory=list)
    body: bytearray = attrs.field(factory=bytearray)
    trailers: Fields = attrs.field(factory=list)
    informational: list[int] = attrs.field(factory=list)
    ended: bool = False
    #: The RST_STREAM error code, when the stream was reset (by either side).
    reset: int | None = None

    @property
    def done(self) -> bool:
        return self.ended or self.reset is not None

    def header(self, name: bytes) -> bytes | None:
        for n, v in self.headers:
            if n == name:
                return v
        return None


class H2Client:
    """One client connection driven by h2; call :meth:`start` first."""

    def __init__(self, stream: trio.abc.Stream, *, auto_ack: bool = True) -> None:
        self.stream = stream
        config = h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
            validate_inbound_headers=False,
        )
        self.conn = h2.connection.H2Connection(config)
        #: Give the window back as soon as DATA arrives (else: :meth:`ack`).
        self.auto_ack = auto_ack
        self.streams: dict[int, StreamResult] = {}
        #: The server's GOAWAY, if one came.
        self.goaway: GoAwayFrame | None = None
        self._inbuf = bytearray()
        #: The server closed the connection (EOF or reset).
        self.closed = False
        #: Flow-controlled bytes received and not acknowledged yet, per stream.
        self.unacked: dict[int, int] = {}
        self.events: list[h2.events.Event] = []

    @classmethod
    async def connect(
        cls,
        port: int,
        *,
        tls: ssl.SSLContext | None = None,
        server_hostname: str = "localhost",
        auto_ack: bool = True,
        settings: dict[int, int] | None = None,
        connection_window: int | None = None,
    ) -> H2Client:
        client = cls(
            await open_stream(port, tls=tls, server_hostname=server_hostname), auto_ack=auto_ack
        )
        await client.start(settings, connection_window=connection_window)
        return client

    async def start(
        self, settings: dict[int, int] | None = None, *, connection_window: int | None = None
    ) -> None:
        if settings:
            self.conn.local_settings = h2.settings.Settings(
                client=True,
                initial_values={h2.settings.SettingCodes(k): v for k, v in settings.items()},
            )
        self.conn.initiate_connection()
        if connection_window is not None and connection_window > 65535:
            self.conn.increment_flow_control_window(connection_window - 65535)
        await self.flush()

    async def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            await self.stream.send_all(data)

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            await self.stream.aclose()

    async def __aenter__(self) -> H2Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- requests -------------------------------------------------------------
    async def request(
        self,
        method: bytes = b"GET",
        path: bytes = b"/",
        *,
        fields: Fields | None = None,
        extra: Iterable[tuple[bytes, bytes]] = (),
        body: bytes | None = None,
        trailers: Fields | None = None,
        end: bool = True,
        authority: bytes | None = b"example.test",
    ) -> int:
        """Open a stream; ``fields`` replaces the whole header list when given."""
        sid = self.conn.get_next_available_stream_id()
        if fields is None:
            fields = request_fields(method, path, authority=authority, extra=extra)
        no_body = body is None and trailers is None and end
        self.conn.send_headers(sid, fields, end_stream=no_body)
        self.streams[sid] = StreamResult()
        if body is not None:
            self.conn.send_data(sid, body, end_stream=end and trailers is None)
        if trailers is not None:
            self.conn.send_headers(sid, trailers, end_stream=True)
        elif body is None and not no_body and end:
            self.conn.end_stream(sid)
        await self.flush()
        return sid

    async def send_data(self, sid: int, data: bytes, *, end: bool = False) -> None:
        self.conn.send_data(sid, data, end_stream=end)
        await self.flush()

    async def reset(self, sid: int, code: int = CANCEL) -> None:
        self.conn.reset_stream(sid, code)
        await self.flush()

    async def send_raw(self, *frames: Frame) -> None:
        """Frames h2 does not know about (its state is not updated)."""
        await self.stream.send_all(b"".join(f.serialize() for f in frames))

    async def ack(self, sid: int, n: int | None = None) -> None:
        """Give back ``n`` (default: all unacknowledged) bytes of a stream's window."""
        n = self.unacked.get(sid, 0) if n is None else n
        if n:
            self.unacked[sid] -= n
            self.conn.acknowledge_received_data(n, sid)
            await self.flush()

    # -- responses ------------------------------------------------------------
    async def receive_once(self) -> bool:
        """One read from the socket, its events applied; False once the server closed."""
        if self.closed:
            return False
        try:
            data = await self.stream.receive_some(65536)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        if not data:
            self.closed = True
            return False
        # GOAWAY never reaches h2, which would take it for the end of the
        # connection: a graceful one lets the streams in flight finish.
        self._inbuf += data
        feed = bytearray()
        while len(self._inbuf) >= 9:
            length = int.from_bytes(self._inbuf[:3], "big")
            if len(self._inbuf) < 9 + length:
                break
            frame = bytes(self._inbuf[: 9 + length])
            del self._inbuf[: 9 + length]
            if frame[3] == GOAWAY_TYPE:
                goaway, _ = Frame.parse_frame_header(memoryview(frame[:9]))
                goaway.parse_body(memoryview(frame[9:]))
                assert isinstance(goaway, GoAwayFrame)
                self.goaway = goaway
            else:
                feed += frame
        try:
            events = self.conn.receive_data(bytes(feed)) if feed else []
        except h2.exceptions.ProtocolError:
            self.closed = True
            return False
        for event in events:
            self._apply(event)
        try:
            await self.flush()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.closed = True
        return True

    async def until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Read until ``predicate()`` holds; fails on timeout, or on EOF before it holds."""
        with trio.fail_after(timeout):
            while not predicate():
                if not await self.receive_once():
                    assert predicate(), "the server closed the connection"
                    return

    async def response(self, sid: int, timeout: float = 5.0) -> StreamResult:
        await self.until(lambda: self.streams[sid].done, timeout)
        return self.streams[sid]

    async def get(self, path: bytes = b"/", *, timeout: float = 5.0, **kwargs: Any) -> StreamResult:
        return await self.response(await self.request(b"GET", path, **kwargs), timeout)

    async def read_until_closed(self, timeout: float = 5.0) -> None:
        with trio.fail_after(timeout):
            while await self.receive_once():
                pass

    def _apply(self, event: h2.events.Event) -> None:
        self.events.append(event)
        sid = getattr(event, "stream_id", 0)
        st = self.streams.get(sid) if sid else None
        if isinstance(event, h2.events.ResponseReceived) and st is not None:
            st.headers = list(event.headers)  # type: ignore[arg-type]
            st.status = int(dict(st.headers)[b":status"])
        elif isinstance(event, h2.events.InformationalResponseReceived) and st is not None:
            st.informational.append(int(dict(event.headers)[b":status"]))  # type: ignore[arg-type]
        elif isinstance(event, h2.events.DataReceived):
            if st is not None:
                st.body += event.data
            n = event.flow_controlled_length
            if self.auto_ack:
                if n:
                    self.conn.acknowledge_received_data(n, sid)
            else:
                self.unacked[sid] = self.unacked.get(sid, 0) + n
        elif isinstance(event, h2.events.TrailersReceived) and st is not None:
            st.trailers = list(event.headers)  # type: ignore[arg-type]
        elif isinstance(event, h2.events.StreamEnded) and st is not None:
            st.ended = True
        elif isinstance(event, h2.events.StreamReset) and st is not None:
            st.reset = int(event.error_code)


# ---------------------------------------------------------------------- raw frames
class RawH2:
    """Hand-made frames after the preface; what comes back, parsed."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.encoder = hpack.Encoder()
        self._buf = bytearray()
        self.frames: list[Frame] = []
        self.closed = False

    @classmethod
    async def connect(
        cls,
        port: int,
        *,
        settings: dict[int, int] | None = None,
        tls: ssl.SSLContext | None = None,
        server_hostname: str = "localhost",
    ) -> RawH2:
        raw = cls(await open_stream(port, tls=tls, server_hostname=server_hostname))
        hello = SettingsFrame(0, settings=settings or {})
        await raw.stream.send_all(PREFACE + hello.serialize())
        return raw

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            await self.stream.aclose()

    async def __aenter__(self) -> RawH2:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def block(self, fields: Fields) -> bytes:
        return bytes(self.encoder.encode(fields))

    def headers(
        self, sid: int, fields: Fields, *, end_stream: bool = True, end_headers: bool = True
    ) -> HeadersFrame:
        flags = (["END_STREAM"] if end_stream else []) + (["END_HEADERS"] if end_headers else [])
        return HeadersFrame(sid, self.block(fields), flags=flags)

    @staticmethod
    def data(sid: int, data: bytes = b"", *, end_stream: bool = False) -> DataFrame:
        return DataFrame(sid, data, flags=["END_STREAM"] if end_stream else [])

    @staticmethod
    def rst(sid: int, code: int = CANCEL) -> RstStreamFrame:
        return RstStreamFrame(sid, error_code=code)

    @staticmethod
    def continuation(sid: int, fragment: bytes, *, end_headers: bool = False) -> ContinuationFrame:
        return ContinuationFrame(sid, fragment, flags=["END_HEADERS"] if end_headers else [])

    async def send(self, *frames: Frame | bytes) -> None:
        """Write frames; False-y errors (the server closed) mark :attr:`closed`."""
        data = b"".join(f if isinstance(f, bytes) else f.serialize() for f in frames)
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.closed = True

    async def receive_once(self) -> bool:
        if self.closed:
            return False
        try:
            data = await self.stream.receive_some(65536)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        if not data:
            self.closed = True
            return False
        self._buf += data
        while len(self._buf) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(self._buf[:9]))
            if len(self._buf) < 9 + length:
                break
            frame.parse_body(memoryview(self._buf[9 : 9 + length]))
            del self._buf[: 9 + length]
            self.frames.append(frame)
        return True

    async def until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        with trio.fail_after(timeout):
            while not predicate() and await self.receive_once():
                pass

    async def until_closed(self, timeout: float = 5.0) -> None:
        """Read (and parse) everything until the server closes the connection."""
        await self.until(lambda: False, timeout)

    @property
    def goaway(self) -> GoAwayFrame | None:
        for frame in self.frames:
            if isinstance(frame, GoAwayFrame):
                return frame
        return None

    def ended(self) -> set[int]:
        """Streams the server ended (END_STREAM on a HEADERS or DATA frame)."""
        return {
            f.stream_id
            for f in self.frames
            if isinstance(f, HeadersFrame | DataFrame) and "END_STREAM" in f.flags
        }

    def resets(self) -> dict[int, int]:
        """RST_STREAM error codes by stream."""
        return {f.stream_id: f.error_code for f in self.frames if isinstance(f, RstStreamFrame)}

    def statuses(self) -> dict[int, int]:
        """The ``:status`` of each response head (decoded in order, as HPACK requires)."""
        decoder = hpack.Decoder()
        out: dict[int, int] = {}
        for f in self.frames:
            if isinstance(f, HeadersFrame):
                fields = decoder.decode(f.data, raw=True)
                status = dict(fields).get(b":status")
                if status is not None and f.stream_id not in out:
                    out[f.stream_id] = int(status)
        return out
