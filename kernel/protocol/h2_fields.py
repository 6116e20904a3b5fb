"""Safe HTTP/2 <-> HTTP/1.1 field translation (RFC 9113 §8.2-§8.3).

Every stream becomes an HTTP/1.1-shaped flow, and may well be forwarded over
HTTP/1.1, so what HTTP/2 would carry harmlessly (a CR in a value, a
``transfer-encoding``, a ``:path`` with a space) could split or smuggle a
request on the next hop. We validate here, per stream: a bad request is a
stream error (RFC 9113 §8.1.1), never one that kills every stream of the
connection (which is what h2's own checks made of it).

- :func:`request_from_h2`: a decoded request header list to a
  :class:`RequestHead`, or :class:`RemoteProtocolError` with the status to
  answer (400, 431, 501); :func:`salvage_request_head`: what can be told of
  a list it refused.
- :func:`response_from_h2`: a response header list (client side), or
  :class:`RemoteProtocolError` (502).
- :func:`check_trailers`: a received trailer section.
- :func:`response_fields`, :func:`request_fields`, :func:`trailer_fields`:
  what we send, lower-cased, connection-specific fields dropped; raise
  :class:`LocalProtocolError` for what must not go on the wire.

What we send is checked and normalised here alone (the frame machine,
:mod:`.h2_machine`, only encodes it). That includes what h2's outbound
normalisation did besides: credentials (``authorization``,
``proxy-authorization``, cookies under 20 bytes) go out as HPACK
never-indexed fields (RFC 7541 §7.1.3), so no compression context holds them.

Field names and values are held to the same rules as in HTTP/1.1
(:data:`kernel.protocol.http1.LOWER_NAME`, :data:`~kernel.protocol.http1.VALUE`),
and share its memory of the ones already found good: a client repeating its
``user-agent`` on every stream pays a set lookup for it, not two regexes.

May import: stdlib, hpack, kernel.protocol.events, kernel.protocol.http1,
kernel.protocol.validate, sdk._errors.
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

from hpack import NeverIndexedHeaderTuple

from kernel.protocol.events import Fields, RequestHead
from kernel.protocol.http1 import GOOD_NAMES, GOOD_VALUES, LOWER_NAME, VALUE, remember, tokens
from kernel.protocol.validate import NOT_IN_TRAILERS, expectations, host_ok, screen_trailers
from sdk._errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "CONNECTION_SPECIFIC",
    "ParsedRequest",
    "check_trailers",
    "content_length",
    "header_list_size",
    "request_fields",
    "request_from_h2",
    "response_fields",
    "response_from_h2",
    "salvage_request_head",
    "sent_length",
    "trailer_fields",
]

#: RFC 9113 §8.2.2: these make a message malformed; we drop them on sending.
CONNECTION_SPECIFIC: Final = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade")
)
#: Sent HPACK never-indexed, with cookies under 20 bytes (see _sendable).
_CREDENTIALS: Final = frozenset((b"authorization", b"proxy-authorization"))
_REQUEST_PSEUDO: Final = frozenset((b":method", b":scheme", b":authority", b":path", b":protocol"))
_METHOD = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+")  # RFC 9110 §5.6.2 token
_PATH = re.compile(rb"/[\x21\x22\x24-\x7e]*+")  # what an HTTP/1.1 request line can carry
_STATUS = re.compile(rb"[1-5][0-9][0-9]")
_DIGITS = re.compile(rb"[0-9]{1,18}")
_SCHEMES: Final = frozenset((b"http", b"https"))


class ParsedRequest(NamedTuple):
    """What :func:`request_from_h2` found; ``content_length`` None if absent."""

    head: RequestHead
    scheme: bytes
    authority: bytes
    content_length: int | None


def _bad(message: str, status: int = 400) -> RemoteProtocolError:
    return RemoteProtocolError(message, status_hint=status)


def header_list_size(fields: Fields) -> int:
    """The RFC 9113 §6.5.2 size of a header list: names + values + 32 each."""
    return sum(len(n) + len(v) + 32 for n, v in fields)


def content_length(value: bytes, count: int, status: int) -> int:
    """A Content-Length that is one plain decimal number (RFC 9110 §8.6)."""
    if count > 1 or _DIGITS.fullmatch(value) is None:
        raise _bad("invalid or repeated content-length", status)
    return int(value)


def _check_field(name: bytes, value: bytes, status: int) -> None:
    """Raise unless a received field is well-formed and not connection-specific.

    Callers skip the call when ``name in GOOD_NAMES and value in GOOD_VALUES
    and name not in CONNECTION_SPECIFIC`` (the common case, inline).
    """
    if name not in GOOD_NAMES:
        if LOWER_NAME.fullmatch(name) is None:
            if name.lower() != name and LOWER_NAME.fullmatch(name.lower()) is not None:
                raise _bad("upper-case character in a field name", status)
            raise _bad("invalid character in a field name", status)
        remember(GOOD_NAMES, name)
    if value not in GOOD_VALUES:
        if VALUE.fullmatch(value) is None:
            raise _bad(f"invalid {name.decode('ascii')} value", status)
        remember(GOOD_VALUES, value)
    if name in CONNECTION_SPECIFIC:
        raise _bad(f"connection-specific field {name.decode('ascii')}", status)


def request_from_h2(fields: Fields, *, end_stream: bool, max_list_size: int) -> ParsedRequest:
    """Translate a request header list; raise ``RemoteProtocolError(status_hint)``.

    The head gets ``host`` (from ``:authority``, else the one ``host`` field)
    as its first field, a single ``cookie`` (RFC 9113 §8.2.3), ``http_version``
    ``b"2"`` and ``keep_alive``. Refused (400): CR/LF/NUL or other CTLs,
    upper-case or non-token names, surrounding whitespace in values,
    connection-specific fields, ``te`` other than ``trailers``, missing,
    repeated, unknown or late pseudo-headers, a ``:path`` that is not
    origin-form (or ``*`` for OPTIONS), a bad ``:authority``/``host`` or the
    two disagreeing, a ``content-length`` that is not one number (or is not 0
    on a request without DATA). 431: a list over ``max_list_size``. 501: CONNECT.
    """
    if header_list_size(fields) > max_list_size:
        raise _bad("header list too large", 431)
    pseudo: dict[bytes, bytes] = {}
    regular: Fields = []
    hosts: list[bytes] = []
    cookies: list[bytes] = []
    length = b""
    lengths = 0
    expect_field = b""  # every Expect value, joined (most requests have none)
    for name, value in fields:
        if name[:1] == b":":
            if regular or hosts or cookies:
                raise _bad("pseudo-header after a regular field")
            if name not in _REQUEST_PSEUDO:
                raise _bad("unknown pseudo-header")
            if name in pseudo:
                raise _bad("repeated pseudo-header")
            # Each value is held to its own grammar below (:method a token,
            # :path VCHARs, :authority a host, :scheme one of two), none of
            # which lets CR, LF or NUL through; :protocol is refused.
            pseudo[name] = value
            continue
        if name not in GOOD_NAMES or value not in GOOD_VALUES or name in CONNECTION_SPECIFIC:
            _check_field(name, value, 400)
        if name == b"host":
            hosts.append(value)
        elif name == b"cookie":
            cookies.append(value)
            if len(cookies) == 1:
                regular.append((name, b""))  # placeholder: the joined value goes here
        else:
            if name == b"te" and value != b"trailers":
                raise _bad("te other than trailers")
            if name == b"content-length":
                length = value
                lengths += 1
            elif name == b"expect":
                expect_field = expect_field + b"," + value if expect_field else value
            regular.append((name, value))
    method = pseudo.get(b":method", b"")
    if method == b"CONNECT":
        raise _bad("CONNECT is not supported", 501)
    if b":protocol" in pseudo:
        raise _bad(":protocol without CONNECT")
    if not method or b":scheme" not in pseudo or b":path" not in pseudo:
        raise _bad("missing pseudo-header")
    if _METHOD.fullmatch(method) is None:
        raise _bad("invalid :method")
    scheme = pseudo[b":scheme"]
    if scheme not in _SCHEMES:
        raise _bad("unsupported :scheme")
    path = pseudo[b":path"]
    if not (_PATH.fullmatch(path) or (path == b"*" and method == b"OPTIONS")):
        raise _bad("invalid :path")
    if len(hosts) > 1:
        raise _bad("repeated host")
    authority = pseudo.get(b":authority")
    if authority is None:
        if not hosts:
            raise _bad("no :authority and no host")
        authority = hosts[0]
    elif hosts and hosts[0].lower() != authority.lower():  # a host is case-insensitive
        raise _bad(":authority and host disagree")
    if not host_ok(authority):
        raise _bad("invalid :authority")
    size: int | None = None
    if lengths:
        size = content_length(length, lengths, 400)
        if end_stream and size:
            raise _bad("content-length without a body")
    # Judged last, as over HTTP/1.1: a request malformed otherwise is a 400.
    expect = expectations(expect_field) if expect_field else False
    if cookies:
        i = regular.index((b"cookie", b""))
        regular[i] = (b"cookie", b"; ".join(cookies))
    head = RequestHead(
        method=method,
        target=path,
        headers=[(b"host", authority), *regular],
        http_version=b"2",
        keep_alive=True,
        expect_continue=expect and not end_stream,
    )
    return ParsedRequest(head, scheme, authority, size)


def salvage_request_head(fields: Fields) -> RequestHead:
    """What can be told of a request header list :func:`request_from_h2`
    refused, for the refused request's flow: ``:method``, ``:path`` and
    ``:authority`` (as ``host``), each only when valid by itself, else
    ``b""`` (no ``host``). Never raises; reads only the pseudo-headers."""
    method = path = b""
    headers: Fields = []
    for name, value in fields:
        if name[:1] != b":":
            break  # pseudo-headers come first; what follows is not looked at
        if name == b":method" and _METHOD.fullmatch(value):
            method = value
        elif name == b":path" and (_PATH.fullmatch(value) or value == b"*"):
            path = value
        elif name == b":authority" and not headers and host_ok(value):
            headers = [(b"host", value)]
    return RequestHead(method=method, target=path, headers=headers, http_version=b"2")


def response_from_h2(fields: Fields, *, max_list_size: int) -> tuple[int, Fields, int | None]:
    """Status, regular fields and content-length of a response header list.

    The same field rules as requests; exactly one ``:status`` (3 digits,
    never 101) and no other pseudo-header. Anything wrong raises
    :class:`RemoteProtocolError` with ``status_hint`` 502.
    """
    if header_list_size(fields) > max_list_size:
        raise _bad("response header list too large", 502)
    status = b""
    regular: Fields = []
    length = b""
    lengths = 0
    for name, value in fields:
        if name[:1] == b":":
            if name != b":status" or status or regular:
                raise _bad("bad pseudo-header in a response", 502)
            if _STATUS.fullmatch(value) is None or value == b"101":
                raise _bad("invalid :status", 502)
            status = value
            continue
        if name not in GOOD_NAMES or value not in GOOD_VALUES or name in CONNECTION_SPECIFIC:
            _check_field(name, value, 502)
        if name == b"content-length":
            length = value
            lengths += 1
        regular.append((name, value))
    if not status:
        raise _bad("no :status", 502)
    size = content_length(length, lengths, 502) if lengths else None
    return int(status), regular, size


def check_trailers(fields: Fields, *, max_list_size: int, drop: bool = False) -> Fields:
    """A received trailer section, checked like a head; raises (400).

    ``drop``: fields in NOT_IN_TRAILERS are left out rather than refused (a
    response's trailers: its body is on its way to the client already).
    """
    if header_list_size(fields) > max_list_size:
        raise _bad("trailer section too large", 431)
    for name, value in fields:
        if name[:1] == b":":
            raise _bad("pseudo-header in trailers")
        _check_field(name, value, 400)
    return screen_trailers(fields, refuse=not drop)


def _sendable(fields: Fields, drop: frozenset[bytes]) -> Fields:
    out: Fields = []
    for name, value in fields:
        # A name or value found good before is lower-case, or stripped, already.
        if name not in GOOD_NAMES:
            name = name.lower()
            if name in drop or name[:1] == b":":
                continue
            if LOWER_NAME.fullmatch(name) is None:
                raise LocalProtocolError(f"cannot send field name {name!r}")
            remember(GOOD_NAMES, name)
        elif name in drop:
            continue
        if value not in GOOD_VALUES:
            value = value.strip(b" \t")
            if VALUE.fullmatch(value) is None:
                raise LocalProtocolError(f"cannot send this {name.decode('ascii')} value")
            remember(GOOD_VALUES, value)
        if name in _CREDENTIALS or (name == b"cookie" and len(value) < 20):
            # Never indexed (as h2's normalisation, nghttp2 and Firefox do): a
            # short secret in a shared table could be guessed by compression.
            out.append(NeverIndexedHeaderTuple(name, value))
        else:
            out.append((name, value))
    return out


_RESPONSE_DROP: Final = CONNECTION_SPECIFIC | {b"te"}
_REQUEST_DROP: Final = CONNECTION_SPECIFIC | {b"host"}


def response_fields(status: int, fields: Fields) -> Fields:
    """``:status`` then ``fields`` as sendable (connection-specific ones dropped,
    and ``content-length`` from a 1xx or 204, which RFC 9110 §8.6 forbids it)."""
    if not 100 <= status <= 599 or status == 101:
        raise LocalProtocolError(f"cannot send status {status} over HTTP/2")
    out = [(b":status", str(status).encode("ascii")), *_sendable(fields, _RESPONSE_DROP)]
    if status < 200 or status == 204:
        out = [f for f in out if f[0] != b"content-length"]
    return out


def request_fields(head: RequestHead, scheme: bytes, authority: bytes) -> Fields:
    """Pseudo-headers from an HTTP/1.1 head, then its sendable fields.

    ``host`` is dropped (``:authority`` replaces it), and ``te`` kept only as
    ``trailers``. An absolute-form target is sent as its path.
    """
    if head.method == b"CONNECT" or _METHOD.fullmatch(head.method) is None:
        raise LocalProtocolError("cannot send this method over HTTP/2")
    if not host_ok(authority) or scheme not in _SCHEMES:
        raise LocalProtocolError("invalid :authority or :scheme")
    target = head.target
    if target[:1] != b"/" and not (target == b"*" and head.method == b"OPTIONS"):
        if b"://" not in target:
            raise LocalProtocolError("cannot send this request target")
        rest = target.partition(b"://")[2]
        cut = min((i for i in (rest.find(b"/"), rest.find(b"?")) if i >= 0), default=len(rest))
        target = rest[cut:]
        target = target if target[:1] == b"/" else b"/" + target
    if _PATH.fullmatch(target) is None and target != b"*":
        raise LocalProtocolError("cannot send this request target")
    out = [
        (b":method", head.method),
        (b":scheme", scheme),
        (b":authority", authority),
        (b":path", target),
    ]
    for field in _sendable(head.headers, _REQUEST_DROP):
        if field[0] == b"te":
            if b"trailers" not in tokens(field[1]):
                continue
            field = (b"te", b"trailers")
        out.append(field)  # as _sendable made it: perhaps never-indexed
    return out


def trailer_fields(fields: Fields) -> Fields:
    """Trailers as sendable; framing and routing fields are dropped."""
    return _sendable(fields, NOT_IN_TRAILERS)


def sent_length(fields: Fields) -> int | None:
    """The ``content-length`` of fields we send (validated like a received one)."""
    values = [v for n, v in fields if n == b"content-length"]
    if not values:
        return None
    if len(set(values)) > 1 or _DIGITS.fullmatch(values[0]) is None:
        raise LocalProtocolError("invalid content-length to send")
    return int(values[0])
