"""A tiny HTTP/1.1 origin that answers each path with a status the test sets.

For health-check tests: it records every path and head it was asked for,
and ``default`` (or a per-path status) can be changed while it runs, so a
target can be made to fail and recover.
"""

from __future__ import annotations

import h11
import trio


class Origin:
    """A tiny HTTP/1.1 server answering each path with a configured status."""

    def __init__(self, statuses: dict[str, int], default: int = 200) -> None:
        self.statuses = statuses
        self.default = default
        self.paths: list[str] = []
        self.heads: list[list[tuple[bytes, bytes]]] = []
        self.port = 0
        self.delay = 0.0

    async def serve(
        self, *, task_status: trio.TaskStatus[Origin] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self)
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        async with stream:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    conn.receive_data(data)
                elif isinstance(event, h11.Request):
                    path = event.target.decode()
                    self.paths.append(path)
                    self.heads.append(list(event.headers))
                    await trio.sleep(self.delay)
                    status = self.statuses.get(path, self.default)
                    out = conn.send(
                        h11.Response(status_code=status, headers=[("content-length", "0")])
                    )
                    out += conn.send(h11.EndOfMessage())
                    await stream.send_all(out)
                    return
