"""Sans-IO protocol code: bytes in, events out (no trio, no pluggy, no sockets).

The HTTP/1.1 codec interface and its factories live in :mod:`.http1`; the
wire events in :mod:`.events`. The two codec implementations
(:mod:`.h11_codec`, :mod:`.httptools_codec`) are reached through
:func:`make_server_codec` / :func:`make_client_codec`, never imported directly,
so that httptools stays optional.

May import: stdlib, attrs, h11, httptools, sdk. Never trio, pluggy or
``kernel.io`` (an import-linter contract enforces it).
"""

from __future__ import annotations

from kernel.protocol.events import (
    NEED_DATA,
    PAUSED,
    ConnectionClosed,
    Data,
    EndOfMessage,
    Event,
    Fields,
    InformationalResponse,
    RequestHead,
    ResponseHead,
    Sentinel,
)
from kernel.protocol.http1 import (
    ClientCodec,
    CodecKind,
    Limits,
    ServerCodec,
    make_client_codec,
    make_server_codec,
    resolve_kind,
)

__all__ = [
    "NEED_DATA",
    "PAUSED",
    "ClientCodec",
    "CodecKind",
    "ConnectionClosed",
    "Data",
    "EndOfMessage",
    "Event",
    "Fields",
    "InformationalResponse",
    "Limits",
    "RequestHead",
    "ResponseHead",
    "Sentinel",
    "ServerCodec",
    "make_client_codec",
    "make_server_codec",
    "resolve_kind",
]
