"""TLS contexts from the configuration: :class:`ServerTls` per listener, client ones per upstream.

Everything here is built when a generation is built: certificate and key
files are read (so a reload re-reads them) and checked with ``cryptography``,
and each problem comes back as a config problem with its path, like the rest
of the configuration (``$.listeners[1].tls.certificates[0].key: key does not
match the certificate ...``). A certificate that has expired or is not valid
yet is only a *warning* (logged, and kept in :attr:`ServerTls.warnings`): the
proxy still starts, because refusing would take every other name and
listener down with it.

SNI selection on a listener (:meth:`ServerTls.select`), for the name the
client sent, lower-cased and without a trailing dot:

1. a configured certificate naming it exactly;
2. the certificate provider (:meth:`ServerTls.set_certificate_provider`, fed by
   ``trellis_tls_certificate``), whose answers are cached per name (LRU);
3. a configured wildcard ``*.example.com``, which covers exactly one label
   (``a.example.com``, not ``a.b.example.com`` nor ``example.com``);
4. the first certificate (also for clients that send no SNI).

No sockets here: :mod:`kernel.io` wraps connections with these contexts.

May import: stdlib, attrs, cryptography, kernel.config, kernel.pem, sdk.
"""

from __future__ import annotations

import collections
import functools
import logging
import ssl
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import attrs
from cryptography import x509

from kernel.config.transport import ListenerTls, UpstreamTls, host_pattern
from kernel.pem import KeyPair, load_pem_pair, read_ca, read_key_pair

__all__ = [
    "CACHE_SIZE",
    "CertificateProvider",
    "ServerTls",
    "build_client_tls",
    "build_server_tls",
    "check_client_tls",
    "default_client_context",
    "peer_subject",
]

log = logging.getLogger("kernel.tls")

#: Most contexts :class:`ServerTls` keeps for names the provider answered.
CACHE_SIZE = 1024
#: ``server_name -> (cert_chain_pem, key_pem)`` or ``None`` to decline.
CertificateProvider = Callable[[str], "tuple[bytes, bytes] | None"]

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


# --------------------------------------------------------------- server side
@attrs.frozen
class _ServerParams:
    """What every context of one listener shares (all contexts must agree: see select)."""

    min_version: ssl.TLSVersion
    max_version: ssl.TLSVersion | None
    alpn: tuple[str, ...]
    verify_mode: ssl.VerifyMode
    client_ca: str | None

    def context(self, pair: KeyPair | tuple[bytes, bytes]) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = self.min_version
        if self.max_version is not None:
            ctx.maximum_version = self.max_version
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
        ctx.set_alpn_protocols(list(self.alpn))
        if self.client_ca is not None:
            ctx.verify_mode = self.verify_mode
            ctx.load_verify_locations(cadata=self.client_ca)
        if isinstance(pair, KeyPair):
            load_pem_pair(ctx, pair.chain_pem, pair.key_pem)
        else:
            load_pem_pair(ctx, *pair)
        return ctx


