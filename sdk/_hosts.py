"""Host names as plugins match them: ``host[:port]`` to a host, and ``*.domain`` patterns.

Routing, interception and TLS passthrough all name hosts the same way, so the
rules live here once: a pattern is an exact host or ``*.example.com``, which
covers every name *below* ``example.com`` on a dot boundary (``a.example.com``,
``a.b.example.com``; not ``example.com`` itself, nor ``badexample.com``).

May import: stdlib.
"""

from __future__ import annotations

import ipaddress
import re

__all__ = ["host_matches", "host_of", "parse_host_pattern"]

# Dot-separated DNS labels of letters, digits, '-' and '_' (lower-case here).
_LABELS = re.compile(r"(?:[a-z0-9_-]{1,63}\.)*[a-z0-9_-]{1,63}")


def host_of(authority: str) -> str:
    """The host of ``host[:port]`` or ``[v6]:port``: lower-case, no brackets, no trailing dot.

    Never raises: a malformed authority yields something no pattern names.
    """
    if authority.startswith("["):
        host = authority[1:].partition("]")[0]
    else:
        host = authority.partition(":")[0]
    return host.rstrip(".").lower()


def parse_host_pattern(text: str, *, noun: str = "host") -> tuple[str, bool]:
    """``"*.Example.com."`` -> ``("example.com", True)``; ``"[::1]"`` -> ``("::1", False)``.

    The name comes back lower-case, without brackets or a trailing dot, with
    whether it was a wildcard. A wildcard is only allowed as the whole first
    label, followed by a domain name. Raises :class:`ValueError` with a
    message for people; ``noun`` names the thing in it ("host", "domain").
    """
    name = text.strip().lower()
    wildcard = name.startswith("*.")
    if wildcard:
        name = name[2:]
    name = name.rstrip(".")
    if not name:
        raise ValueError(
            f"invalid {noun} {text!r}: '*.' needs a {noun} after it"
            if wildcard
            else f"empty {noun} {text!r}"
        )
    if "*" in name:
        raise ValueError(
            f"invalid {noun} {text!r}: a wildcard is only allowed as the whole first label"
            " ('*.example.com')"
        )
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    if ":" in name:
        try:
            ipaddress.IPv6Address(name)
        except ValueError:
            raise ValueError(
                f"invalid {noun} {text!r}: give the host without a port (ports are ignored)"
            ) from None
        if wildcard:
            raise ValueError(f"invalid {noun} {text!r}: a wildcard needs a domain name")
        return name, False
    if not _LABELS.fullmatch(name):
        raise ValueError(
            f"invalid {noun} {text!r}: expected a name such as 'example.com' or '*.example.com'"
        )
    return name, wildcard


def host_matches(host: str, name: str, wildcard: bool) -> bool:
    """Whether ``host`` (from :func:`host_of`) is ``name``, or below it for a wildcard."""
    if not wildcard:
        return host == name
    return len(host) > len(name) + 1 and host.endswith(name) and host[-len(name) - 1] == "."
