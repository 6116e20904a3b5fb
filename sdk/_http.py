"""The HTTP data model plugins see: :class:`Headers`, :class:`Request`,
:class:`Response` and :class:`Origin`.

Header fields are kept as ``(name, value)`` byte pairs in wire order with
lower-cased names (HTTP field names are case-insensitive, RFC 9110 §5.1), so
the kernel can hand them to a codec without copying. The ``str`` API decodes
as ISO-8859-1, which round-trips every byte. Values a plugin sets are checked:
CR, LF and NUL can never be smuggled into a message through a plugin
(RFC 9110 §5.5).

May import: stdlib, attrs, sdk._errors.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import final

import attrs

from sdk._errors import LocalProtocolError

__all__ = ["Headers", "Origin", "Request", "Response"]

# RFC 9110 §5.1 field-name = token; §5.5 field-value: no control character
# but HTAB (what the kernel sends is checked so, and refused otherwise).
# (fullmatch, not "$": "$" also matches before a trailing newline.)
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# RFC 3986 §3.2.2-3 host and optional port, for Origin.parse (no user info, no zone ids).
_AUTHORITY = re.compile(
    r"(?:[A-Za-z0-9\-._~%!$&'()*+,;=]+|\[[0-9A-Fa-f:.]+\])"  # reg-name / IPv4 | [IPv6]
    r"(?::[0-9]*)?"
)

_AnyStr = str | bytes


def _latin1(text: _AnyStr, what: str) -> bytes:
    if isinstance(text, bytes):
        return text
    if not isinstance(text, str):
        raise TypeError(f"a header {what} is str or bytes, not {type(text).__name__}")
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        raise LocalProtocolError(f"invalid header {what} {text!r} (not ISO-8859-1)") from None


def _name(name: _AnyStr) -> bytes:
    b = _latin1(name, "name")
    if not _TOKEN.fullmatch(b):
        raise LocalProtocolError(f"invalid header name {name!r}")
    return b.lower()


def _value(value: _AnyStr) -> bytes:
    b = _latin1(value, "value")
    if _BAD_VALUE.search(b):
        raise LocalProtocolError(f"invalid header value {value!r} (a control character)")
    return b.strip(b" \t")


def _key(name: _AnyStr) -> bytes | None:
    """The lookup form of a name; ``None`` for a name no field can have."""
    if isinstance(name, bytes):
        return name.lower()
    try:
        return name.lower().encode("latin-1")
    except UnicodeEncodeError:
        return None


@final
class Headers:
    """An ordered, case-insensitive multimap of header fields.

    ``headers["Host"]`` returns the first value; :meth:`get_all` returns every
    value of a name; ``headers["X"] = "1"`` replaces all fields named X;
    :meth:`add` appends one more. :attr:`fields` is the raw list of
    ``(lower-cased name, value)`` byte pairs, in order.

    Iterating (names, or :meth:`items`) walks the fields as they were when the
    loop began, as httpx's and mitmproxy's headers do: a loop may add, set or
    remove fields, and sees none of its own changes (so
    ``for n, v in h.items(): h.add("x-copy-" + n, v)`` ends). No copy is made:
    :meth:`add` only appends, and every other change puts a new list in
    :attr:`fields`. Only editing :attr:`fields` in place bypasses this.
    """

    __slots__ = ("fields",)

    def __init__(self, fields: Iterable[tuple[_AnyStr, _AnyStr]] = ()) -> None:
        self.fields: list[tuple[bytes, bytes]] = [(_name(n), _value(v)) for n, v in fields]

    @classmethod
    def from_wire(cls, fields: list[tuple[bytes, bytes]]) -> Headers:
        """Wrap fields the kernel already validated (lower-cased); no copy, no checks."""
        h = cls.__new__(cls)
        h.fields = fields
        return h

    # -- reading -----------------------------------------------------------
    def get(self, name: _AnyStr, default: str | None = None) -> str | None:
        """The first value of ``name``, or ``default``."""
        key = _key(name)
        for n, v in self.fields:
            if n == key:
                return v.decode("latin-1")
        return default

    def get_all(self, name: _AnyStr) -> list[str]:
        """Every value of ``name``, in order (empty if absent)."""
        key = _key(name)
        return [v.decode("latin-1") for n, v in self.fields if n == key]

    def cookies(self) -> dict[str, str]:
        """The cookies of every ``Cookie`` field: ``{name: value}``, the first of a name wins.

        Names are case-sensitive; pairs without ``=`` are skipped, and a value
        in double quotes loses them (RFC 6265 §4.2.1). Used by the kernel's
        sticky sessions and by plugins that route on a cookie.
        """
        found: dict[str, str] = {}
        for value in self.get_all(b"cookie"):
            for pair in value.split(";"):
                name, eq, item = pair.partition("=")
                name, item = name.strip(), item.strip()
                if not eq or not name:
                    continue
                if len(item) >= 2 and item[0] == item[-1] == '"':
                    item = item[1:-1]
                found.setdefault(name, item)
        return found

    def get_list(self, name: _AnyStr) -> list[str]:
        """Every comma-separated element of every ``name`` field (RFC 9110 §5.6.1)."""
        return [p.strip() for v in self.get_all(name) for p in v.split(",") if p.strip()]

    def __getitem__(self, name: _AnyStr) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str | bytes):
            return False
        key = _key(name)
        return any(n == key for n, _ in self.fields)

    def __iter__(self) -> Iterator[str]:
        """Distinct names, in order of first appearance (as when the loop began)."""
        seen: set[bytes] = set()
        fields = self.fields
        # islice: fields a loop's body appends are past the length taken here.
        for n, _ in islice(fields, len(fields)):
            if n not in seen:
                seen.add(n)
                yield n.decode("latin-1")

    def items(self) -> Iterator[tuple[str, str]]:
        """Every field as ``(name, value)`` strings, in order, duplicates included.

        The fields as they were when the loop began (see the class docstring).
        """
        fields = self.fields
        for n, v in islice(fields, len(fields)):
            yield n.decode("latin-1"), v.decode("latin-1")

    def __len__(self) -> int:
        return len(self.fields)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self.fields == other.fields

    def __hash__(self) -> int:  # mutable; never hashable
        raise TypeError("Headers is unhashable")

    def __repr__(self) -> str:
        return f"Headers({list(self.items())!r})"

    def copy(self) -> Headers:
        return Headers.from_wire(list(self.fields))

    # -- writing -----------------------------------------------------------
    def add(self, name: _AnyStr, value: _AnyStr) -> None:
        """Append one field (keeps existing fields of the same name)."""
        self.fields.append((_name(name), _value(value)))

    def __setitem__(self, name: _AnyStr, value: _AnyStr) -> None:
        """Replace every field named ``name`` by one field, at the first one's place."""
        key, val = _name(name), _value(value)
        out: list[tuple[bytes, bytes]] = []
        placed = False
        for n, v in self.fields:
            if n == key:
                if not placed:
                    out.append((key, val))
                    placed = True
            else:
                out.append((n, v))
        if not placed:
            out.append((key, val))
        self.fields = out

    def setdefault(self, name: _AnyStr, value: _AnyStr) -> str:
        """The first value of ``name``; adds ``value`` first when there is none."""
        current = self.get(name)
        if current is None:
            self.add(name, value)
            return self.fields[-1][1].decode("latin-1")  # as stored: stripped
        return current

    def __delitem__(self, name: _AnyStr) -> None:
        if not self.remove(name):
            raise KeyError(name)

    def remove(self, name: _AnyStr) -> int:
        """Remove every field named ``name``; returns how many were removed."""
        key = _key(name)
        before = len(self.fields)
        self.fields = [(n, v) for n, v in self.fields if n != key]
        return before - len(self.fields)


