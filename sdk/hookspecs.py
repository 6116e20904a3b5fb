"""Every hook Trellis calls, grouped by phase: the plugin author's reference.

There are two kinds of hooks, and the difference matters:

**Lifecycle hooks** (:data:`LIFECYCLE_HOOKS`: ``trellis_addhooks``,
``trellis_config_check``, ``trellis_startup``, ``trellis_shutdown`` and the
announcements such as ``trellis_target_health``) are plain ``def``: pluggy
calls them on every plugin instance of a configuration generation, and never
awaits. An ``async def`` one is a configuration problem.

**Flow hooks** (everything else) may be ``def`` or ``async def``. The kernel's
own dispatcher calls them, because pluggy cannot await. For each route the
kernel compiles, once per configuration generation, the list of
implementations in *chain order*: the global chain (``[kernel] plugins`` or
``kernel run --plugins``), then the listener's chain, then the route's chain.
Registration order and ``tryfirst``/``trylast`` do not matter for flow hooks:
order is configuration. Hooks marked *first result* stop at the first
implementation that returns something other than ``None``.

**Answering in the request phase.** A hook of the request phase
(``trellis_route_select``, ``trellis_request_access``, ``trellis_request``,
``trellis_upstream_select``) answers the request locally by returning a
:class:`~sdk.Response` (access and request hooks) or by setting
``flow.response`` and returning ``None`` (any of the four): the two are the
same answer. No later implementation of the phase runs, the request never
reaches an upstream, and the response goes through ``trellis_response``,
``trellis_response_body`` and ``trellis_flow_done`` like any local answer. A
set response is checked as a returned one is (a final status 200-599, a
``bytes`` body, ...); one that fails is that plugin's failure. A
``Response`` returned by the hook that also set one wins; a route name or
an origin returned along with a set response does not stop it answering
(the route is still taken). An implementation that fails (raises, misses
its deadline) answers nothing, even under ``fail_open``: what it set is
dropped.

Every awaited flow-hook call runs under a deadline (``[kernel]
plugin_deadline_s``, or ``[kernel.policy.<instance>] deadline_s``). An
exception or a missed deadline is caught by the kernel's fault boundary: the
error is logged with the plugin's name and the flow ends with ``502`` (policy
``fail_closed``, the default), or the call is treated as if it returned
``None`` (``fail_open``). Other flows and the process are not affected.
An implementation that returns after its deadline (it caught the
``trio.Cancelled``, shielded itself or blocked) missed it all the same: its
late result is dropped.

Synchronous implementations must not block: they run on the event loop. The
flow hooks in :data:`SYNC_ONLY_HOOKS` must be plain ``def`` too.

May import: sdk._markers; types only under TYPE_CHECKING.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING

from sdk._markers import hookspec

if TYPE_CHECKING:
    import pluggy

    from sdk._balance import Balancer, Group, Target
    from sdk._errors import PluginError, ProxyError
    from sdk._flow import ClientInfo, Flow
    from sdk._http import Origin, Response
    from sdk._lifecycle import StartupContext
    from sdk._tls import TlsCertificate

# ---------------------------------------------------------------------------
# Lifecycle hooks (plain def)
# ---------------------------------------------------------------------------


@hookspec(historic=True)
def trellis_addhooks(pluginmanager: pluggy.PluginManager) -> None:
    """Register new hook specifications that other plugins may implement.

    Called once when the plugin is registered, and also for plugins registered
    later (historic), so a plugin can offer its own extension point
    (``pluginmanager.add_hookspecs(module)``), as pytest's ``pytest_addhooks``.

    :param pluginmanager: the generation's :class:`pluggy.PluginManager`.
    """


@hookspec
def trellis_config_check(
    routes: tuple[str, ...], groups: tuple[str, ...], listeners: tuple[str, ...]
) -> list[str] | None:
    """Check this instance's configuration against the rest of the config.

    Called on every plugin instance while a configuration is validated
    (``kernel check``, start, every reload), after each instance was built from
    its table. A non-empty list fails the whole configuration: at start the
    process exits with code 1, on reload the old generation keeps serving.

    When the table itself has problems, the kernel builds the instance once
    more from the table with the refused values left out (their defaults
    stand in) and calls this hook on it, so both kinds are listed in one pass;
    what it returns at, under or above a refused value's path is dropped.
    When that cannot be done (a required key missing or refused, a list item
    itself wrong, the constructor refusing the rest), the hook is not called.
    ``__init__`` must therefore do no I/O (as always) and accept any valid
    config instance.

    :param routes: the names of the configured routes.
    :param groups: the names of the configured upstream groups (``[[groups]]``).
    :param listeners: the names of the configured listeners.
    :return: problems, each ``"<key path inside the table>: <message>"`` such as
        ``"rules[2].route: no route named 'api'"``; the kernel prefixes the
        table's path (``$.plugins.router.``). ``None`` or ``[]`` when fine.

    Builtin users: ``router`` (rules must name existing routes), ``canary``
    and ``mirror`` (their ``group`` must exist), ``metrics`` and ``health``
    (their ``listener`` must exist).
    """


@hookspec
def trellis_startup(context: StartupContext) -> None:
    """The configuration generation this instance belongs to goes live.

    Called once per generation, after every listener is bound and before the
    first flow of the generation. Open resources here (not in ``__init__``,
    which must do no I/O). Long-running work (health checks, flushers) is
    started with ``context.start_soon(async_fn)``; it is cancelled when the
    generation is retired.

    Raising fails the generation: at start the process exits (3 for an
    :class:`OSError`, a storage error such as a log directory that cannot be
    made; 1 otherwise), and a reload is refused while the old generation
    keeps serving. ``trellis_shutdown`` is then called on the instances
    whose ``trellis_startup`` had already run, not on the one that raised.

    :param context: the generation number and ``start_soon``.
    """


@hookspec
def trellis_shutdown() -> None:
    """The generation is retired: its last flow has ended, or the process exits.

    Close what ``trellis_startup`` opened. Background tasks started through the
    startup context have already been cancelled.
    """


# ---------------------------------------------------------------------------
# Upstream groups (plain def; called by the kernel, not on a chain)
# ---------------------------------------------------------------------------


@hookspec
def trellis_balancer(group: Group) -> Balancer | None:
    """Make the load balancer of an upstream group whose ``strategy`` names this instance.

    Called while a configuration is built, on the one plugin instance that
    ``[[groups]] strategy`` names (not on a chain), once per group that is
    new or changed; an unchanged group keeps its balancer, and so its state,
    across a reload. Plain ``def``: it must only build an object.

    :param group: the group's name and its targets (their live state is
        kept by the kernel and may be read at every pick).
    :return: an object with ``pick(flow, candidates)`` (see
        :class:`~sdk.Balancer`). ``None`` is a configuration error for the
        group. A plugin may refuse a group it cannot serve by raising
        :class:`~sdk.ConfigError`.

    Builtin users: ``roundrobin``, ``weighted``, ``random``, ``leastconn``,
    ``p2c``, ``hash``.
    """


@hookspec
def trellis_target_health(target: Target, available: bool, reason: str) -> None:
    """A target of an upstream group became available or unavailable.

    Called on every plugin instance of the live generation when an active
    health check crosses its threshold, when passive checks eject a target
    or let it back, or when a drained target comes back. Plain ``def``, on
    the event loop: keep it quick. The kernel logs every change itself.

    :param target: the target (``target.group`` names its group).
    :param available: its new state.
    :param reason: why, such as ``"health check: 3 failures (connect refused)"``.

    Intended users: metrics, health endpoint, alerting plugins.
    """


@hookspec
def trellis_health_probe(target: Target, healthy: bool, duration_s: float, detail: str) -> None:
    """One active health probe of a group target finished.

    Called on every plugin instance of the live generation after each probe
    (``[groups.health]``), whatever its result; ``trellis_target_health``
    reports only the changes. Plain ``def``, on the event loop: keep it quick.

    :param target: the probed target.
    :param healthy: this probe's verdict (before thresholds).
    :param duration_s: seconds the probe took, connect included.
    :param detail: what was seen, such as ``"status 200"`` or the error.

    Intended users: metrics (a health-check duration histogram).
    """


# ---------------------------------------------------------------------------
# The fault boundary
# ---------------------------------------------------------------------------


@hookspec
def trellis_plugin_error(plugin: str, hook: str, error: PluginError, fail_open: bool) -> None:
    """A plugin failed inside a flow hook and the fault boundary caught it.

    Called on every plugin instance of the live generation, after the error
    was logged, whether the flow then failed (``fail_closed``) or went on
    (``fail_open``). Plain ``def``; an implementation that raises here is
    logged and ignored (never reported again through this hook).

    :param plugin: the failing instance's name.
    :param hook: the hook it failed in.
    :param error: the error (its ``__cause__`` is the original exception).
    :param fail_open: whether the flow went on as if the plugin returned ``None``.

    Intended users: metrics, alerting.
    """


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


#: Hooks pluggy calls itself, never awaiting: plain ``def`` only.
LIFECYCLE_HOOKS = (
    "trellis_addhooks", "trellis_config_check", "trellis_startup", "trellis_shutdown",
    "trellis_balancer", "trellis_target_health", "trellis_health_probe", "trellis_plugin_error",
)  # fmt: skip

#: Flow hooks that must be plain ``def``: body transforms run per chunk on
#: the hot path, and a certificate is chosen inside the TLS handshake.
SYNC_ONLY_HOOKS = frozenset(
    {"trellis_request_body", "trellis_response_body", "trellis_tls_certificate"}
)
