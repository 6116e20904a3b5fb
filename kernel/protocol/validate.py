"""Checks on what a peer sends, shared by both HTTP/1.1 codecs so they agree.

Every decision about received bytes is made here, on raw bytes, before either
parser (h11 or llhttp) sees a head; the parsers only extract fields. That is
what keeps the two codecs identical on hostile input: a request smuggling
attempt is refused by the same line of code whichever codec runs. (What we
agree to *send* is in :mod:`.http1`.)

- :class:`HeadScanner` finds where a head ends and enforces the size limits,
  also while the head is incomplete, so buffering stays bounded.
- :func:`parse_request_line`, :func:`parse_status_line`,
  :func:`check_field_block`, :func:`split_fields`: head syntax (RFC 9112 §2-§5).
- :func:`request_framing`, :func:`response_framing`: one framing per message,
  ``Host``, ``Connection``, ``Expect`` (RFC 9112 §3.2, §6, §9; RFC 9110 §10.1.1).
- :class:`ChunkedDecoder`: the chunked coding (RFC 9112 §7.1), bounded.
- :func:`salvage_request_head`: what can be told of a head refused above,
  for the refused request's flow (logs and metrics).

Status hints (server side; the client codecs turn every one into 502):
400 malformed or ambiguous; 413 body over ``max_body_bytes``; 414 request
line too long; 431 header block or trailers too large; 501 a well-formed
transfer coding other than chunked; 505 an HTTP version other than 1.0/1.1.

May import: stdlib, kernel.protocol.events, kernel.protocol.http1, sdk._errors.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final

from kernel.protocol.events import Fields, RequestHead
from kernel.protocol.http1 import CHUNKED, TCHAR, TOKEN, UNTIL_CLOSE, Limits, remember, tokens
from sdk._errors import RemoteProtocolError

__all__ = [
    "NOT_IN_TRAILERS",
    "ChunkedDecoder",
    "HeadScanner",
    "check_field_block",
    "check_response_start",
    "expectations",
    "host_ok",
    "parse_request_line",
    "parse_status_line",
    "request_framing",
    "response_framing",
    "salvage_request_head",
    "screen_trailers",
    "skip_empty_lines",
    "split_fields",
]

_TOKEN = TOKEN
_QUOTED = rb'"(?>(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*)"'
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
# RFC 9112 §7.1: chunk-size [ chunk-ext ] CRLF, at most 16 hex digits (2**64).
# BWS before ";" is refused: h11 cannot parse it and no sender needs it.
_EXT_VALUE = rb"(?:[ \t]*+=[ \t]*+(?:" + _TOKEN + rb"|" + _QUOTED + rb"))"
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})(?>(?:;[ \t]*+" + _TOKEN + _EXT_VALUE + rb"?)*)\r\n")
# RFC 9112 §6.1 transfer-coding = token *( OWS ";" OWS transfer-parameter ).
_CODING = re.compile(_TOKEN + rb"(?>(?:[ \t]*+;[ \t]*+" + _TOKEN + _EXT_VALUE + rb")*)")
_DIGITS = re.compile(rb"[0-9]{1,18}")  # more than 18 digits cannot be a real length
#: The largest body we can frame, whatever ``max_body_bytes`` says: a
#: Content-Length has at most 18 digits, and a chunked body adding up to more
#: is an absurd size (a 16-hex-digit chunk is 2**64), refused as one.
MAX_LENGTH: Final = 10**18 - 1
_V10: Final = b"1.0"
_V11: Final = b"1.1"
_CRLF_RUN: Final = re.compile(rb"(?>(?:\r\n)*)")
#: Fields that frame, route or authenticate a message, or tell who it came
#: through, have no business in a trailer section (RFC 9110 §6.5.1): a next
#: hop that merged them into the head would be fooled. Received, both
#: protocols refuse them; HTTP/2 also leaves them out when sending.
NOT_IN_TRAILERS: Final = frozenset(
    (
        # framing and the connection
        b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade",
        b"te", b"trailer", b"content-length", b"http2-settings",
        # routing, and how to read the content
        b"host", b"content-type", b"content-encoding", b"content-range",
        # credentials, and the forwarding chain the kernel vouches for
        b"authorization", b"proxy-authorization", b"proxy-authenticate", b"www-authenticate",
        b"cookie", b"set-cookie", b"forwarded", b"x-forwarded-for", b"x-forwarded-host",
        b"x-forwarded-proto", b"via",
    )
)  # fmt: skip
_FRAMING_NAMES: Final = frozenset(
    (b"host", b"content-length", b"transfer-encoding", b"connection", b"expect")
)
#: Hosts :func:`host_ok` accepted, each with a host part: they repeat on a
#: connection and across clients. Bounded by :func:`kernel.protocol.http1.remember`.
_GOOD_HOSTS: set[bytes] = set()


def skip_empty_lines(buf: bytes, pos: int) -> int:
    """Where a request starts after any empty lines (RFC 9112 §2.2: a server
    SHOULD ignore at least one; clients send one after a POST body)."""
    m = _CRLF_RUN.match(buf, pos)
    assert m is not None  # the pattern matches the empty string
    return m.end()


def _bad(message: str, status: int = 400) -> RemoteProtocolError:
    return RemoteProtocolError(message, status_hint=status)


class HeadScanner:
    """Finds the blank line that ends a head, enforcing the limits on the way.

    The head starts at ``pos`` in the caller's buffer. Offsets are kept
    relative to ``pos``, so the caller may compact its buffer between calls;
    scanning resumes where it stopped, so a head dribbled in byte by byte
    costs linear time. On success :attr:`line_end` is the index of the first
    line's LF.
    """

    __slots__ = (
        "_counted", "_line", "_lines", "_max_block", "_max_count", "_max_line", "_scan",
        "line_end",
    )  # fmt: skip

    def __init__(self, limits: Limits) -> None:
        self._max_line = limits.max_request_line
        self._max_block = limits.max_header_bytes
        self._max_count = limits.max_header_count
        self.line_end = -1
        self.reset()

    def reset(self) -> None:
        self._scan = 0  # where the blank-line search resumes
        self._line = -1  # the first line's LF, once seen
        self._counted = 0  # LFs after the first line counted up to here
        self._lines = 0

    def find_end(self, buf: bytes, pos: int) -> int:
        """The index just past the head's blank line, or -1 if incomplete."""
        n = len(buf)
        # Refuse at once what cannot start a method or "HTTP/" (a TLS
        # ClientHello on a plain port...), rather than wait for a limit.
        if n > pos and buf[pos] not in TCHAR and (buf[pos] != 0x0D or n > pos + 1):
            raise _bad("this is not HTTP/1.1")  # (a lone CR may yet be an empty line)
        scan = pos + self._scan
        end_lf = buf.find(b"\n\r\n", scan)
        stop = n if end_lf < 0 else end_lf + 1
        line = self._line
        if line < 0:
            le = buf.find(b"\n", pos, stop)
            if le < 0:
                if n - pos > self._max_line + 1:
                    raise _bad("request line too long", 414)
                self._scan = n - pos - 2 if n - pos > 2 else 0
                return -1
            line = self._line = le - pos
            if line > self._max_line and (line > self._max_line + 1 or buf[le - 1] != 0x0D):
                raise _bad("request line too long", 414)
        le = pos + line
        # Two LFs in a row can only be a line ended by a bare LF followed by the
        # end of the head: never valid (RFC 9112 §2.2 requires CRLF).
        if buf.find(b"\n\n", le if le > scan else scan, stop) >= 0:
            raise _bad("bare LF in head")
        # A line starting with a CR not followed by LF: a bare CR, which the
        # search for the blank line would otherwise wait past until a timeout.
        cr = buf.find(b"\n\r", le if le > scan else scan, stop)
        if 0 <= cr < n - 2:
            raise _bad("bare CR in head")
        if end_lf < 0:
            if n - le - 1 > self._max_block + 2:
                raise _bad("header block too large", 431)
            counted = pos + self._counted
            self._lines += buf.count(b"\n", le + 1 if le >= counted else counted, n)
            self._counted = n - pos
            if self._lines > self._max_count:
                raise _bad("too many header fields", 431)
            self._scan = n - pos - 2 if n - pos > 2 else 0
            return -1
        if end_lf - le > self._max_block:
            raise _bad("header block too large", 431)
        if buf.count(b"\n", le + 1, end_lf + 1) > self._max_count:
            raise _bad("too many header fields", 431)
        self.line_end = le
        return end_lf + 3


