"""Checks on what a peer sends, shared by both HTTP/1.1 codecs so they agree.

Every decision about received bytes is made here, on raw bytes, before either
parser (h11 or llhttp) sees a head; the parsers only extract fields. That is
what keeps the two codecs identical on hostile input: a request smuggling
attempt is refused by the same line of code whichever codec runs. (What we
agree to *send* is in :mod:`.http1`.)

This module is the codecs' one door: it re-exports the head syntax of
:mod:`.h1_syntax` and the chunked coding of :mod:`.chunked`.

- :class:`HeadScanner` finds where a head ends and enforces the size limits,
  also while the head is incomplete, so buffering stays bounded.
- :func:`parse_request_line`, :func:`parse_status_line`,
  :func:`check_field_block`, :func:`split_fields`, :func:`host_ok`: head
  syntax (RFC 9112 §2-§5), from :mod:`.h1_syntax`.
- :func:`request_framing`, :func:`response_framing`: one framing per message,
  ``Host``, ``Connection``, ``Expect`` (RFC 9112 §3.2, §6, §9; RFC 9110 §10.1.1).
- :class:`ChunkedDecoder`, :func:`screen_trailers`: the chunked coding (RFC
  9112 §7.1), bounded, and trailer sections, from :mod:`.chunked`.
- :func:`salvage_request_head`: what can be told of a head refused above,
  for the refused request's flow (logs and metrics).

Status hints (server side; the client codecs turn every one into 502):
400 malformed or ambiguous; 413 body over ``max_body_bytes``; 414 request
line too long; 431 header block or trailers too large; 501 a well-formed
transfer coding other than chunked; 505 an HTTP version other than 1.0/1.1.

May import: stdlib, kernel.protocol.events, kernel.protocol.http1,
kernel.protocol.h1_syntax, kernel.protocol.chunked, sdk._errors.
"""

from __future__ import annotations

import re
from typing import Final

from kernel.protocol.chunked import NOT_IN_TRAILERS, ChunkedDecoder, screen_trailers
from kernel.protocol.events import Fields, RequestHead
from kernel.protocol.h1_syntax import (
    EXT_VALUE,
    bad,
    check_field_block,
    check_response_start,
    host_ok,
    parse_request_line,
    parse_status_line,
    skip_empty_lines,
    split_fields,
)
from kernel.protocol.http1 import CHUNKED, TCHAR, TOKEN, UNTIL_CLOSE, Limits, tokens
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

# RFC 9112 §6.1 transfer-coding = token *( OWS ";" OWS transfer-parameter ).
_CODING = re.compile(TOKEN + rb"(?>(?:[ \t]*+;[ \t]*+" + TOKEN + EXT_VALUE + rb")*)")
_DIGITS = re.compile(rb"[0-9]{1,18}")  # more than 18 digits cannot be a real length
_FRAMING_NAMES: Final = frozenset(
    (b"host", b"content-length", b"transfer-encoding", b"connection", b"expect")
)


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
            raise bad("this is not HTTP/1.1")  # (a lone CR may yet be an empty line)
        scan = pos + self._scan
        end_lf = buf.find(b"\n\r\n", scan)
        stop = n if end_lf < 0 else end_lf + 1
        line = self._line
        if line < 0:
            le = buf.find(b"\n", pos, stop)
            if le < 0:
                if n - pos > self._max_line + 1:
                    raise bad("request line too long", 414)
                self._scan = n - pos - 2 if n - pos > 2 else 0
                return -1
            line = self._line = le - pos
            if line > self._max_line and (line > self._max_line + 1 or buf[le - 1] != 0x0D):
                raise bad("request line too long", 414)
        le = pos + line
        # Two LFs in a row can only be a line ended by a bare LF followed by the
        # end of the head: never valid (RFC 9112 §2.2 requires CRLF).
        if buf.find(b"\n\n", le if le > scan else scan, stop) >= 0:
            raise bad("bare LF in head")
        # A line starting with a CR not followed by LF: a bare CR, which the
        # search for the blank line would otherwise wait past until a timeout.
        cr = buf.find(b"\n\r", le if le > scan else scan, stop)
        if 0 <= cr < n - 2:
            raise bad("bare CR in head")
        if end_lf < 0:
            if n - le - 1 > self._max_block + 2:
                raise bad("header block too large", 431)
            counted = pos + self._counted
            self._lines += buf.count(b"\n", le + 1 if le >= counted else counted, n)
            self._counted = n - pos
            if self._lines > self._max_count:
                raise bad("too many header fields", 431)
            self._scan = n - pos - 2 if n - pos > 2 else 0
            return -1
        if end_lf - le > self._max_block:
            raise bad("header block too large", 431)
        if buf.count(b"\n", le + 1, end_lf + 1) > self._max_count:
            raise bad("too many header fields", 431)
        self.line_end = le
        return end_lf + 3


