"""The bare trio + h2 relay: the ceiling for HTTP/2 through a Python proxy on trio.

The HTTP/2 counterpart of ``bench/bare_relay.py``, measured by
``bench/run_h2.py`` in the same run as Trellis and nginx (proxy
``bare``, load ``h2c``): h2c with prior knowledge from clients, each stream
sent to the upstream as a minimal HTTP/1.1 GET on a keep-alive connection
taken from a per-process pool, the response parsed by httptools just enough
to find its end, and relayed back as one HEADERS and one DATA frame. No
validation, no flow-control waits (responses are small), no plugins, no
timeouts, GET only.

It is a measuring stick, not a proxy: never use it for anything else.

    python bench/bare_h2_relay.py --listen 8081 --upstream 8080
"""

from __future__ import annotations

import argparse

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import httptools
import trio

RECV = 65536


class _Response:
    """httptools callbacks collecting one response."""

    def __init__(self) -> None:
        self.status = 0
        self.body = bytearray()
        self.done = False
        self.headers: list[tuple[bytes, bytes]] = []

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name not in (b"connection", b"keep-alive", b"transfer-encoding"):
            self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.done = True


class Pool:
    def __init__(self, port: int) -> None:
        self.port = port
        self.idle: list[trio.SocketStream] = []

    async def get(self, path: bytes) -> _Response:
        stream = (
            self.idle.pop() if self.idle else await trio.open_tcp_stream("127.0.0.1", self.port)
        )
        await stream.send_all(b"GET " + path + b" HTTP/1.1\r\nHost: bench\r\n\r\n")
        resp = _Response()
        parser = httptools.HttpResponseParser(resp)
        while not resp.done:
            data = await stream.receive_some(RECV)
            if not data:
                raise trio.BrokenResourceError("upstream closed")
            parser.feed_data(data)
        resp.status = parser.get_status_code()
        self.idle.append(stream)
        return resp


async def serve(stream: trio.SocketStream, pool: Pool) -> None:
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    conn.initiate_connection()
    lock = trio.Lock()

    async def flush() -> None:
        async with lock:
            data = conn.data_to_send()
            if data:
                await stream.send_all(data)

    async def answer(stream_id: int, path: bytes) -> None:
        resp = await pool.get(path)
        fields = [(b":status", str(resp.status).encode()), *resp.headers]
        try:
            conn.send_headers(stream_id, fields)
            conn.send_data(stream_id, bytes(resp.body), end_stream=True)
            await flush()
        except (h2.exceptions.H2Error, trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away (GOAWAY, reset or close) meanwhile

    async with trio.open_nursery() as nursery:
        await flush()
        while True:
            data = await stream.receive_some(RECV)
            if not data:
                return
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    path = dict(event.headers).get(b":path", b"/")
                    nursery.start_soon(answer, event.stream_id, path)
                elif isinstance(event, h2.events.DataReceived):
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            await flush()


async def main(listen: int, upstream: int) -> None:
    pool = Pool(upstream)

    async def handler(stream: trio.SocketStream) -> None:
        try:
            await serve(stream, pool)
        except (trio.BrokenResourceError, trio.ClosedResourceError, h2.exceptions.H2Error):
            pass

    await trio.serve_tcp(handler, listen, host="127.0.0.1")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--listen", type=int, required=True)
    p.add_argument("--upstream", type=int, required=True)
    args = p.parse_args()
    trio.run(main, args.listen, args.upstream)
