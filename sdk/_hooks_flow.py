"""The flow hooks, by phase: TLS, routing, request, response, the end of a flow.

Part of :mod:`sdk.hookspecs`, which re-exports every hook here (and says how
the kernel's dispatcher calls them: chain order, deadlines, the fault
boundary, answering in the request phase): the plugin author's reference is
there. A flow hook may be ``def`` or ``async def``, except the
:data:`SYNC_ONLY_HOOKS`.

May import: sdk._markers; types only under TYPE_CHECKING.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING

from sdk._markers import hookspec

if TYPE_CHECKING:
    from sdk._errors import ProxyError
    from sdk._flow import ClientInfo, Flow
    from sdk._http import Origin, Response
    from sdk._tls import TlsCertificate

__all__ = [
    "SYNC_ONLY_HOOKS",
    "trellis_error",
    "trellis_flow_done",
    "trellis_request",
    "trellis_request_access",
    "trellis_request_body",
    "trellis_response",
    "trellis_response_body",
    "trellis_route_select",
    "trellis_tls_certificate",
    "trellis_tls_passthrough",
    "trellis_upstream_select",
]

# ---------------------------------------------------------------------------
# TLS (per connection)
# ---------------------------------------------------------------------------


@hookspec(firstresult=True)
def trellis_tls_passthrough(
    server_name: str, client: ClientInfo
) -> Origin | Awaitable[Origin | None] | None:
    """Relay this TLS connection, unopened, to another server instead of terminating it.

    Called once per connection on listeners with ``passthrough = true`` in
    ``[listeners.tls]``, after the ClientHello has been read and before any
    handshake, with the global and listener chains (there is no request, so
    no route yet). The connection's bytes, the ClientHello included, are then
    relayed unchanged both ways: no HTTP, no flow, no other hook sees them.

    :param server_name: the SNI name the client sent, lower-case, ``""`` when
        it sent none.
    :param client: the connection; ``client.sni`` is ``server_name`` and the
        other TLS fields are still empty (no handshake happened).
    :return: the :class:`~sdk.Origin` (host and port) to relay to, or ``None``
        to terminate TLS here as usual. First result. A failing plugin closes
        the connection (policy ``fail_closed``) or counts as ``None``
        (``fail_open``).

    Builtin user: ``passthrough``.
    """


@hookspec(firstresult=True)
def trellis_tls_certificate(server_name: str) -> TlsCertificate | None:
    """Supply the certificate for a TLS server name the configuration does not name.

    Called inside the TLS handshake, with the global and listener chains, for
    a name that no ``[[listeners.tls.certificates]]`` entry names exactly;
    configured exact names win, then this hook, then configured
    ``*.example.com`` wildcards, then the listener's first certificate. The
    kernel keeps the context built from an answer per name (least recently
    used out after 1024 names) and does not ask again for that name in this
    generation; ``None`` is not remembered.

    Synchronous only, and it must be quick: it runs inside the handshake, so
    no deadline can be enforced and every connection of the listener waits
    on it. Mint or load certificates in the background (``trellis_startup``)
    and answer from memory here.

    :param server_name: the SNI name, lower-case, without a trailing dot.
    :return: a :class:`~sdk.TlsCertificate`, or ``None`` to decline. First
        result. A failing plugin aborts the handshake (policy
        ``fail_closed``) or counts as ``None`` (``fail_open``).

    Intended users: TLS interception and ACME plugins.
    """


# ---------------------------------------------------------------------------
# Routing (global and listener chains only)
# ---------------------------------------------------------------------------


@hookspec(firstresult=True)
def trellis_route_select(flow: Flow) -> str | Awaitable[str | None] | None:
    """Pick the route whose chain and upstream serve this request.

    Called first for each request, with only the global and listener chains
    (the route, and so its chain, is what is being decided). The request head
    is complete; the body has not been read.

    May change: ``flow.request`` (for example to rewrite the path, as the
    ``router``'s ``replace_path``), ``flow.upstream``, ``flow.decisions``; and
    ``flow.response``, to answer locally: no later routing hook runs, the
    route is chosen as usual (the one returned, else the default) and its
    chain's response hooks see the answer; no access or request hook runs.

    :param flow: the new flow; ``flow.route`` is empty.
    :return: the name of a configured route, or ``None`` to decline. First
        result. When every plugin declines, the listener's ``default_route``
        (or the first route) is used. Naming a route that does not exist ends
        the flow with 500.

    Builtin user: ``router``.
    """


# ---------------------------------------------------------------------------
# Request phase (full chain: global, listener, route)
# ---------------------------------------------------------------------------


@hookspec(firstresult=True)
def trellis_request_access(flow: Flow) -> Response | Awaitable[Response | None] | None:
    """Decide whether this request may proceed at all.

    Called after routing and before any other request hook; also for requests
    that will be upgraded (WebSocket) or tunnelled, which is why access control
    belongs here and not in ``trellis_request``.

    May change: ``flow.stash`` (for example :data:`sdk.AUTH_USER`),
    ``flow.decisions``; ``flow.response``, which refuses the request as
    returning it does. Must not change the request.

    :param flow: the flow, ``flow.route`` set.
    :return: a :class:`~sdk.Response` to refuse the request (401, 403, 407,
        429, ...) - no later access or request hook runs and the request
        never reaches an upstream; like any local answer it still passes
        through the response hooks and body transforms - or ``None`` to let
        it pass (unless the hook set ``flow.response``: then that answers).
        First result. A returned response wins over one the hook set.

    Builtin users: ``metrics`` and ``health`` (answer their own endpoints),
    ``intercept`` (refuses hosts it does not serve).
    """


@hookspec(firstresult=True)
def trellis_request(flow: Flow) -> Response | Awaitable[Response | None] | None:
    """Inspect or change the request before it goes upstream, or answer it.

    Called after ``trellis_request_access`` let the request pass. The head is
    complete; the body has not been read (it streams later, through
    ``trellis_request_body``).

    May change: ``flow.request`` (method, path, headers), ``flow.upstream``.
    Header values are checked: CR, LF and NUL are refused. A request left in
    a state the kernel cannot write (a space in the path, a second Host, a
    character outside Latin-1, a field edited into ``headers.fields``
    unchecked) never reaches the upstream: the client gets a ``500`` and the
    flow's error names the plugins whose request hooks ran (as does the
    log).

    :param flow: the flow.
    :return: a :class:`~sdk.Response` to answer locally (the upstream is never
        contacted and later request hooks do not run), or ``None`` to go on.
        Setting ``flow.response`` and returning ``None`` answers the same
        way; a returned response wins over one the hook set. First result.

    Builtin users: ``headers`` (changes headers), ``respond`` (answers).
    """


@hookspec(firstresult=True)
def trellis_upstream_select(flow: Flow) -> Origin | Awaitable[Origin | None] | None:
    """Choose the upstream origin when no plugin has set ``flow.upstream`` yet.

    Called after the request phase, only when ``flow.upstream`` is ``None``
    and no local response was given.

    May change: ``flow.response``, to answer locally instead: no later
    implementation runs and no upstream is contacted, whatever origin the
    hook returned.

    :param flow: the flow.
    :return: an :class:`~sdk.Origin`, or ``None`` to decline. First result.
        When every plugin declines, the route's ``upstream`` is used; with no
        upstream at all the flow ends with 502.

    Builtin users: ``canary`` (a weighted split between groups or origins).
    Load-balancing strategies are not: they implement ``trellis_balancer``.
    """


@hookspec
def trellis_request_body(flow: Flow, chunk: bytes, end: bool) -> bytes | None:
    """Transform the request body while it streams to the upstream.

    Called for each chunk read from the client, in chain order, each
    implementation seeing the previous one's output; then once more with
    ``chunk=b""`` and ``end=True`` so a transform can flush what it holds.
    When a route has any implementation of this hook, the kernel re-frames
    the upstream request with chunked encoding (the length may change). A
    request without a body (no ``Content-Length``, no chunked coding) has no
    chunks and no final call either.

    :param flow: the flow.
    :param chunk: the bytes (possibly empty).
    :param end: true on the final call.
    :return: replacement bytes (``b""`` drops the chunk), or ``None`` to keep it.

    Synchronous only: it runs once per chunk on the hot path.
    """


# ---------------------------------------------------------------------------
# Response phase
# ---------------------------------------------------------------------------


@hookspec
def trellis_response(flow: Flow) -> Awaitable[None] | None:
    """Inspect or change the response head before it is sent to the client.

    Called for upstream responses and for local ones (from ``respond``,
    ``trellis_request_access`` or ``trellis_error``) and for the kernel's own
    error pages, in chain order, every implementation. While an error page is
    being answered, a failing implementation is logged and skipped. The body has not been sent.

    May change: ``flow.response.status_code``, ``flow.response.headers``,
    ``flow.response.reason``, ``flow.response.body``; or replace
    ``flow.response`` with a :class:`~sdk.Response` of its own. Later hooks
    see the change. A replaced response, or one whose body a hook set, is
    the answer as a local response is: its own body and framing (the
    kernel's ``content-length``), through ``trellis_response_body``. The
    upstream's body is then never relayed; its connection goes back to the
    pool only if that body had already arrived whole, else it is closed (an
    HTTP/2 upstream's stream is reset). On the upstream's ``101`` (WebSocket)
    a replacement, another status or a body answers instead of the switch,
    and the upstream connection closes.

    What the hooks leave must be sendable: a final status (200-599), a
    ``bytes`` body, Latin-1 reason, fields the codec accepts. Otherwise the
    client gets a ``500`` (nothing of the response goes out) and the flow's
    error names the plugins whose response hooks ran; on an error page the
    kernel's own page is sent instead.

    :param flow: the flow, ``flow.response`` set.
    """


@hookspec
def trellis_response_body(flow: Flow, chunk: bytes, end: bool) -> bytes | None:
    """Transform the response body while it streams to the client.

    Same contract as ``trellis_request_body``: called per chunk, in chain
    order, each implementation seeing the previous one's output, then once
    more with ``chunk=b""`` and ``end=True``; the kernel drops
    ``content-length`` and re-frames the response when a route implements it.
    Error pages (the kernel's, or one from ``trellis_error``) are sent as they
    are, without this hook.

    :param flow: the flow, ``flow.response`` set.
    :param chunk: the bytes (possibly empty).
    :param end: true on the final call.
    :return: replacement bytes (``b""`` drops the chunk), or ``None`` to keep it.

    Synchronous only: it runs once per chunk on the hot path.
    """


@hookspec(firstresult=True)
def trellis_error(flow: Flow, error: ProxyError) -> Response | Awaitable[Response | None] | None:
    """Offer the response to send for a failed flow.

    Called when a flow fails before its response head was sent: the upstream
    was unreachable or timed out, a plugin failed closed, no upstream was
    configured. ``error.status_hint`` is the status the kernel would use.

    :param flow: the flow; ``flow.error`` is ``error``.
    :param error: what went wrong (:class:`~sdk.UpstreamError`,
        :class:`~sdk.PluginError`, ...).
    :return: a :class:`~sdk.Response` to send instead of the kernel's plain
        error page, or ``None``. First result. A plugin failing here is
        logged and ignored.
    """


# ---------------------------------------------------------------------------
# End of a flow
# ---------------------------------------------------------------------------


@hookspec
def trellis_flow_done(flow: Flow) -> Awaitable[None] | None:
    """The flow is over: called exactly once per flow, whatever happened.

    Called after the last response byte was handed to the client, or after
    the flow failed (``flow.error`` set). A response that did not finish has
    its error even when its head went out (``flow.response`` is then what was
    begun): the upstream's failure, :class:`~sdk.ClientDisconnected` when the
    client went away (or reset its stream), a :class:`~sdk.ProxyError` with
    ``status_hint`` 503 when the drain cut it at its grace's end. Timings and
    byte counts are final. Every implementation runs, even if one fails or
    misses its deadline (each has its own, as in every phase; a cancelled
    flow does not cut them short). Traffic logs, metrics and audit hang off
    this hook; keep it quick and hand slow work to a background task.

    A request the kernel refused before accepting it, and answered itself
    with an error status, is a flow too, and this is the only hook it
    reaches: a head that does not parse or breaks a limit (400, 413, 414,
    417, 431, 501, 505), a head that stalled (408), an HTTP/2 request
    refused on its stream (400, 414, 431, 501; a stream only reset is no
    flow). It runs on the listener's chain (global and listener plugins),
    with ``flow.route`` empty, ``flow.error`` the
    :class:`~sdk.RemoteProtocolError` (its ``status_hint`` the status),
    ``flow.response`` the kernel's page and ``flow.request`` what could be
    told of the request: method, path and version when the request line
    (``:method``, ``:path``) was valid, else empty strings (``method`` alone
    when only the rest of the line was bad); the fields (and so
    ``authority``) only when the whole header block was valid, HTTP/2's
    ``:authority`` when valid. Such a request never reaches an upstream.

    :param flow: the finished flow; must not be changed.
    """


#: Flow hooks that must be plain ``def``: body transforms run per chunk on
#: the hot path, and a certificate is chosen inside the TLS handshake.
SYNC_ONLY_HOOKS = frozenset(
    {"trellis_request_body", "trellis_response_body", "trellis_tls_certificate"}
)
