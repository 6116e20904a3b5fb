"""The connection state both HTTP/1.1 codecs share (kernel.protocol.codec_state),
run through each codec: the mixins hold one behaviour for both."""

from __future__ import annotations

import pytest

from kernel.protocol.codec_state import ClientSide, ServerSide, Side
from kernel.protocol.events import (
    PAUSED,
    ConnectionClosed,
    EndOfMessage,
    RequestHead,
    ResponseHead,
)
from kernel.protocol.h11_codec import H11ClientCodec, H11ServerCodec
from kernel.protocol.http1 import Limits
from kernel.protocol.httptools_codec import HttptoolsClientCodec, HttptoolsServerCodec
from sdk._errors import LocalProtocolError, RemoteProtocolError

SERVERS = [H11ServerCodec, HttptoolsServerCodec]
CLIENTS = [H11ClientCodec, HttptoolsClientCodec]

GET = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize("cls", SERVERS)
def test_servers_take_the_server_side(cls: type[ServerSide]) -> None:
    assert issubclass(cls, ServerSide)
    assert not issubclass(cls, ClientSide)
    # The base's body reader, not the mixin's placeholder, comes first.
    assert cls._read_body is not Side._read_body


@pytest.mark.parametrize("cls", CLIENTS)
def test_clients_take_the_client_side(cls: type[ClientSide]) -> None:
    assert issubclass(cls, ClientSide)
    assert not issubclass(cls, ServerSide)
    assert cls._read_body is not Side._read_body


def test_the_fast_codecs_keep_no_instance_dict() -> None:
    # A server codec lives as long as its connection: one __dict__ each would
    # cost idle keep-alive connections memory.
    for codec in (HttptoolsServerCodec(Limits()), HttptoolsClientCodec(Limits())):
        assert not hasattr(codec, "__dict__")


@pytest.mark.parametrize("cls", SERVERS)
def test_server_cycle(cls: type[H11ServerCodec | HttptoolsServerCodec]) -> None:
    codec = cls(Limits())
    codec.receive_data(GET + b"GET /b")
    head = codec.next_event()
    assert isinstance(head, RequestHead)
    assert codec.request_method == b"GET"
    assert codec.keep_alive
    assert isinstance(codec.next_event(), EndOfMessage)
    assert codec.next_event() is PAUSED
    assert codec.buffered
    assert codec.trailing_data() == b"GET /b"
    with pytest.raises(LocalProtocolError, match="cannot carry another request"):
        codec.start_next_cycle()  # nothing answered yet
    codec.send_response_head(ResponseHead(status_code=200, headers=[(b"content-length", b"0")]))
    with pytest.raises(LocalProtocolError, match="already started"):
        codec.send_informational(103, [])
    codec.send_end()
    codec.start_next_cycle()
    codec.receive_data(b" HTTP/1.1\r\nHost: x\r\n\r\n")
    second = codec.next_event()
    assert isinstance(second, RequestHead)
    assert second.target == b"/b"


@pytest.mark.parametrize("cls", SERVERS)
def test_server_errors_are_final_and_end_keep_alive(
    cls: type[H11ServerCodec | HttptoolsServerCodec],
) -> None:
    codec = cls(Limits())
    codec.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\nBad Name: y\r\n\r\n")
    with pytest.raises(RemoteProtocolError):
        codec.next_event()
    assert not codec.keep_alive
    with pytest.raises(RemoteProtocolError, match="already failed"):
        codec.next_event()


@pytest.mark.parametrize("cls", SERVERS)
def test_server_eof_between_requests(cls: type[H11ServerCodec | HttptoolsServerCodec]) -> None:
    codec = cls(Limits())
    codec.receive_data(b"")
    assert isinstance(codec.next_event(), ConnectionClosed)
    assert isinstance(codec.next_event(), ConnectionClosed)


@pytest.mark.parametrize("cls", CLIENTS)
def test_client_cycle_and_502(cls: type[H11ClientCodec | HttptoolsClientCodec]) -> None:
    codec = cls(Limits())
    codec.send_request_head(RequestHead(method=b"GET", target=b"/", headers=[(b"host", b"x")]))
    codec.send_end()
    codec.receive_data(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert isinstance(codec.next_event(), ResponseHead)
    assert isinstance(codec.next_event(), EndOfMessage)
    assert codec.next_event() is PAUSED
    assert codec.keep_alive
    codec.start_next_cycle()
    with pytest.raises(LocalProtocolError, match="cannot carry another request"):
        codec.start_next_cycle()  # the next request was not even sent
    codec.send_request_head(RequestHead(method=b"GET", target=b"/", headers=[(b"host", b"x")]))
    codec.send_end()
    codec.receive_data(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
    with pytest.raises(RemoteProtocolError) as info:
        codec.next_event()
    assert info.value.status_hint == 502  # whatever the upstream did wrong
    assert not codec.keep_alive
    with pytest.raises(RemoteProtocolError, match="already failed"):
        codec.next_event()