#: The method at the start of a request line that is refused as a whole.
_METHOD_PREFIX = re.compile(rb"(" + _TOKEN + rb") ")


def salvage_request_head(buf: bytes, limits: Limits) -> RequestHead:
    """What can be told of a request head the server refused (``buf`` starts
    with it: the codec's unread bytes), for the refused request's flow.

    Method, target and version when the request line is valid; else the
    method alone when the line starts with a token and a space (a line too
    long, a bad target or version), else nothing (``b""``). The fields only
    when the whole field block is there, within the limits and well-formed
    (a head refused for its framing: ``Expect``, ``Transfer-Encoding``, a
    ``Content-Length`` over the limit, ``Host``). Never raises; reads at
    most as far as the limits allow.
    """
    pos = skip_empty_lines(buf, 0)
    lf = buf.find(b"\n", pos, pos + limits.max_request_line + 2)
    try:
        if lf < 0:
            raise _bad("no request line")
        method, target, version = parse_request_line(buf, pos, lf)
    except RemoteProtocolError:
        m = _METHOD_PREFIX.match(buf, pos, min(len(buf), pos + 64))
        return RequestHead(
            method=m.group(1) if m else b"", target=b"", headers=[], http_version=b""
        )
    fields: Fields = []
    end_lf = buf.find(b"\n\r\n", lf, lf + limits.max_header_bytes + 3)
    if end_lf >= 0 and buf.count(b"\n", lf + 1, end_lf + 1) <= limits.max_header_count:
        try:
            check_field_block(buf, lf + 1, end_lf + 1)
        except RemoteProtocolError:
            pass
        else:
            fields = split_fields(buf, lf + 1, end_lf + 1)
    return RequestHead(method=method, target=target, headers=fields, http_version=version)