class ServerTls:
    """A listener's TLS contexts, one per configured certificate, chosen by SNI.

    :attr:`context` is the one to wrap connections with: its ``sni_callback``
    switches each connection to the context :meth:`select` picks. All
    contexts share versions, ALPN and client-certificate settings.
    """

    def __init__(
        self,
        params: _ServerParams,
        contexts: Sequence[ssl.SSLContext],
        exact: dict[str, ssl.SSLContext],
        wildcard: dict[str, ssl.SSLContext],
        *,
        passthrough: bool = False,
        warnings: Sequence[str] = (),
    ) -> None:
        self._params = params
        self._exact = exact
        self._wildcard = wildcard
        self._provider: CertificateProvider | None = None
        self._cache: collections.OrderedDict[str, ssl.SSLContext] = collections.OrderedDict()
        self._sni: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
        #: The default context (the first certificate); wrap connections with it.
        self.context: ssl.SSLContext = contexts[0]
        #: ALPN protocols offered, in preference order.
        self.alpn: tuple[str, ...] = params.alpn
        #: Whether ``trellis_tls_passthrough`` is asked before the handshake.
        self.passthrough = passthrough
        #: Non-fatal findings while building (expired certificates).
        self.warnings: tuple[str, ...] = tuple(warnings)
        for ctx in contexts:
            ctx.sni_callback = self._on_sni

    @property
    def names(self) -> tuple[str, ...]:
        """Configured SNI names, exact ones then ``*.`` wildcards (for ``kernel explain``)."""
        return (*self._exact, *(f"*.{d}" for d in self._wildcard))

    def set_certificate_provider(self, fn: CertificateProvider | None) -> None:
        """Ask ``fn(server_name)`` for names no configured certificate names exactly.

        ``fn`` returns ``(cert_chain_pem, key_pem)`` or ``None``. It runs inside
        the handshake, so it must be quick and must not block. A built
        context is cached per name (:data:`CACHE_SIZE`, least recently used
        first out) and ``fn`` is not asked again for that name; a ``None`` is
        not cached. Setting a provider (or ``None``) empties the cache.
        """
        self._provider = fn
        self._cache.clear()

    def select(self, server_name: str | None) -> ssl.SSLContext:
        """The context for ``server_name`` (see the module docstring for the order).

        An exception from the provider, or a certificate OpenSSL refuses,
        propagates (the handshake callback turns it into an alert).
        """
        name = (server_name or "").lower().rstrip(".")
        if not name:
            return self.context
        ctx = self._exact.get(name)
        if ctx is not None:
            return ctx
        if self._provider is not None:
            ctx = self._provided(name, self._provider)
            if ctx is not None:
                return ctx
        _, dot, parent = name.partition(".")
        if dot and parent:
            ctx = self._wildcard.get(parent)
            if ctx is not None:
                return ctx
        return self.context

    def _provided(self, name: str, provider: CertificateProvider) -> ssl.SSLContext | None:
        ctx = self._cache.get(name)
        if ctx is not None:
            self._cache.move_to_end(name)
            return ctx
        pair = provider(name)
        if pair is None:
            return None
        ctx = self._params.context(pair)
        ctx.sni_callback = self._on_sni
        self._cache[name] = ctx
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return ctx

    def sni_of(self, ssl_object: object) -> str:
        """The SNI name the client sent on this connection (``""`` when none)."""
        return self._sni.get(ssl_object, "")

    def _on_sni(self, ssl_object: Any, server_name: str | None, _: ssl.SSLContext) -> int | None:
        if server_name:
            self._sni[ssl_object] = server_name.lower().rstrip(".")
        try:
            ctx = self.select(server_name)
        except Exception as exc:
            log.error("TLS: no certificate for %r: %s: %s", server_name, type(exc).__name__, exc)
            return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR
        if ctx is not ssl_object.context:
            ssl_object.context = ctx
        return None


def build_server_tls(
    cfg: ListenerTls, path: str, *, http2: bool
) -> tuple[ServerTls | None, list[str]]:
    """A listener's :class:`ServerTls` from ``[listeners.tls]`` at ``path``, or its problems."""
    problems: list[str] = []
    warnings: list[str] = []
    alpn = tuple(p for p in cfg.alpn if http2 or p != "h2")
    if not alpn:
        problems.append(f"{path}.alpn: lists only 'h2', but HTTP/2 is off on this listener")
    client_ca: str | None = None
    if cfg.client_auth != "none":
        client_ca = read_ca(cfg.client_ca, f"{path}.client_ca", problems)
    pairs: list[KeyPair | None] = []
    for i, cc in enumerate(cfg.certificates):
        where = f"{path}.certificates[{i}]"
        pairs.append(
            read_key_pair(cc.cert, cc.key, (f"{where}.cert", f"{where}.key"), problems, warnings)
        )
    if problems:
        return None, problems
    params = _ServerParams(
        min_version=_VERSIONS[cfg.min_version],
        max_version=_VERSIONS[cfg.max_version] if cfg.max_version else None,
        alpn=alpn,
        verify_mode=ssl.CERT_REQUIRED if cfg.client_auth == "required" else ssl.CERT_OPTIONAL,
        client_ca=client_ca,
    )
    contexts: list[ssl.SSLContext] = []
    exact: dict[str, ssl.SSLContext] = {}
    wildcard: dict[str, ssl.SSLContext] = {}
    claimed: dict[str, int] = {}  # name -> certificate index that listed it in `names`
    for i, (cc, pair) in enumerate(zip(cfg.certificates, pairs, strict=True)):
        where = f"{path}.certificates[{i}]"
        assert pair is not None  # no problems above
        try:
            ctx = params.context(pair)
        except ssl.SSLError as exc:
            problems.append(f"{where}.cert: OpenSSL refused the certificate or key: {exc}")
            continue
        contexts.append(ctx)
        names = cc.names or list(pair.dns_names)
        if not names and i > 0:
            problems.append(
                f"{where}: serves no name (no DNS names in the certificate; list them in names)"
            )
        for raw in names:
            try:
                host, is_wild = host_pattern(raw)
            except ValueError:
                continue  # an odd SAN entry; configured names were checked already
            key = f"*.{host}" if is_wild else host
            if cc.names:  # listed on purpose: twice is a mistake (from SANs, the first wins)
                if key in claimed:
                    first = claimed[key]
                    problems.append(
                        f"{where}.names: {raw!r} is already served by certificates[{first}]"
                    )
                claimed.setdefault(key, i)
            (wildcard if is_wild else exact).setdefault(host, ctx)
    if problems:
        return None, problems
    for w in warnings:
        log.warning("%s", w)
    return ServerTls(
        params, contexts, exact, wildcard, passthrough=cfg.passthrough, warnings=warnings
    ), []


