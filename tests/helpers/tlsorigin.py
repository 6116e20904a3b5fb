"""The h11 test origin (:mod:`tests.helpers.upstream`) behind TLS.

:class:`TlsUpstream` answers exactly like :class:`~tests.helpers.upstream.Upstream`
but over TLS with the server context it is given
(:func:`tests.helpers.h2origin.server_context`: a trustme certificate, ALPN,
and a required client certificate when asked). Per TLS connection it records
the SNI name the client sent, the ALPN protocol picked and the subject of the
client's certificate; handshakes that fail are counted. With TLS 1.3 a
client certificate the server refuses only shows after the client finished
its handshake (the proxy then fails on its first read); the server's
handshake fails all the same and is counted.
"""

from __future__ import annotations

import ssl
from typing import Any

import trio

from kernel.tls import peer_subject
from tests.helpers.upstream import Upstream

__all__ = ["TlsUpstream"]


class TlsUpstream(Upstream):
    def __init__(self, tls: ssl.SSLContext, *, handshake_delay: float = 0.0) -> None:
        super().__init__()
        self.tls = tls
        #: Seconds to wait after accepting before the handshake (a slow server).
        self.handshake_delay = handshake_delay
        #: Connections accepted whose handshake is not over, now and at most.
        self.handshaking = 0
        self.max_handshaking = 0
        #: SNI names clients sent (``None``: no SNI, e.g. an IP address).
        self.server_names: list[str | None] = []
        #: Per established TLS connection: the ALPN protocol and the client's subject.
        self.alpn: list[str | None] = []
        self.client_certs: list[str | None] = []
        self.handshake_failures = 0

    async def serve(
        self, *, task_status: trio.TaskStatus[Upstream] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self.tls.sni_callback = self._on_sni
        await super().serve(task_status=task_status)

    def _on_sni(self, _obj: Any, name: str | None, _ctx: ssl.SSLContext) -> None:
        self.server_names.append(name)

    async def _handle(self, stream: trio.SocketStream) -> None:
        tls = trio.SSLStream(stream, self.tls, server_side=True, https_compatible=True)
        self.handshaking += 1
        self.max_handshaking = max(self.max_handshaking, self.handshaking)
        try:
            await trio.sleep(self.handshake_delay)
            await tls.do_handshake()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.handshake_failures += 1
            stream.socket.close()
            self.connections += 1
            return
        finally:
            self.handshaking -= 1
        self.alpn.append(tls.selected_alpn_protocol())
        self.client_certs.append(peer_subject(tls))
        try:
            await super()._handle(tls)  # type: ignore[arg-type]  # duck-typed stream
        finally:
            stream.socket.close()
