"""The error vocabulary shared by the kernel and plugins.

Small and named by cause (trio, httpcore), with an HTTP status hint on each
class (h11's ``error_status_hint``) so the one place that turns an exception
into a response does not need a lookup table::

    ProxyError
    ├── ClientDisconnected     the client went away before the response was done (499)
    ├── ConfigError            carries every problem, each with its $.path
    ├── PluginError            a plugin raised or timed out; names the plugin
    ├── ProtocolError          status_hint 400
    │   ├── LocalProtocolError     we were asked to send something invalid
    │   └── RemoteProtocolError    the peer sent something invalid
    └── UpstreamError          status_hint 502
        ├── UpstreamConnectError   could not connect (502)
        ├── UpstreamUnavailable    no usable target in the group (503)
        └── UpstreamTimeout        connect or response deadline passed (504)

May import: stdlib only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "ClientDisconnected",
    "ConfigError",
    "LocalProtocolError",
    "PluginError",
    "ProtocolError",
    "ProxyError",
    "RemoteProtocolError",
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamTimeout",
    "UpstreamUnavailable",
]


class ProxyError(Exception):
    """Base class of every error Trellis raises on purpose."""

    #: The HTTP status a client should see when this error ends a flow.
    status_hint: int = 500

    def __init__(self, message: str = "", *, status_hint: int | None = None) -> None:
        super().__init__(message)
        if status_hint is not None:
            self.status_hint = status_hint

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class ClientDisconnected(ProxyError):
    """The client closed or reset its connection (or its HTTP/2 stream)
    before the response was complete.

    Never raised to plugins: the kernel sets it as ``flow.error`` of the flow
    the client left (unless the flow had failed already), so
    ``trellis_flow_done`` can tell a cut response from a whole one.
    ``status_hint`` is ``499``, the code nginx logs for it; no response
    carries it.
    """

    status_hint = 499


class ConfigError(ProxyError):
    """A configuration could not be loaded; :attr:`problems` lists every reason.

    Each problem is one line that starts with the JSON-path of the offending
    value (``$.routes[2].upstream: ...``), so a user can fix them all at once.
    """

    status_hint = 500

    def __init__(
        self, problems: Sequence[str], *, source: str = "", raw: Mapping[str, Any] | None = None
    ) -> None:
        self.problems: list[str] = list(problems)
        self.source = source
        #: The parsed document, when it could be read: lets later checks (the
        #: plugin tables) still run, so that every problem is reported at once.
        self.raw = raw
        head = f"invalid configuration{f' in {source}' if source else ''}"
        super().__init__(head + ":\n" + "\n".join(f"  {p}" for p in self.problems))


class PluginError(ProxyError):
    """A plugin failed inside a hook: it raised, or missed its deadline.

    The original exception is ``__cause__``; :attr:`plugin` is the instance name.
    """

    status_hint = 502

    def __init__(self, plugin: str, hook: str, message: str = "") -> None:
        self.plugin = plugin
        self.hook = hook
        super().__init__(message or f"plugin {plugin!r} failed in {hook}")


class ProtocolError(ProxyError):
    """An HTTP message broke the protocol; direct instances are not raised."""

    status_hint = 400


class LocalProtocolError(ProtocolError):
    """We (or a plugin) tried to send something the protocol does not allow."""

    status_hint = 500


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol does not allow.

    ``status_hint`` says which 4xx fits (400, 408, 413, 414, 431, 501 ...).
    """


class UpstreamError(ProxyError):
    """Talking to the upstream failed."""

    status_hint = 502


class UpstreamConnectError(UpstreamError):
    """The upstream could not be reached (refused, unreachable, TLS failure)."""


class UpstreamUnavailable(UpstreamError):
    """No target of the route's group may be used now (all unhealthy or ejected).

    The kernel answers ``503`` with ``Retry-After: retry_after_s``.
    """

    status_hint = 503

    def __init__(self, message: str = "", *, retry_after_s: int = 0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class UpstreamTimeout(UpstreamError):
    """The upstream did not connect or answer within its deadline."""

    status_hint = 504