def _port(_: object, __: attrs.Attribute[int], port: object) -> None:
    if type(port) is not int or not 0 < port <= 65535:
        raise ValueError(f"port {port!r} is not a port number (1-65535)")


@attrs.frozen(slots=True, cache_hash=True)
class Origin:
    """Where a request goes: scheme, host and port (RFC 6454 origin)."""

    scheme: str
    host: str
    #: 1-65535: another number is refused here (a socket would take it
    #: modulo 65536 and connect to some other port).
    port: int = attrs.field(validator=_port)

    @classmethod
    def parse(cls, url: str) -> tuple[Origin, str]:
        """Split ``http://host[:port][/base]`` into an origin and a base path.

        Raises :class:`ValueError` for anything else: another scheme, no host,
        a port outside 1-65535, user info, a query or a fragment.
        """
        scheme, sep, rest = url.partition("://")
        if not sep or scheme not in ("http", "https"):
            raise ValueError(f"{url!r} is not an http(s) URL")
        if "?" in rest or "#" in rest:
            raise ValueError(f"{url!r} has a query or fragment")
        authority, slash, path = rest.partition("/")
        if not _AUTHORITY.fullmatch(authority):
            raise ValueError(f"{url!r} has an invalid host or port")
        host, port = _split_authority(authority, 443 if scheme == "https" else 80)
        if not host:
            raise ValueError(f"{url!r} has no host")
        if not 0 < port <= 65535:
            raise ValueError(f"{url!r}: port {port} out of range")
        return cls(scheme, host, port), (slash + path).rstrip("/")

    @property
    def authority(self) -> str:
        """``host[:port]``, without the port when it is the scheme's default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.authority}"


def _split_authority(authority: str, default_port: int) -> tuple[str, int]:
    if authority.startswith("["):
        host, _, rest = authority[1:].partition("]")
        port_s = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_s = authority.partition(":")
    if port_s and not (port_s.isascii() and port_s.isdigit()):
        raise ValueError(f"bad port in {authority!r}")
    return host.lower(), int(port_s) if port_s else default_port


@attrs.define(slots=True, eq=False)
class Request:
    """An HTTP request as plugins see it (one per flow).

    ``path`` is the origin-form target including the query (``/a/b?x=1``);
    ``authority`` is ``host[:port]`` from the Host header (or the absolute-form
    target); ``scheme`` is the client connection's (``https`` over TLS),
    whatever an absolute-form target named. Plugins may change any attribute;
    the kernel re-checks headers.
    """

    method: str
    path: str
    headers: Headers = attrs.field(factory=Headers)
    scheme: str = "http"
    authority: str = ""
    http_version: str = "1.1"

    @property
    def host(self) -> str:
        """The host part of :attr:`authority`, lower-cased, without brackets."""
        return _split_authority(self.authority, 0)[0] if self.authority else ""

    @property
    def port(self) -> int:
        return _split_authority(self.authority, 443 if self.scheme == "https" else 80)[1]

    @property
    def path_only(self) -> str:
        """:attr:`path` without the query string."""
        return self.path.partition("?")[0]

    @property
    def query(self) -> str:
        """The query string without ``?`` (empty when absent)."""
        return self.path.partition("?")[2]

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.authority}{self.path}"


@attrs.define(slots=True, eq=False)
class Response:
    """An HTTP response: from the upstream (body streamed) or made by a plugin.

    A plugin-made response carries its whole ``body``; a response relayed from
    an upstream has ``body=None`` and its body streams through the kernel.
    """

    status_code: int
    headers: Headers = attrs.field(factory=Headers)
    body: bytes | None = None
    reason: str = ""
    http_version: str = "1.1"

    @classmethod
    def make(
        cls,
        status_code: int = 200,
        body: bytes | str = b"",
        headers: Iterable[tuple[_AnyStr, _AnyStr]] = (),
        *,
        content_type: str | None = None,
    ) -> Response:
        """A complete local response.

        A ``str`` body is encoded as UTF-8 and, unless ``headers`` say
        otherwise, labelled ``text/plain; charset=utf-8``; ``content_type``
        sets the label explicitly. ``content-length`` is not stored: the
        kernel frames the body when it sends it (after ``trellis_response``
        and body transforms may have changed it).
        """
        data = body.encode("utf-8") if isinstance(body, str) else body
        h = Headers(headers)
        if content_type is not None:
            h["content-type"] = content_type
        elif isinstance(body, str) and "content-type" not in h:
            h["content-type"] = "text/plain; charset=utf-8"
        return cls(status_code=status_code, headers=h, body=data)
