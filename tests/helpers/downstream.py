"""A client connection object on one end of a socket pair, without an app.

For tests of how :class:`~kernel.io.connection.Http1Connection` and
:class:`~kernel.io.h2connection.H2Connection` use their socket: built on a
minimal generation (one listener, one route), the test holding the other end.
"""

from __future__ import annotations

from typing import TypeVar

import trio

from kernel.config.model import ListenerConfig, RouteConfig, Settings
from kernel.generation import build_generation
from kernel.io.connection import Http1Connection
from kernel.io.h2connection import H2Connection
from kernel.io.state import ServerState
from sdk import ClientInfo

C = TypeVar("C", Http1Connection, H2Connection)


def connection_on(cls: type[C], sock: trio.socket.SocketType) -> C:
    """``cls`` serving the client at the other end of ``sock``."""
    settings = Settings(
        listeners=[ListenerConfig()],
        routes=[RouteConfig(name="default", upstream="http://127.0.0.1:9")],
    )
    gen = build_generation(settings, available={})
    return cls(
        trio.SocketStream(sock),
        ServerState(gen),
        gen.listeners["main"],
        ClientInfo(address="127.0.0.1", port=1, listener="main"),
    )
