"""What a proxy must change in a message it forwards (RFC 9110 §7.6, RFC 7239).

Pure functions over header field lists; no I/O. The kernel applies them to
every request it sends upstream and every response it relays, after plugins
ran, so a plugin cannot accidentally forward a hop-by-hop field.

- Hop-by-hop fields are removed: the fixed list below plus every field the
  ``Connection`` header names (RFC 9110 §7.6.1).
- ``Proxy-Authorization`` is never forwarded; it is for us (RFC 9110 §11.7.2).
- ``Via`` gets our entry appended (RFC 9110 §7.6.3).
- ``X-Forwarded-For`` / ``Forwarded``: a client we do not trust cannot choose
  what the upstream believes about the chain; its values are replaced.
  From a trusted proxy, our hop is appended to what it sent.

May import: stdlib, attrs, kernel.protocol.events.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

import attrs

from kernel.protocol.events import Fields

__all__ = [
    "HOP_BY_HOP",
    "ForwardingPolicy",
    "canonical_length",
    "connection_tokens",
    "downstream_response_fields",
    "strip_hop_by_hop",
    "upstream_request_fields",
]

# RFC 9110 §7.6.1 names Connection, Proxy-Connection, Keep-Alive, TE,
# Transfer-Encoding and Upgrade; Trailer is hop-by-hop in practice (RFC 2616
# §13.5.1 listed it) and Proxy-Authenticate/-Authorization concern only the
# proxy hop (§11.7). HTTP2-Settings belongs to the h2c upgrade of one
# connection (RFC 7540 §3.2.1), which we never honour nor pass on.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"proxy-connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"http2-settings",
        b"proxy-authorization",
        b"proxy-authenticate",
    }
)
# A client may name any field in Connection; these we never drop on its say-so,
# because the kernel itself depends on them.
_PROTECTED = frozenset({b"host", b"content-length"})

_IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def connection_tokens(fields: Fields) -> set[bytes]:
    """Lower-cased field names listed in every ``Connection`` header."""
    out: set[bytes] = set()
    for name, value in fields:
        if name == b"connection":
            for token in value.split(b","):
                token = token.strip().lower()
                if token:
                    out.add(token)
    return out


def strip_hop_by_hop(fields: Fields, *, keep_proxy_auth: bool = False) -> Fields:
    """``fields`` without hop-by-hop fields (a new list; the input is untouched).

    ``keep_proxy_auth`` keeps ``Proxy-Authorization`` so that a plugin
    (forward-proxy auth) can read it; it is removed again on the way out.
    """
    drop = HOP_BY_HOP
    listed = connection_tokens(fields)
    if listed:
        drop = drop | (listed - _PROTECTED)
    if keep_proxy_auth and b"proxy-authorization" not in listed:
        drop = drop - {b"proxy-authorization"}
    return [(n, v) for n, v in fields if n not in drop]


@attrs.frozen
class ForwardingPolicy:
    """How to describe the hop we add; built once per generation."""

    via: bytes = b"1.1 trellis"  # for HTTP/1.1 messages; empty: add no Via
    x_forwarded: bool = True
    forwarded: bool = True
    trusted: tuple[_IPNetwork, ...] = ()
    #: The pseudonym alone (``via`` is ``b"1.1 " + pseudonym``).
    pseudonym: bytes = b"trellis"
    #: TRACE is served (``[server] trace``); else refused with 501.
    trace: bool = False

    @classmethod
    def build(
        cls,
        *,
        via: str,
        x_forwarded: bool,
        forwarded: bool,
        trusted: Iterable[str],
        trace: bool = False,
    ) -> ForwardingPolicy:
        return cls(
            via=f"1.1 {via}".encode("ascii") if via else b"",
            x_forwarded=x_forwarded,
            forwarded=forwarded,
            trusted=tuple(ipaddress.ip_network(t, strict=False) for t in trusted),
            pseudonym=via.encode("ascii"),
            trace=trace,
        )

    def via_for(self, version: bytes) -> bytes:
        """Our Via entry for a message we received as HTTP/``version``
        (RFC 9110 §7.6.3: the protocol of the message received)."""
        if version == b"1.1" or not self.via:
            return self.via
        return version + b" " + self.pseudonym

    def trusts(self, address: str) -> bool:
        if not self.trusted:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.trusted)


#: Fields that frame a request or that we set for the upstream: a name that
#: differs from one only by ``_`` for ``-`` is dropped, since CGI-style
#: upstreams (CGI, WSGI, PHP) read both as the same variable
#: (``HTTP_X_FORWARDED_FOR``), which would let a client forge ours.
_UNDERSCORE_TWINS = frozenset(
    (
        b"content-length", b"transfer-encoding", b"host", b"connection", b"keep-alive",
        b"proxy-connection", b"te", b"trailer", b"upgrade", b"expect", b"via",
        b"forwarded", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host",
        b"proxy-authorization",
    )
)  # fmt: skip


#: Fields :func:`upstream_request_fields` never copies: the request sender
#: writes the framing and the connection's own fields itself.
_NOT_COPIED = HOP_BY_HOP | {b"expect"}


def _forwarded_node(address: str) -> str:
    # RFC 7239 §6: IPv6 addresses are bracketed and the node quoted.
    return f'"[{address}]"' if ":" in address else address


def upstream_request_fields(
    fields: Fields,
    policy: ForwardingPolicy,
    *,
    client_address: str,
    scheme: str,
    host: bytes,
    version: bytes = b"1.1",
    framing: Sequence[tuple[bytes, bytes]] | None = None,
) -> Fields:
    """The fields to send upstream: ``fields`` (already free of hop-by-hop
    fields except perhaps Proxy-Authorization) plus our Via and forwarding
    fields. Returns a new list.

    A field named like one of those with ``_`` for ``-``
    (``x_forwarded_for``) is dropped (see ``_UNDERSCORE_TWINS``).
    The client's ``Expect`` is not copied: on HTTP/1.0 or without a body it
    means nothing, the codecs refuse any expectation but ``100-continue``
    (417), and that one the request sender adds itself when it asks an
    HTTP/1.1 upstream (:mod:`kernel.io.sendrequest`). Nor are the hop-by-hop
    fields, whoever set them (a plugin, after the client's were stripped):
    the request sender adds the WebSocket upgrade itself. With ``framing``
    (what the request sender frames the body by), every ``Content-Length``
    is dropped and ``framing`` goes last instead: a plugin's
    ``content-length: 5`` on a 16-byte body would have made the upstream
    take a shorter, complete request. ``version`` is the client's HTTP
    version, for our Via entry.
    """
    out: Fields = []
    trusted = policy.trusts(client_address)
    xff_prior: list[bytes] = []
    fwd_prior: list[bytes] = []
    via_prior: list[bytes] = []
    for name, value in fields:
        if name in _NOT_COPIED:
            continue
        if b"_" in name and name.replace(b"_", b"-") in _UNDERSCORE_TWINS:
            continue
        if name == b"via":
            via_prior.append(value)
            continue
        if name == b"x-forwarded-for":
            if trusted:
                xff_prior.append(value)
            continue
        if name == b"forwarded":
            if trusted:
                fwd_prior.append(value)
            continue
        if name == b"content-length":
            if framing is None:  # passed on, as the number we framed by
                out.append((name, canonical_length(value) if value[:1] == b"0" else value))
            continue
        if name in (b"x-forwarded-proto", b"x-forwarded-host") and policy.x_forwarded:
            if trusted:
                out.append((name, value))
            continue
        out.append((name, value))
    if policy.via:
        out.append((b"via", b", ".join([*via_prior, policy.via_for(version)])))
    elif via_prior:
        out.append((b"via", b", ".join(via_prior)))
    addr = client_address.encode("ascii")
    if policy.x_forwarded:
        out.append((b"x-forwarded-for", b", ".join([*xff_prior, addr])))
        if not (trusted and any(n == b"x-forwarded-proto" for n, _ in out)):
            out.append((b"x-forwarded-proto", scheme.encode("ascii")))
        if host and not (trusted and any(n == b"x-forwarded-host" for n, _ in out)):
            out.append((b"x-forwarded-host", host))
    elif trusted and xff_prior:
        out.append((b"x-forwarded-for", b", ".join(xff_prior)))
    if policy.forwarded:
        node = f"for={_forwarded_node(client_address)};proto={scheme}"
        if host:
            node += f';host="{host.decode("latin-1")}"'
        out.append((b"forwarded", b", ".join([*fwd_prior, node.encode("latin-1")])))
    elif trusted and fwd_prior:
        out.append((b"forwarded", b", ".join(fwd_prior)))
    if framing:
        out += framing
    return out


def canonical_length(value: bytes) -> bytes:
    """A validated Content-Length without its leading zeros (``b"007"`` -> ``b"7"``).

    RFC 9110 §8.6 allows them, but a recipient that reads them as octal, or
    refuses them, would frame the message differently from us: what we pass
    on is the number we framed by.
    """
    return b"%d" % int(value)


def downstream_response_fields(
    fields: Fields, policy: ForwardingPolicy, version: bytes = b"1.1"
) -> Fields:
    """The fields of an upstream response (received as HTTP/``version``) as
    the client should get them."""
    out = strip_hop_by_hop(fields)
    for i, (name, value) in enumerate(out):
        if name == b"content-length" and value[:1] == b"0" and len(value) > 1:
            out[i] = (name, canonical_length(value))
    if policy.via:
        prior = [v for n, v in out if n == b"via"]
        if prior:
            out = [(n, v) for n, v in out if n != b"via"]
        out.append((b"via", b", ".join([*prior, policy.via_for(version)])))
    return out
