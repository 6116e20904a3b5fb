"""kernel.protocol.clienthello: SNI and ALPN from real ClientHellos, byte by byte, and fuzzed."""

from __future__ import annotations

import re
import ssl
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel.protocol.clienthello import (
    MAX_HELLO,
    NEED_MORE,
    ClientHello,
    ClientHelloError,
    parse_client_hello,
)
from tests.helpers.certs import client_hello


def _record(body: bytes, content_type: int = 22) -> bytes:
    return struct.pack("!BHH", content_type, 0x0301, len(body)) + body


def _hello(
    extensions: bytes | None, *, session_id: bytes = b"", suites: bytes = b"\x13\x01"
) -> bytes:
    """A hand-made ClientHello handshake message (header included)."""
    body = b"\x03\x03" + b"\x00" * 32
    body += bytes([len(session_id)]) + session_id
    body += struct.pack("!H", len(suites)) + suites
    body += b"\x01\x00"
    if extensions is not None:
        body += struct.pack("!H", len(extensions)) + extensions
    return b"\x01" + len(body).to_bytes(3, "big") + body


def _ext(kind: int, data: bytes) -> bytes:
    return struct.pack("!HH", kind, len(data)) + data


def _sni(*names: bytes, kind: int = 0) -> bytes:
    entries = b"".join(bytes([kind]) + struct.pack("!H", len(n)) + n for n in names)
    return _ext(0, struct.pack("!H", len(entries)) + entries)


def _alpn(*protocols: bytes) -> bytes:
    entries = b"".join(bytes([len(p)]) + p for p in protocols)
    return _ext(16, struct.pack("!H", len(entries)) + entries)


# ------------------------------------------------------------ real hellos
@pytest.mark.parametrize(
    ("name", "alpn"),
    [
        ("example.com", ["h2", "http/1.1"]),
        ("Mixed.Case.Example", ["http/1.1"]),
        ("xn--bcher-kva.example", None),
    ],
)
def test_real_client_hello(name: str, alpn: list[str] | None) -> None:
    data = client_hello(name, alpn)
    got = parse_client_hello(data)
    assert got == ClientHello(name.lower(), tuple(alpn or ()), len(data))


def test_real_hello_without_sni() -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    data = client_hello(None, ["h2"], ctx)
    assert parse_client_hello(data) == ClientHello(None, ("h2",), len(data))


def test_every_prefix_needs_more_and_extra_bytes_are_ignored() -> None:
    data = client_hello("example.com", ["h2", "http/1.1"])
    for i in range(len(data)):
        assert parse_client_hello(data[:i]) is NEED_MORE, i
    got = parse_client_hello(data + b"\x17\x03\x03\x00\x05hello")
    assert isinstance(got, ClientHello)
    assert got.length == len(data)
    assert parse_client_hello(bytearray(data)) == got


def test_hello_split_over_records() -> None:
    hello = client_hello("split.example", ["http/1.1"])[5:]  # the handshake message
    data = b"".join(_record(hello[i : i + 100]) for i in range(0, len(hello), 100))
    got = parse_client_hello(data)
    assert got == ClientHello("split.example", ("http/1.1",), len(data))
    for i in range(len(data)):
        assert parse_client_hello(data[:i]) is NEED_MORE


# -------------------------------------------------------------- hand-made
def test_no_extensions_at_all() -> None:
    assert parse_client_hello(_record(_hello(None))) == ClientHello(None, (), 5 + 4 + 41)


def test_trailing_dot_and_other_name_types() -> None:
    got = parse_client_hello(_record(_hello(_sni(b"first.example."))))
    assert isinstance(got, ClientHello)
    assert got.server_name == "first.example"
    # Only a host_name entry counts; unknown name types are skipped.
    got = parse_client_hello(_record(_hello(_sni(b"ignored", kind=7))))
    assert isinstance(got, ClientHello)
    assert got.server_name is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"GET / HTTP/1.1\r\n", "not a TLS handshake: first byte is 0x47 ('G')"),
        (b"\x16\x02", "not a TLS record: version 0x02"),
        (b"\x16\x03\x01\x00\x00", "bad TLS record length 0"),
        (b"\x16\x03\x01\x48\x01", "bad TLS record length 18433"),
        (_record(b"\x02\x00\x00\x00"), "first handshake message is type 2, not ClientHello"),
        (
            _record(b"\x01" + (MAX_HELLO + 1).to_bytes(3, "big")),
            f"ClientHello of {MAX_HELLO + 1} bytes exceeds the {MAX_HELLO}-byte limit",
        ),
    ],
)
def test_refused(data: bytes, message: str) -> None:
    with pytest.raises(ClientHelloError, match=f"^{re.escape(message)}"):
        parse_client_hello(data)


def test_a_record_of_another_type_inside_the_hello() -> None:
    hello = _hello(_sni(b"a.example"))
    data = _record(hello[:10]) + _record(b"\x01\x00", content_type=21)
    with pytest.raises(ClientHelloError, match="a record inside the ClientHello is 0x15"):
        parse_client_hello(data)


@pytest.mark.parametrize(
    ("hello", "message"),
    [
        (_hello(b"", session_id=b"x" * 33), "legacy_session_id longer than 32 bytes"),
        (_hello(b"", suites=b""), "cipher_suites of 0 bytes"),
        (_hello(b"", suites=b"\x13"), "cipher_suites of 1 bytes"),
        (_hello(_sni(b"a") + _sni(b"b")), "extension 0 sent twice"),
        (_hello(_sni(b"caf\xc3\xa9.example")), "server name is not ASCII"),
        (_hello(_sni(b"a/b")), "invalid server name 'a/b'"),
        (_hello(_sni(b"")), "invalid server name ''"),
        (_hello(_alpn(b"")), "empty ALPN protocol name"),
        (_hello(_ext(0, b"\x00\x10")), "truncated ClientHello: server_name_list runs past"),
        (_hello(_ext(16, b"\x00\x01\x05")), "truncated ClientHello: protocol name runs past"),
        (_hello(_ext(16, b"\x00\x00\x00")), "bytes after protocol_name_list"),
        (_hello(b"") + b"\x00\x00", "2 bytes after the extensions"),
    ],
)
def test_malformed_hellos(hello: bytes, message: str) -> None:
    # Fix up the handshake length after editing the body.
    hello = hello[:1] + (len(hello) - 4).to_bytes(3, "big") + hello[4:]
    with pytest.raises(ClientHelloError, match=message):
        parse_client_hello(_record(hello))


def test_garbage_fails_before_the_whole_record_arrives() -> None:
    # The record says 16 KiB, but the handshake type is already wrong.
    with pytest.raises(ClientHelloError, match="type 2"):
        parse_client_hello(b"\x16\x03\x01\x40\x00\x02\x00\x00\x10")


def test_client_hello_error_is_a_value_error() -> None:
    assert issubclass(ClientHelloError, ValueError)


# ------------------------------------------------------------------- fuzzing
_REAL = client_hello("fuzz.example", ["h2", "http/1.1"])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_random_bytes(data: bytes) -> None:
    try:
        result = parse_client_hello(data)
    except ClientHelloError:
        return
    assert result is NEED_MORE or isinstance(result, ClientHello)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_fuzz_mutated_real_hello(data: st.DataObject) -> None:
    buf = bytearray(_REAL)
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(buf) - 1))
        buf[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(buf)))
    try:
        result = parse_client_hello(bytes(buf[:cut]))
    except ClientHelloError:
        return
    assert result is NEED_MORE or isinstance(result, ClientHello)
