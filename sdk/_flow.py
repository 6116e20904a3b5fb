"""One exchange through the proxy: :class:`Flow`, with its :class:`ClientInfo`
and :class:`Timings`.

The kernel creates a flow when a request head has been parsed and hands the
same object to every hook of that exchange, so plugins compose by mutating it
(``flow.request``, ``flow.response``, ``flow.upstream``) rather than by
threading return values. Plugins never build flows; ``sdk.testing`` does it
for tests.

May import: stdlib, attrs, sdk._http, sdk._stash, sdk._errors, sdk._balance.
"""

from __future__ import annotations

import itertools
import os
from typing import final

import attrs

from sdk._balance import Target
from sdk._errors import ProxyError
from sdk._http import Origin, Request, Response
from sdk._stash import Stash

__all__ = ["ClientInfo", "Flow", "Timings", "new_flow_id"]

_PREFIX = os.urandom(3).hex()
_counter = itertools.count(1)


def new_flow_id() -> str:
    """A process-unique, sortable-enough id such as ``3fa2c1-0000002a``."""
    return f"{_PREFIX}-{next(_counter):08x}"


@final
@attrs.define(slots=True, eq=False)
class ClientInfo:
    """The downstream end of the connection a flow arrived on."""

    #: Peer IP address as text (``"127.0.0.1"``, ``"::1"``).
    address: str
    #: Peer TCP port.
    port: int
    #: Name of the listener that accepted the connection.
    listener: str
    #: True when the connection is TLS.
    tls: bool = False
    #: Sequence number of the connection in this process (for logs).
    connection_id: int = 0
    #: The negotiated TLS version (``"TLSv1.3"``); ``""`` on cleartext.
    tls_version: str = ""
    #: The protocol agreed by ALPN (``"h2"``, ``"http/1.1"``); ``""`` when none was.
    alpn: str = ""
    #: The server name the client asked for by SNI, lower-case; ``""`` when none.
    sni: str = ""
    #: The verified client certificate's subject as RFC 4514 text
    #: (``"CN=alice,O=Example"``); ``None`` without a client certificate.
    client_cert_subject: str | None = None


@final
@attrs.define(slots=True, eq=False)
class Timings:
    """Monotonic timestamps (``time.monotonic()`` seconds) of a flow's milestones.

    Unreached milestones stay ``None``. ``started_at`` is wall-clock epoch
    seconds, for logs.
    """

    started_at: float = 0.0
    #: Request head parsed (the flow's birth).
    request_head: float = 0.0
    #: Upstream connection ready (new or reused).
    upstream_connected: float | None = None
    #: Response head available (from the upstream or a plugin).
    response_head: float | None = None
    #: Last response byte handed to the client socket, or the error.
    done: float | None = None

    @property
    def duration(self) -> float | None:
        """Seconds from request head to done, when done."""
        return None if self.done is None else self.done - self.request_head


@final
@attrs.define(slots=True, eq=False)
class Flow:
    """One HTTP exchange: a request, and then a response or an error.

    Attributes plugins may change:

    - :attr:`request` until the request goes upstream (``trellis_request`` and before);
    - :attr:`response`: set it in a request-phase hook to answer locally (as
      returning it does: the hookspecs' "Answering in the request phase");
      ``trellis_response`` may change or replace it;
    - :attr:`upstream`, :attr:`group` and :attr:`route` in the routing and
      request hooks;
    - :attr:`stash` and :attr:`decisions` at any time.
    """

    id: str
    request: Request
    client: ClientInfo
    #: The name of the route whose chain serves this flow.
    route: str = ""
    #: Where the request is sent; ``None`` until routing picks one.
    upstream: Origin | None = None
    #: The upstream group to send to when no plugin set :attr:`upstream`:
    #: the route's ``group`` to begin with; a routing or request hook may name
    #: another ``[[groups]]`` entry (a canary split between groups does).
    group: str = ""
    #: The group target the request went to, once the kernel picked one.
    target: Target | None = None
    response: Response | None = None
    #: Set when the flow failed; exactly one of a sent response or an error
    #: describes the outcome seen by ``trellis_flow_done``.
    error: ProxyError | None = None
    timings: Timings = attrs.field(factory=Timings)
    stash: Stash = attrs.field(factory=Stash)
    #: Short notes of what plugins decided (``"router: rule 2 -> api"``), for logs.
    decisions: list[str] = attrs.field(factory=list)
    #: Request body bytes received from the client.
    bytes_in: int = 0
    #: Response body bytes sent to the client.
    bytes_out: int = 0
    #: Generation number of the configuration that served this flow.
    generation: int = 0

    def record(self, decision: str) -> None:
        """Append a decision note (shown by logs and the traffic log)."""
        self.decisions.append(decision)
