"""Small raw-socket HTTP clients for end-to-end tests.

Raw sockets let tests send exactly the bytes they want (malformed heads,
pipelined requests) and read exactly what comes back. ``parse_responses``
splits a byte stream into responses with h11, so framing is checked too.
"""

from __future__ import annotations

from typing import Any

import h11
import trio


async def exchange(
    port: int,
    data: bytes,
    *,
    timeout: float = 5.0,
    half_close: bool = True,
    host: str = "127.0.0.1",
) -> bytes:
    """Send ``data``, half-close (unless told not to), read until the server closes."""
    with trio.fail_after(timeout):
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            await stream.send_all(data)
            if half_close:
                try:
                    await stream.send_eof()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
            chunks = []
            while True:
                try:
                    chunk = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    break
                if not chunk:
                    break
                chunks.append(chunk)
    return b"".join(chunks)


def parse_responses(data: bytes, methods: list[bytes] | None = None) -> list[dict[str, Any]]:
    """Every response in ``data`` as dicts: status, headers (lower-cased), body."""
    conn = h11.Connection(h11.CLIENT)
    out: list[dict[str, Any]] = []
    methods = list(methods or [])
    conn.receive_data(data)
    conn.receive_data(b"")
    while True:
        method = methods.pop(0) if methods else b"GET"
        # h11 needs a request to have been "sent" to parse a response.
        conn.send(h11.Request(method=method, target="/", headers=[("host", "x")]))
        conn.send(h11.EndOfMessage())
        resp: dict[str, Any] = {}
        body = b""
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                return out
            if isinstance(event, h11.Response):
                resp = {
                    "status": event.status_code,
                    "headers": {n.decode(): v.decode("latin-1") for n, v in event.headers},
                }
            elif isinstance(event, h11.InformationalResponse):
                out.append({"status": event.status_code, "headers": {}, "body": b""})
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                resp["body"] = body
                out.append(resp)
                break
            elif event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
                return out
        if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
            return out
        try:
            conn.start_next_cycle()
        except h11.LocalProtocolError:
            return out
