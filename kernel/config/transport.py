"""The TLS, HTTP/2 and upstream-transport tables of the kernel's configuration.

These are the nested tables of :mod:`kernel.config.model`, kept apart so
each module stays small: ``[[listeners]] tls`` (:class:`ListenerTls` with its
:class:`CertificateConfig` entries), ``[server.h2]`` (:class:`H2Section`),
``[upstream.tls]`` (:class:`UpstreamTls`) and ``[[routes]] transport``
(:class:`TransportConfig`). Only values are checked here; whether a file can be
read and holds a usable certificate is checked when a generation is built
(:mod:`kernel.tls`), so a reload re-reads the files.

May import: stdlib, attrs.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import attrs

from kernel.config.checks import non_negative, positive

__all__ = [
    "ALPN_PROTOCOLS",
    "CertificateConfig",
    "H2Section",
    "ListenerTls",
    "RetryConfig",
    "TransportConfig",
    "UpstreamTls",
    "host_pattern",
]

TlsVersion = Literal["1.2", "1.3"]
ClientAuth = Literal["none", "optional", "required"]

#: The ALPN protocol ids a listener may offer (RFC 7301; RFC 9113 §3.2).
ALPN_PROTOCOLS = ("h2", "http/1.1")
#: RFC 9113 §6.5.2 and §6.9.1: the largest frame size and flow-control window.
_MAX_FRAME = 16_777_215
_MAX_WINDOW = 2**31 - 1

# A DNS name as SNI carries it (RFC 6066 §3: no IP literals): dot-separated
# labels of letters, digits, '-' and '_' (internal names use '_').
_DNS_NAME = re.compile(r"(?:[a-z0-9_-]{1,63}\.)*[a-z0-9_-]{1,63}")


def host_pattern(text: str) -> tuple[str, bool]:
    """``"*.Example.COM."`` -> ``("example.com", True)``; ``"a.b"`` -> ``("a.b", False)``.

    The result is lower-case without a trailing dot; a wildcard is only
    allowed as the whole first label. Raises :class:`ValueError` for people.
    """
    host = text.strip().lower().rstrip(".")
    wildcard = host.startswith("*.")
    if wildcard:
        host = host[2:]
    if "*" in host:
        raise ValueError(f"invalid name {text!r}: a wildcard is only allowed as '*.domain'")
    if not host or len(host) > 253 or not _DNS_NAME.fullmatch(host):
        raise ValueError(f"invalid name {text!r}: expected a DNS name such as 'www.example.com'")
    return host, wildcard


# -------------------------------------------------------------- validators


def _required_path(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if not value.strip():
        raise ValueError("must be a file path")


# A validator of one item (``_name``, ``_protocol``, ``_status``) goes in a
# deep_iterable: each bad item of the list is then listed at its own index.
def _name(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    host_pattern(value)


def _certificates(_: object, attribute: attrs.Attribute[Any], value: list[Any]) -> None:
    if not value:
        raise ValueError("must list at least one certificate (the first is the default)")


def _protocol(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if value not in ALPN_PROTOCOLS:
        raise ValueError(f"unknown protocol {value!r} (known: 'h2', 'http/1.1')")


def _alpn(_: object, attribute: attrs.Attribute[Any], value: list[str]) -> None:
    if not value:
        raise ValueError("must list at least one protocol ('h2', 'http/1.1')")
    if len(set(value)) != len(value):
        raise ValueError("lists a protocol twice")


def _max_version(inst: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if value and value < inst.min_version:
        raise ValueError(f"{value!r} is below min_version {inst.min_version!r}")


def _client_auth(inst: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if value != "none" and not inst.client_ca:
        raise ValueError(f"{value!r} needs client_ca (the CA file that signs client certificates)")


def _pair(other: str) -> Any:
    def check(inst: Any, attribute: attrs.Attribute[Any], value: str) -> None:
        if value and not getattr(inst, other):
            raise ValueError(f"needs {other} too (a client certificate is a cert and its key)")

    return check


def _server_name(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if value and host_pattern(value)[1]:
        raise ValueError(f"invalid name {value!r}: a wildcard cannot be verified against")


def _range(low: int, high: int) -> Any:
    def check(_: object, attribute: attrs.Attribute[Any], value: int) -> None:
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}, got {value!r}")

    return check


# ------------------------------------------------------------------ tables
@attrs.frozen(kw_only=True)
class CertificateConfig:
    """``[[listeners.tls.certificates]]``: one certificate chain and its key."""

    #: Path to the PEM certificate chain: the leaf first, then intermediates.
    cert: str = attrs.field(validator=_required_path)
    #: Path to the PEM private key of the leaf (unencrypted).
    key: str = attrs.field(validator=_required_path)
    #: SNI names this certificate serves, exact or ``*.example.com`` (one label);
    #: empty means the DNS names in the certificate's subjectAltName.
    names: list[str] = attrs.field(factory=list, validator=attrs.validators.deep_iterable(_name))


@attrs.frozen(kw_only=True)
class ListenerTls:
    """``[listeners.tls]``: terminate TLS on this listener."""

    #: Certificates, chosen by SNI; the first one also serves unknown or absent names.
    certificates: list[CertificateConfig] = attrs.field(validator=_certificates)
    #: Lowest TLS version accepted: ``"1.2"`` or ``"1.3"``.
    min_version: TlsVersion = "1.2"
    #: Highest TLS version accepted; ``""`` means the highest the TLS library has.
    max_version: Literal["", "1.2", "1.3"] = attrs.field(default="", validator=_max_version)
    #: ALPN protocols offered, in order of preference; ``h2`` only while HTTP/2 is on.
    alpn: list[str] = attrs.field(
        factory=lambda: ["h2", "http/1.1"],
        validator=[attrs.validators.deep_iterable(_protocol), _alpn],
    )
    #: Ask for a client certificate: ``none``, ``optional`` (verified when sent)
    #: or ``required`` (the handshake fails without one).
    client_auth: ClientAuth = attrs.field(default="none", validator=_client_auth)
    #: PEM file of the CAs that sign client certificates (needed unless client_auth is none).
    client_ca: str = ""
    #: Peek at the ClientHello first: ``trellis_tls_passthrough`` may relay the
    #: raw TLS bytes of some SNI names to another server instead.
    passthrough: bool = False


@attrs.frozen(kw_only=True)
class H2Section:
    """``[server.h2]``: HTTP/2 settings offered to clients (RFC 9113 §6.5.2)."""

    #: The HTTP/2 engine: "trellis" (our frame machine, fast) or "h2" (the
    #: python-hyper library, the reference).
    engine: Literal["trellis", "h2"] = "trellis"
    #: Streams a client may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS).
    max_concurrent_streams: int = attrs.field(default=100, validator=_range(1, _MAX_WINDOW))
    #: Largest decoded header list accepted, in bytes (SETTINGS_MAX_HEADER_LIST_SIZE).
    max_header_list_size: int = attrs.field(default=65536, validator=_range(1, _MAX_WINDOW))
    #: HPACK dynamic table size, in bytes (SETTINGS_HEADER_TABLE_SIZE).
    header_table_size: int = attrs.field(default=4096, validator=_range(0, _MAX_WINDOW))
    #: Flow-control window of each stream, in bytes (SETTINGS_INITIAL_WINDOW_SIZE).
    initial_window_size: int = attrs.field(default=65535, validator=_range(0, _MAX_WINDOW))
    #: Flow-control window of the whole connection, in bytes (raised by WINDOW_UPDATE).
    connection_window: int = attrs.field(default=1048576, validator=_range(65535, _MAX_WINDOW))
    #: Largest frame payload accepted, in bytes (SETTINGS_MAX_FRAME_SIZE).
    max_frame_size: int = attrs.field(default=16384, validator=_range(16384, _MAX_FRAME))
    #: Flood budgets, each counted over ``budget_window_s`` (a token bucket:
    #: the budget is the largest burst and, spread over the window, the
    #: sustained rate). Going over any of them ends the connection with
    #: GOAWAY ENHANCE_YOUR_CALM. Rapid reset (CVE-2023-44487): streams the
    #: client cancels before we finished them, plus streams we refuse.
    reset_budget: int = attrs.field(default=200, validator=_range(1, _MAX_WINDOW))
    #: SETTINGS and PING needing an ACK, PRIORITY, and other frames that carry
    #: no request (CVE-2019-9512/9515).
    control_budget: int = attrs.field(default=1000, validator=_range(1, _MAX_WINDOW))
    #: DATA frames with no data and no END_STREAM (CVE-2019-9518).
    empty_data_budget: int = attrs.field(default=100, validator=_range(1, _MAX_WINDOW))
    #: The window the budgets above are counted over, in seconds.
    budget_window_s: float = attrs.field(default=10.0, validator=positive)
    #: CONTINUATION frames accepted in one header block (CONTINUATION flood).
    max_continuation_frames: int = attrs.field(default=16, validator=_range(0, 1024))


@attrs.frozen(kw_only=True)
class UpstreamTls:
    """``[upstream.tls]``: how https upstreams are verified and what we present to them."""

    #: Verify the upstream's certificate and name; false accepts anything (testing only).
    verify: bool = True
    #: PEM file of the CAs to trust; ``""`` means the system's store.
    ca_file: str = ""
    #: PEM client certificate chain for mutual TLS to the upstream (with key_file).
    cert_file: str = attrs.field(default="", validator=_pair("key_file"))
    #: PEM private key of cert_file.
    key_file: str = attrs.field(default="", validator=_pair("cert_file"))
    #: Name sent as SNI and verified; ``""`` means the upstream URL's host.
    server_name: str = attrs.field(default="", validator=_server_name)
    #: Lowest TLS version accepted: ``"1.2"`` or ``"1.3"``.
    min_version: TlsVersion = "1.2"


def _status(_: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 500 <= value <= 599:
        raise ValueError(f"{value} is not a 5xx status")


@attrs.frozen(kw_only=True)
class RetryConfig:
    """``[upstream.retry]``: when a request is sent to the upstream again.

    Only requests without a body are sent again (a streamed body is gone),
    never after any of the response went to the client, and never a
    WebSocket upgrade. Off by default (``attempts = 1``).
    """

    #: Tries in all, the first included (1 = never retry).
    attempts: int = attrs.field(default=1, validator=_range(1, 10))
    #: Methods that may be sent again (RFC 9110 §9.2.2 idempotent ones by default).
    methods: list[str] = attrs.field(
        factory=lambda: ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"]
    )
    #: Retry when the connection failed (refused, reset, closed) before a response head.
    on_connect_error: bool = True
    #: Retry when the connect or the response head timed out.
    on_timeout: bool = True
    #: Retry when the upstream answered one of these (the answer is dropped).
    statuses: list[int] = attrs.field(
        factory=lambda: [502, 503, 504], validator=attrs.validators.deep_iterable(_status)
    )
    #: First backoff in seconds; each later one doubles, with full jitter.
    backoff_s: float = attrs.field(default=0.025, validator=non_negative)
    #: Retry budget: retries may add at most this share of the route's requests
    #: (plus 10 in reserve); beyond it, the failure is returned as is.
    budget_ratio: float = attrs.field(default=0.2, validator=non_negative)
    #: Overall deadline for all tries, in seconds (0: none; each try still has
    #: its own connect and response timeouts).
    deadline_s: float = attrs.field(default=0.0, validator=non_negative)


@attrs.frozen(kw_only=True)
class TransportConfig:
    """``[routes.transport]``: this route's overrides of ``[upstream]`` (unset keys inherit)."""

    #: Seconds to establish a TCP (and TLS) connection, then 504.
    connect_timeout_s: float | None = attrs.field(default=None, validator=positive)
    #: Seconds from the end of the request to the response head, then 504.
    response_timeout_s: float | None = attrs.field(default=None, validator=positive)
    #: Seconds between two reads of a response body.
    read_timeout_s: float | None = attrs.field(default=None, validator=positive)
    #: Seconds the upstream may take no byte of a request body (while a write waits).
    send_timeout_s: float | None = attrs.field(default=None, validator=positive)
    #: Idle connections kept per origin.
    max_idle_per_host: int | None = attrs.field(default=None, validator=non_negative)
    #: Seconds an idle pooled connection may wait for reuse.
    idle_timeout_s: float | None = attrs.field(default=None, validator=positive)
    #: Offer h2 by ALPN to https upstreams.
    http2: bool | None = None
    #: Always HTTP/2 (h2c prior knowledge for http:// upstreams).
    force_http2: bool | None = None
    #: Replaces ``[upstream.tls]`` as a whole for this route (keys left out take
    #: their defaults, not ``[upstream.tls]``'s).
    tls: UpstreamTls | None = None
    #: Replaces ``[upstream.retry]`` as a whole for this route.
    retry: RetryConfig | None = None