def check_response_start(buf: bytes, pos: int) -> None:
    """Refuse an incomplete response head that cannot become ``HTTP/...``
    (an upstream that answers in another protocol would otherwise be
    waited for until the response timeout: a 504 instead of a 502)."""
    if not b"HTTP/".startswith(buf[pos : pos + 5]):
        raise _bad("this is not an HTTP/1.x response", 502)


def parse_request_line(buf: bytes, start: int, lf: int) -> tuple[bytes, bytes, bytes]:
    """Method, target and version (``b"1.1"``/``b"1.0"``) of ``buf[start:lf]``.

    The target's form must fit the method (RFC 9112 §3.2): origin-form, an
    http(s) absolute-form with a host, authority-form for CONNECT only, and
    ``*`` for OPTIONS only.
    """
    if lf == start or buf[lf - 1] != 0x0D:
        raise _bad("request line must end with CRLF")
    m = _REQUEST_LINE.fullmatch(buf, start, lf - 1)
    if m is None:
        raise _bad("malformed request line")
    method, target, major, minor = m.groups()
    if major != b"1" or minor not in (b"0", b"1"):
        raise _bad("unsupported HTTP version", 505)
    if method == b"CONNECT":
        hm = _HOST_PORT.fullmatch(target)
        if hm is None or not _host_ok(hm, need_host=True) or hm.group(2) is None:
            raise _bad("CONNECT needs an authority-form target")
    elif target[0] != 0x2F:  # "/": origin-form, the common case
        if target == b"*":
            if method != b"OPTIONS":
                raise _bad("asterisk-form is only for OPTIONS")
        else:
            am = _ABSOLUTE_FORM.fullmatch(target)
            hm = None if am is None else _HOST_PORT.fullmatch(am.group(1))
            if hm is None or not _host_ok(hm, need_host=True):
                raise _bad("request target must be origin-form or an http(s) URI with a host")
    return method, target, _V11 if minor == b"1" else _V10


