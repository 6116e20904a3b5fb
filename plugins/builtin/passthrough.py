"""Relay TLS connections for some SNI names, unopened, to another server.

On a listener with ``passthrough = true`` in ``[listeners.tls]``, the kernel
reads the ClientHello and asks ``trellis_tls_passthrough``; this plugin
answers from a table of names::

    [plugins.passthrough]
    names = { "db.example.com" = "tls://127.0.0.1:5433", "*.internal.example" = "tls://10.0.0.9" }

A name is exact, or ``*.domain``, which matches any name ending in
``.domain`` on a dot boundary (``a.domain``, ``a.b.domain``; not ``domain``
itself), as the router's ``host`` does. An exact name wins; among wildcards
the longest domain wins. The upstream is ``tls://host[:port]`` (port 443 when
left out): the raw TLS bytes go there, so that server holds the certificate.
Connections without SNI, or for a name not listed, are terminated by the
proxy as usual.

May import: stdlib, attrs, sdk.
"""

from __future__ import annotations

from typing import Any

import attrs

import sdk

__all__ = ["PassthroughConfig", "PassthroughPlugin", "parse_name", "parse_upstream"]


def parse_name(text: str) -> tuple[str, bool]:
    """``"*.Internal.Example"`` -> ``("internal.example", True)``; raises ValueError for people."""
    return sdk.parse_host_pattern(text, noun="name")


def parse_upstream(url: str) -> sdk.Origin:
    """``tls://host[:port]`` -> ``Origin("tls", host, port)`` (443 by default); no path."""
    scheme, sep, rest = url.partition("://")
    if scheme != "tls" or not sep:
        raise ValueError(f"{url!r} is not a tls://host[:port] address")
    if rest.rstrip("/") != rest.partition("/")[0]:
        raise ValueError(f"{url!r} has a path: raw TLS has none")
    origin, _ = sdk.Origin.parse(f"https://{rest.rstrip('/')}")
    return sdk.Origin("tls", origin.host, origin.port)


# A name and its address, checked one entry at a time (a deep_mapping): each
# bad one is listed at its own key (``names.db``), even beside an entry of
# the wrong type.
def _name(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    parse_name(value)


def _upstream(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    parse_upstream(value)


def _distinct(_: object, attribute: attrs.Attribute[Any], value: dict[str, str]) -> None:
    # A check of the whole table: it runs once every entry is valid.
    seen: dict[tuple[str, bool], str] = {}
    for pattern in value:
        key = parse_name(pattern)
        if key in seen:
            raise ValueError(f"{pattern!r} and {seen[key]!r} are the same name")
        seen[key] = pattern


@attrs.frozen(kw_only=True)
class PassthroughConfig:
    """The ``[plugins.passthrough]`` table."""

    #: SNI name (exact or ``*.domain``) -> ``tls://host[:port]`` to relay the raw bytes to.
    names: dict[str, str] = attrs.field(
        factory=dict, validator=[attrs.validators.deep_mapping(_name, _upstream), _distinct]
    )


class PassthroughPlugin:
    """Relay TLS connections for listed SNI names, unopened, to another server."""

    config_class = PassthroughConfig

    def __init__(self, config: PassthroughConfig | None = None) -> None:
        self.config = config if config is not None else PassthroughConfig()
        self._exact: dict[str, sdk.Origin] = {}
        wildcards: list[tuple[str, sdk.Origin]] = []
        for pattern, upstream in self.config.names.items():
            name, wildcard = parse_name(pattern)
            if wildcard:
                wildcards.append((name, parse_upstream(upstream)))
            else:
                self._exact[name] = parse_upstream(upstream)
        # Longest domain first: the most specific wildcard wins.
        self._wildcards = sorted(wildcards, key=lambda item: -len(item[0]))

    def select(self, server_name: str) -> sdk.Origin | None:
        """Where to relay ``server_name`` (lower-case), or ``None``."""
        name = server_name.lower().rstrip(".")
        if not name:
            return None
        origin = self._exact.get(name)
        if origin is not None:
            return origin
        for domain, target in self._wildcards:
            if sdk.host_matches(name, domain, True):
                return target
        return None

    @sdk.hookimpl
    def trellis_tls_passthrough(
        self, server_name: str, client: sdk.ClientInfo
    ) -> sdk.Origin | None:
        return self.select(server_name)
