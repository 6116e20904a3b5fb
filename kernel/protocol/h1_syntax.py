"""HTTP/1.1 head syntax on raw bytes: start lines, field lines, Host.

The lowest layer of :mod:`.validate` (which re-exports every public name
here, so the codecs see one module): RFC 9112 §2-§5 as regexes, each one
linear on hostile input, and the functions that apply them.

- :func:`parse_request_line`, :func:`parse_status_line`,
  :func:`check_response_start`, :func:`skip_empty_lines`: start lines.
- :func:`check_field_block`, :func:`split_fields`: field lines.
- :func:`host_ok`: the rule for ``Host`` and HTTP/2's ``:authority``.
- :func:`bad`: the :class:`~sdk._errors.RemoteProtocolError` every check
  raises, with its status hint (the one way :mod:`.validate` and
  :mod:`.chunked` refuse, too).

May import: stdlib, kernel.protocol.events, kernel.protocol.http1, sdk._errors.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final

from kernel.protocol.events import Fields
from kernel.protocol.http1 import TOKEN, remember
from sdk._errors import RemoteProtocolError

__all__ = [
    "EXT_VALUE",
    "bad",
    "check_field_block",
    "check_response_start",
    "host_ok",
    "parse_request_line",
    "parse_status_line",
    "skip_empty_lines",
    "split_fields",
]

_TOKEN = TOKEN
_QUOTED = rb'"(?>(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*)"'
#: A parameter's ``= value`` (token or quoted-string, BWS around ``=``): the
#: same in a transfer-coding (:mod:`.validate`) and a chunk-ext (:mod:`.chunked`).
EXT_VALUE: Final = rb"(?:[ \t]*+=[ \t]*+(?:" + _TOKEN + rb"|" + _QUOTED + rb"))"
# A whole block of field lines, CRLFs included (RFC 9112 §5; values are
# VCHAR, obs-text, SP and HTAB: RFC 9110 §5.5). This one regex refuses
# obs-fold (a line starting with SP/HTAB is not a token), bare CR, bare LF,
# NUL and the other CTLs, whitespace before the colon and empty names.
# Possessive quantifiers and atomic groups keep every pattern here linear on
# hostile input. A repeated group is written atomic, (?>(?:...)*), never
# possessive, (?:...)*+: CPython before 3.11.5 matched the possessive form
# wrongly when the group can backtrack (gh-106052), and Debian 12 ships 3.11.2.
_FIELD_BLOCK = re.compile(rb"(?>(?:" + _TOKEN + rb":[\t\x20-\x7e\x80-\xff]*+\r\n)*)")
_FIELD_LINE = re.compile(rb"(" + _TOKEN + rb"):[ \t]*+([^\r\n]*+)\r\n")
# RFC 9112 §3: method SP request-target SP HTTP-version. The target is any
# VCHAR run but "#" (a fragment is never part of a request target, §3.2);
# its form is checked separately.
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([\x21\x22\x24-\x7e]+) HTTP/([0-9])\.([0-9])")
# RFC 9112 §4; the reason may be absent altogether (h11 and many servers).
_STATUS_LINE = re.compile(rb"HTTP/([0-9])\.([0-9]) ([0-9]{3})(?: ([\t\x20-\x7e\x80-\xff]*+))?")
# RFC 3986 §3.2.2 reg-name (IPv4 is a subset) or an IP-literal, then a port.
# The port must be 1-5 digits: an empty port is legal but only ever a mistake.
_HOST_PORT = re.compile(
    rb"(\[[0-9A-Fa-f:.]++\]|(?>(?:[-A-Za-z0-9._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})*))(:[0-9]{1,5})?"
)
_ABSOLUTE_FORM = re.compile(rb"[Hh][Tt][Tt][Pp][Ss]?://([^/?#]*+)(?:[/?].*)?", re.DOTALL)
_V10: Final = b"1.0"
_V11: Final = b"1.1"
_CRLF_RUN: Final = re.compile(rb"(?>(?:\r\n)*)")
#: Hosts :func:`host_ok` accepted, each with a host part: they repeat on a
#: connection and across clients. Bounded by :func:`kernel.protocol.http1.remember`.
_GOOD_HOSTS: set[bytes] = set()


def bad(message: str, status: int = 400) -> RemoteProtocolError:
    """The error a check raises: ``status`` is the hint the server side answers with."""
    return RemoteProtocolError(message, status_hint=status)


def skip_empty_lines(buf: bytes, pos: int) -> int:
    """Where a request starts after any empty lines (RFC 9112 §2.2: a server
    SHOULD ignore at least one; clients send one after a POST body)."""
    m = _CRLF_RUN.match(buf, pos)
    assert m is not None  # the pattern matches the empty string
    return m.end()


def check_response_start(buf: bytes, pos: int) -> None:
    """Refuse an incomplete response head that cannot become ``HTTP/...``
    (an upstream that answers in another protocol would otherwise be
    waited for until the response timeout: a 504 instead of a 502)."""
    if not b"HTTP/".startswith(buf[pos : pos + 5]):
        raise bad("this is not an HTTP/1.x response", 502)


def parse_request_line(buf: bytes, start: int, lf: int) -> tuple[bytes, bytes, bytes]:
    """Method, target and version (``b"1.1"``/``b"1.0"``) of ``buf[start:lf]``.

    The target's form must fit the method (RFC 9112 §3.2): origin-form, an
    http(s) absolute-form with a host, authority-form for CONNECT only, and
    ``*`` for OPTIONS only.
    """
    if lf == start or buf[lf - 1] != 0x0D:
        raise bad("request line must end with CRLF")
    m = _REQUEST_LINE.fullmatch(buf, start, lf - 1)
    if m is None:
        raise bad("malformed request line")
    method, target, major, minor = m.groups()
    if major != b"1" or minor not in (b"0", b"1"):
        raise bad("unsupported HTTP version", 505)
    if method == b"CONNECT":
        hm = _HOST_PORT.fullmatch(target)
        if hm is None or not _host_ok(hm, need_host=True) or hm.group(2) is None:
            raise bad("CONNECT needs an authority-form target")
    elif target[0] != 0x2F:  # "/": origin-form, the common case
        if target == b"*":
            if method != b"OPTIONS":
                raise bad("asterisk-form is only for OPTIONS")
        else:
            am = _ABSOLUTE_FORM.fullmatch(target)
            hm = None if am is None else _HOST_PORT.fullmatch(am.group(1))
            if hm is None or not _host_ok(hm, need_host=True):
                raise bad("request target must be origin-form or an http(s) URI with a host")
    return method, target, _V11 if minor == b"1" else _V10


def parse_status_line(buf: bytes, start: int, lf: int) -> tuple[int, bytes, bytes]:
    """Status code, reason and version of the status line ``buf[start:lf]``."""
    if lf == start or buf[lf - 1] != 0x0D:
        raise bad("status line must end with CRLF")
    m = _STATUS_LINE.fullmatch(buf, start, lf - 1)
    if m is None:
        raise bad("malformed status line")
    major, minor, code, reason = m.groups()
    if major != b"1" or minor not in (b"0", b"1"):
        raise bad("unsupported HTTP version", 505)
    status = int(code)
    if not 100 <= status <= 599:  # RFC 9110 §15: anything else is invalid
        raise bad("status code outside 100-599")
    return status, reason or b"", _V11 if minor == b"1" else _V10


def check_field_block(buf: bytes, start: int, end: int) -> None:
    """Refuse anything but well-formed field lines in ``buf[start:end]``."""
    if _FIELD_BLOCK.fullmatch(buf, start, end) is None:
        raise bad("malformed header field line")


def split_fields(buf: bytes, start: int, end: int) -> Fields:
    """The fields of a block :func:`check_field_block` accepted, OWS removed."""
    return [(n.lower(), v.rstrip(b" \t")) for n, v in _FIELD_LINE.findall(buf, start, end)]


def host_ok(value: bytes, *, need_host: bool = True) -> bool:
    """Whether ``value`` is a valid Host (``host[:port]``, RFC 9110 §7.2).

    HTTP/2's ``:authority`` becomes the Host of the HTTP/1.1 request we send,
    so it is held to this same rule.
    """
    if value in _GOOD_HOSTS:
        return True
    m = _HOST_PORT.fullmatch(value)
    if m is None or not _host_ok(m, need_host=need_host):
        return False
    if m.group(1):  # never an empty host: that one is good only without need_host
        remember(_GOOD_HOSTS, value)
    return True


def _host_ok(m: re.Match[bytes], *, need_host: bool) -> bool:
    port = m.group(2)
    if port is not None and int(port[1:]) > 65535:
        return False
    host = m.group(1)
    if b"," in host:
        # Legal in a reg-name, never in a real host, and it would split the
        # list-valued X-Forwarded-Host we send on.
        return False
    if host[:1] == b"[":
        try:
            ipaddress.IPv6Address(host[1:-1].decode("ascii"))
        except ValueError:
            return False
        return True
    return bool(host) or not need_host