def parse_status_line(buf: bytes, start: int, lf: int) -> tuple[int, bytes, bytes]:
    """Status code, reason and version of the status line ``buf[start:lf]``."""
    if lf == start or buf[lf - 1] != 0x0D:
        raise _bad("status line must end with CRLF")
    m = _STATUS_LINE.fullmatch(buf, start, lf - 1)
    if m is None:
        raise _bad("malformed status line")
    major, minor, code, reason = m.groups()
    if major != b"1" or minor not in (b"0", b"1"):
        raise _bad("unsupported HTTP version", 505)
    status = int(code)
    if not 100 <= status <= 599:  # RFC 9110 §15: anything else is invalid
        raise _bad("status code outside 100-599")
    return status, reason or b"", _V11 if minor == b"1" else _V10


def check_field_block(buf: bytes, start: int, end: int) -> None:
    """Refuse anything but well-formed field lines in ``buf[start:end]``."""
    if _FIELD_BLOCK.fullmatch(buf, start, end) is None:
        raise _bad("malformed header field line")


def split_fields(buf: bytes, start: int, end: int) -> Fields:
    """The fields of a block :func:`check_field_block` accepted, OWS removed."""
    return [(n.lower(), v.rstrip(b" \t")) for n, v in _FIELD_LINE.findall(buf, start, end)]


def screen_trailers(fields: Fields, *, refuse: bool) -> Fields:
    """Received trailer fields without those in :data:`NOT_IN_TRAILERS`.

    ``refuse`` (a request's trailers, either protocol): one of them is a 400
    instead. A response's are pruned: its body is on its way already.
    """
    for name, _ in fields:
        if name in NOT_IN_TRAILERS:
            if refuse:
                raise _bad(f"{name.decode('ascii')} in trailers")
            return [f for f in fields if f[0] not in NOT_IN_TRAILERS]
    return fields


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


def _content_length(value: bytes, count: int, max_body: int) -> int:
    # RFC 9110 §8.6: a list, even of equal values, is how CL.CL smuggling
    # starts; we refuse it rather than pick one.
    if count > 1 or _DIGITS.fullmatch(value) is None:
        raise _bad("invalid or repeated Content-Length")
    length = int(value)
    if max_body and length > max_body:
        raise _bad("body larger than allowed", 413)
    return length


def _chunked_request(value: bytes, count: int) -> None:
    # RFC 9112 §6.3: chunked must be the final coding of a request (else 400);
    # §6.1: never applied twice; a coding we do not know gets 501 (§6.1).
    if count > 1:
        raise _bad("repeated Transfer-Encoding")
    codings = [c.strip(b" \t") for c in value.split(b",")]
    for coding in codings:
        if _CODING.fullmatch(coding) is None:
            raise _bad("malformed Transfer-Encoding")
    names = [c.lower() for c in codings]
    if names[-1] != b"chunked" or names.count(b"chunked") > 1:
        raise _bad("chunked must be the final transfer coding, once")
    if len(names) > 1:
        raise _bad("unsupported transfer coding", 501)


def _lower_coding(fields: Fields) -> None:
    # The one coding we accept is reported as h11 reports it: b"chunked".
    for i, (name, _) in enumerate(fields):
        if name == b"transfer-encoding":
            fields[i] = (name, b"chunked")


def expectations(value: bytes) -> bool:
    """Whether an Expect field asks for ``100-continue``; any other
    expectation is refused with 417 (RFC 9110 §10.1.1): we would neither meet
    it nor pass on one the upstream might act on after our own ``100``."""
    expect = False
    for t in tokens(value):
        if t == b"100-continue":
            expect = True
        elif t:
            raise _bad("an expectation other than 100-continue", 417)
    return expect


