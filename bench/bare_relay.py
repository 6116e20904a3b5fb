"""The bare trio + httptools relay: the ceiling a Python proxy on trio can reach.

The design notes compare Trellis with "a bare trio+httptools relay" on the
same machine. This is that relay, so ``bench/run.py`` can measure it in the
same run as Trellis and nginx (target ``bare-relay``): no validation, no
forwarding rules, no plugins, no timeouts, no pool across connections. Each
client connection gets one upstream connection; each request is parsed by
httptools just enough to find its end, sent upstream as it came, and the
response is parsed just enough to find its end and sent back as it came.

It is a measuring stick, not a proxy: never use it for anything else.

    python bench/bare_relay.py --listen 8081 --upstream 8080
"""

from __future__ import annotations

import argparse

import httptools
import trio

RECV = 65536


class _Ends:
    """httptools callbacks: count completed messages."""

    def __init__(self) -> None:
        self.done = 0

    def on_message_complete(self) -> None:
        self.done += 1


async def relay(client: trio.SocketStream, upstream_port: int) -> None:
    async with client:
        upstream = await trio.open_tcp_stream("127.0.0.1", upstream_port)
        async with upstream:
            req_ends, resp_ends = _Ends(), _Ends()
            req_parser = httptools.HttpRequestParser(req_ends)
            resp_parser = httptools.HttpResponseParser(resp_ends)
            while True:
                data = await client.receive_some(RECV)
                if not data:
                    return
                req_parser.feed_data(data)
                await upstream.send_all(data)
                # Relay responses until every request sent so far is answered.
                while resp_ends.done < req_ends.done:
                    chunk = await upstream.receive_some(RECV)
                    if not chunk:
                        return
                    resp_parser.feed_data(chunk)
                    await client.send_all(chunk)


async def main(listen: int, upstream: int) -> None:
    async def handler(stream: trio.SocketStream) -> None:
        try:
            await relay(stream, upstream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, httptools.HttpParserError):
            pass

    await trio.serve_tcp(handler, listen, host="127.0.0.1")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--listen", type=int, required=True)
    p.add_argument("--upstream", type=int, required=True)
    args = p.parse_args()
    trio.run(main, args.listen, args.upstream)