# --------------------------------------------------------------- client side
def build_client_tls(
    cfg: UpstreamTls, path: str, *, alpn: Sequence[str]
) -> tuple[ssl.SSLContext | None, list[str]]:
    """The context for https upstreams from ``[upstream.tls]`` (or a route's) at ``path``.

    Verifies with ``ca_file`` or the system store, checks the host name
    (unless ``verify = false``), presents ``cert_file``/``key_file`` when
    set, and offers ``alpn``. The name to send and verify is the caller's:
    ``cfg.server_name`` or the upstream's host.
    """
    problems: list[str] = []
    warnings: list[str] = []
    cadata, pair = _client_files(cfg, path, problems, warnings)
    if problems:
        return None, problems
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname
    if not cfg.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif cadata is not None:
        ctx.load_verify_locations(cadata=cadata)
    else:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = _VERSIONS[cfg.min_version]
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    if pair is not None:
        try:
            load_pem_pair(ctx, pair.chain_pem, pair.key_pem)
        except ssl.SSLError as exc:
            return None, [f"{path}.cert_file: OpenSSL refused the certificate or key: {exc}"]
    for w in warnings:
        log.warning("%s", w)
    return ctx, []


@functools.cache
def default_client_context() -> ssl.SSLContext:
    """A client context with ``[upstream.tls]``'s *defaults*, built once per process.

    For an https origin a plugin picked on a route that has no
    :attr:`~kernel.routes.RouteRuntime.client_tls` (its own upstream is not
    https): the system's CA store, host-name checks, TLS 1.2 or later, ALPN
    ``http/1.1``. It does not follow a configured ``[upstream.tls]``.
    """
    ctx, problems = build_client_tls(UpstreamTls(), "$.upstream.tls", alpn=("http/1.1",))
    assert ctx is not None, problems  # the defaults name no file
    return ctx


def check_client_tls(cfg: UpstreamTls, path: str) -> list[str]:
    """The file problems :func:`build_client_tls` would report, without building a context.

    For TLS settings no https upstream uses yet (loading the system's CA
    store costs tens of milliseconds, so contexts are built only when used).
    """
    problems: list[str] = []
    _client_files(cfg, path, problems, [])
    return problems


def _client_files(
    cfg: UpstreamTls, path: str, problems: list[str], warnings: list[str]
) -> tuple[str | None, KeyPair | None]:
    cadata = read_ca(cfg.ca_file, f"{path}.ca_file", problems) if cfg.ca_file else None
    pair: KeyPair | None = None
    if cfg.cert_file:
        where = (f"{path}.cert_file", f"{path}.key_file")
        pair = read_key_pair(cfg.cert_file, cfg.key_file, where, problems, warnings)
    return cadata, pair


class _HasPeerCert(Protocol):
    def getpeercert(self, binary_form: bool) -> Any: ...


def peer_subject(ssl_object: _HasPeerCert) -> str | None:
    """The verified client certificate's subject as RFC 4514 text, or ``None`` without one."""
    der = ssl_object.getpeercert(True)
    if not der:
        return None
    return x509.load_der_x509_certificate(der).subject.rfc4514_string()