def request_framing(
    method: bytes, version: bytes, fields: Fields, limits: Limits
) -> tuple[int, bool, bool]:
    """Body length (or :data:`CHUNKED`), keep-alive and expect-continue of a request."""
    host = length = coding = b""
    hosts = lengths = codings = 0
    close = False
    expect_field = b""  # every Expect value, joined (most requests have none)
    for name, value in fields:
        if name in _FRAMING_NAMES:
            if name == b"host":
                host = value
                hosts += 1
            elif name == b"content-length":
                length = value
                lengths += 1
            elif name == b"transfer-encoding":
                coding = value
                codings += 1
            elif name == b"connection":
                close = close or b"close" in tokens(value)
            else:
                expect_field = expect_field + b"," + value if expect_field else value
    body = 0
    if codings:
        if version == b"1.0":  # RFC 9112 §6.1: faulty framing
            raise _bad("Transfer-Encoding in an HTTP/1.0 request")
        if lengths:  # RFC 9112 §6.1: the CL.TE / TE.CL smuggling pair
            raise _bad("both Content-Length and Transfer-Encoding")
        _chunked_request(coding, codings)
        _lower_coding(fields)
        body = CHUNKED
    elif lengths:
        body = _content_length(length, lengths, limits.max_body_bytes)
    if body and method == b"CONNECT":
        # RFC 9110 §9.3.6: a CONNECT has no content. Framed by its fields,
        # what follows it (a pipelined request) would be read as its body by
        # us and as a request by whoever reads it the RFC's way.
        raise _bad("CONNECT with content")
    # RFC 9112 §3.2: exactly one Host in HTTP/1.1, at most one in 1.0, valid.
    if hosts > 1 or (not hosts and version == b"1.1"):
        raise _bad("a request needs exactly one Host")
    if hosts and not host_ok(host, need_host=False):
        raise _bad("invalid Host")
    # HTTP/1.0 peers never keep the connection (as h11): simple and safe.
    keep_alive = version == b"1.1" and not close
    # Judged last: a request malformed otherwise is a 400 first.
    expect = expectations(expect_field) if expect_field else False
    # RFC 9110 §10.1.1: ignore 100-continue from 1.0, and without a body.
    expect = expect and version == b"1.1" and body != 0
    return body, keep_alive, expect


def response_framing(
    status: int, version: bytes, fields: Fields, request_method: bytes, limits: Limits
) -> tuple[int, bool]:
    """Body length (or :data:`CHUNKED` / :data:`UNTIL_CLOSE`) and keep-alive.

    Framing fields are checked even where the body is known to be empty, so
    that we never relay an ambiguous message.
    """
    length = coding = b""
    lengths = codings = 0
    close = False
    for name, value in fields:
        if name in _FRAMING_NAMES:
            if name == b"content-length":
                length = value
                lengths += 1
            elif name == b"transfer-encoding":
                coding = value
                codings += 1
            elif name == b"connection":
                close = close or b"close" in tokens(value)
    # RFC 9112 §6.3 items 1-2: these never have a body, whatever they say
    # (and their Content-Length describes another response: no size limit).
    bodyless = request_method == b"HEAD" or status < 200 or status in (204, 304)
    body = UNTIL_CLOSE
    if codings:
        if version == b"1.0" or lengths or codings > 1:
            raise _bad("ambiguous response framing")
        # Anything but plain chunked would reach the client still encoded
        # once we drop the hop-by-hop Transfer-Encoding: refuse it.
        if coding.lower() != b"chunked":
            raise _bad("unsupported transfer coding", 501)
        _lower_coding(fields)
        body = CHUNKED
    elif lengths:
        body = _content_length(length, lengths, 0 if bodyless else limits.max_body_bytes)
    if bodyless:
        body = 0
    keep_alive = version == b"1.1" and not close and body != UNTIL_CLOSE
    return body, keep_alive