#: The method at the start of a request line that is refused as a whole.
_METHOD_PREFIX = re.compile(rb"(" + TOKEN + rb") ")


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
            raise bad("no request line")
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


def _content_length(value: bytes, count: int, max_body: int) -> int:
    # RFC 9110 §8.6: a list, even of equal values, is how CL.CL smuggling
    # starts; we refuse it rather than pick one.
    if count > 1 or _DIGITS.fullmatch(value) is None:
        raise bad("invalid or repeated Content-Length")
    length = int(value)
    if max_body and length > max_body:
        raise bad("body larger than allowed", 413)
    return length


def _chunked_request(value: bytes, count: int) -> None:
    # RFC 9112 §6.3: chunked must be the final coding of a request (else 400);
    # §6.1: never applied twice; a coding we do not know gets 501 (§6.1).
    if count > 1:
        raise bad("repeated Transfer-Encoding")
    codings = [c.strip(b" \t") for c in value.split(b",")]
    for coding in codings:
        if _CODING.fullmatch(coding) is None:
            raise bad("malformed Transfer-Encoding")
    names = [c.lower() for c in codings]
    if names[-1] != b"chunked" or names.count(b"chunked") > 1:
        raise bad("chunked must be the final transfer coding, once")
    if len(names) > 1:
        raise bad("unsupported transfer coding", 501)


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
            raise bad("an expectation other than 100-continue", 417)
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
            raise bad("Transfer-Encoding in an HTTP/1.0 request")
        if lengths:  # RFC 9112 §6.1: the CL.TE / TE.CL smuggling pair
            raise bad("both Content-Length and Transfer-Encoding")
        _chunked_request(coding, codings)
        _lower_coding(fields)
        body = CHUNKED
    elif lengths:
        body = _content_length(length, lengths, limits.max_body_bytes)
    if body and method == b"CONNECT":
        # RFC 9110 §9.3.6: a CONNECT has no content. Framed by its fields,
        # what follows it (a pipelined request) would be read as its body by
        # us and as a request by whoever reads it the RFC's way.
        raise bad("CONNECT with content")
    # RFC 9112 §3.2: exactly one Host in HTTP/1.1, at most one in 1.0, valid.
    if hosts > 1 or (not hosts and version == b"1.1"):
        raise bad("a request needs exactly one Host")
    if hosts and not host_ok(host, need_host=False):
        raise bad("invalid Host")
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
            raise bad("ambiguous response framing")
        # Anything but plain chunked would reach the client still encoded
        # once we drop the hop-by-hop Transfer-Encoding: refuse it.
        if coding.lower() != b"chunked":
            raise bad("unsupported transfer coding", 501)
        _lower_coding(fields)
        body = CHUNKED
    elif lengths:
        body = _content_length(length, lengths, 0 if bodyless else limits.max_body_bytes)
    if bodyless:
        body = 0
    keep_alive = version == b"1.1" and not close and body != UNTIL_CLOSE
    return body, keep_alive
