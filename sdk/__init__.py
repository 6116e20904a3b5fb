"""Trellis SDK: the only package plugin authors import.

Everything public is re-exported here (the ``sdk._*`` modules are private);
:mod:`sdk.hookspecs` documents every hook and :mod:`sdk.testing` is the test
kit. ``tests/sdk/test_exports.py`` pins this list: changing it is deliberate
and recorded in CHANGELOG.md.

A minimal plugin::

    import sdk

    class HelloPlugin:
        \"\"\"Answer every request with a greeting.\"\"\"

        @sdk.hookimpl
        def trellis_request(self, flow: sdk.Flow) -> sdk.Response:
            return sdk.Response.make(200, "hello\\n")

May import: stdlib, attrs, cattrs, tomlkit, pluggy (trio only in sdk.testing and
its sdk._chain).
"""

from __future__ import annotations

from sdk._balance import Balancer, Group, Target
from sdk._config import EnvText, make_converter, structure, unstructure
from sdk._errors import (
    ClientDisconnected,
    ConfigError,
    LocalProtocolError,
    PluginError,
    ProtocolError,
    ProxyError,
    RemoteProtocolError,
    UpstreamConnectError,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from sdk._fieldchecks import (
    header_name_validator,
    header_value_validator,
    is_token,
    method_validator,
)
from sdk._flow import ClientInfo, Flow, Timings
from sdk._hosts import host_matches, host_of, parse_host_pattern
from sdk._http import Headers, Origin, Request, Response
from sdk._lifecycle import ServerInfo, StartupContext
from sdk._markers import ENTRY_POINT_GROUP, HOOK_PREFIX, PROJECT, hookimpl
from sdk._stash import AUTH_USER, Stash, StashKey
from sdk._tls import TlsCertificate
from sdk._trace import TRACE, TraceContext
from sdk._validators import one_or_many
from sdk._version import API_VERSION

__all__ = [
    "API_VERSION",
    "AUTH_USER",
    "ENTRY_POINT_GROUP",
    "HOOK_PREFIX",
    "PROJECT",
    "TRACE",
    "Balancer",
    "ClientDisconnected",
    "ClientInfo",
    "ConfigError",
    "EnvText",
    "Flow",
    "Group",
    "Headers",
    "LocalProtocolError",
    "Origin",
    "PluginError",
    "ProtocolError",
    "ProxyError",
    "RemoteProtocolError",
    "Request",
    "Response",
    "ServerInfo",
    "StartupContext",
    "Stash",
    "StashKey",
    "Target",
    "Timings",
    "TlsCertificate",
    "TraceContext",
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "header_name_validator",
    "header_value_validator",
    "hookimpl",
    "host_matches",
    "host_of",
    "is_token",
    "make_converter",
    "method_validator",
    "one_or_many",
    "parse_host_pattern",
    "structure",
    "unstructure",
]


def _fixup_module_metadata() -> None:
    # As trio does: tracebacks and docs say ``sdk.Flow``, not ``sdk._flow.Flow``.
    for name in __all__:
        obj = globals()[name]
        if getattr(obj, "__module__", "").startswith("sdk._"):
            try:
                obj.__module__ = "sdk"
            except (AttributeError, TypeError):
                pass


_fixup_module_metadata()
del _fixup_module_metadata