class ChunkedDecoder:
    """The chunked transfer coding (RFC 9112 §7.1), one message at a time.

    :meth:`step` walks the caller's buffer. It returns ``(pos, data_end)``:
    when ``data_end > pos``, ``buf[pos:data_end]`` is body data; otherwise it
    needs more bytes, or :attr:`done` is set and :attr:`trailers` holds the
    trailer fields. Either way the caller continues from the larger offset.
    """

    __slots__ = (
        "_left", "_limits", "_refuse", "_scan", "_state", "_total", "done", "trailers",
        "trailers_at",
    )  # fmt: skip

    def __init__(self, limits: Limits, *, refuse_forbidden: bool = True) -> None:
        self._limits = limits
        #: A trailer field in NOT_IN_TRAILERS fails a request (400); from a
        #: response, whose body is on its way already, it is left out instead.
        self._refuse = refuse_forbidden
        #: Where the trailer section began in the buffer of the step that ended.
        self.trailers_at = 0
        self._state = 0  # 0 size line, 1 data, 2 CRLF after data, 3 trailers
        self._left = 0
        self._total = 0
        self._scan = 0
        self.done = False
        self.trailers: Fields = []

    def step(self, buf: bytes, pos: int) -> tuple[int, int]:
        n = len(buf)
        while not self.done:
            state = self._state
            if state == 1:
                if pos >= n:
                    return pos, pos
                end = min(n, pos + self._left)
                self._left -= end - pos
                if not self._left:
                    self._state = 2
                return pos, end
            if state == 0:
                after = self._size_line(buf, pos)
                if after < 0:
                    return pos, pos
                pos = after
            elif state == 2:
                if buf[pos : pos + 2] != b"\r\n"[: n - pos]:
                    raise _bad("chunk data not followed by CRLF")
                if n - pos < 2:
                    return pos, pos
                pos += 2
                self._state = 0
            else:
                after = self._trailers(buf, pos)
                if after < 0:
                    return pos, pos
                pos = after
        return pos, pos

    def _size_line(self, buf: bytes, pos: int) -> int:
        limit = 17 + self._limits.max_chunk_ext  # digits + extensions + CR
        lf = buf.find(b"\n", pos, pos + limit + 1)
        if lf < 0:
            if len(buf) - pos > limit:
                raise _bad("chunk size line too long")
            return -1
        m = _CHUNK_LINE.fullmatch(buf, pos, lf + 1)
        if m is None:
            raise _bad("malformed chunk size line")
        if lf - 1 - m.end(1) > self._limits.max_chunk_ext:
            raise _bad("chunk extensions too long")
        size = int(m.group(1), 16)
        self._total += size
        if self._limits.max_body_bytes and self._total > self._limits.max_body_bytes:
            raise _bad("body larger than allowed", 413)
        if self._total > MAX_LENGTH:
            raise _bad("absurd chunk size")
        self._left = size
        self._state = 1 if size else 3
        self._scan = 0
        return lf + 1

    def _trailers(self, buf: bytes, pos: int) -> int:
        # The trailer section is field lines then CRLF, bounded like a head.
        first = buf[pos : pos + 2]
        self.trailers_at = pos
        if first[:1] == b"\r":
            if first == b"\r\n":
                self.done = True
                return pos + 2
            if len(first) == 2:
                raise _bad("bare CR in trailers")
            return -1
        lim = self._limits
        end_lf = buf.find(b"\n\r\n", pos + self._scan)
        stop = len(buf) if end_lf < 0 else end_lf + 1
        if buf[pos : pos + 1] == b"\n" or buf.find(b"\n\n", pos + self._scan, stop) >= 0:
            raise _bad("bare LF in trailers")
        if end_lf < 0:
            if len(buf) - pos > lim.max_header_bytes + 2:
                raise _bad("trailer section too large", 431)
            self._scan = max(0, len(buf) - pos - 2)
            return -1
        if end_lf + 1 - pos > lim.max_header_bytes:
            raise _bad("trailer section too large", 431)
        if buf.count(b"\n", pos, end_lf + 1) > lim.max_header_count:
            raise _bad("too many trailer fields", 431)
        check_field_block(buf, pos, end_lf + 1)
        self.trailers = screen_trailers(split_fields(buf, pos, end_lf + 1), refuse=self._refuse)
        self.done = True
        return end_lf + 3
