"""The request half of an exchange sent upstream over HTTP/2.

:func:`proxy_h2` opens a stream on a pooled :class:`~kernel.io.h2upstream.H2Upstream`,
sends the request head (built from the same forwarding fields as HTTP/1.1:
``:authority`` from the Host the exchange chose), streams the body through
``trellis_request_body`` within the upstream's flow-control windows, and
waits for the response head under the route's response deadline. The
response body is relayed by the exchange as for HTTP/1.1, from the stream's
``next_body_event``.

May import: stdlib, trio, sdk, kernel.protocol, kernel.dispatch, kernel.io.h2upstream,
kernel.io.sendrequest.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import trio

from kernel import dispatch
from kernel.io.h2upstream import H2Upstream, H2UpstreamStream
from kernel.io.sendrequest import UNSENDABLE
from kernel.protocol.events import RequestHead, ResponseHead
from sdk import RemoteProtocolError, UpstreamError, UpstreamTimeout

if TYPE_CHECKING:
    from kernel.io.relay import UpstreamRelay

__all__ = ["proxy_h2"]


async def proxy_h2(ex: UpstreamRelay, up: H2Upstream) -> tuple[H2UpstreamStream, ResponseHead]:
    """Send ``ex``'s request on ``up``; returns the stream and its response head.

    Raises :class:`~kernel.io.h2upstream.Refused` when the upstream did not
    process the stream (safe to retry elsewhere), :class:`UpstreamTimeout`
    past the response deadline, :class:`UpstreamError` when the stream or
    connection fails.
    """
    flow, route = ex.flow, ex.route
    assert route is not None
    assert flow.upstream is not None
    scheme = flow.upstream.scheme.encode("ascii")
    try:
        fields = ex._upstream_fields()
        authority = next((v for n, v in fields if n == b"host"), flow.upstream.authority.encode())
        head = RequestHead(
            method=flow.request.method.encode("ascii"),
            target=flow.request.path.encode("latin-1"),
            headers=fields,
        )
        stream = await up.open(head, scheme, authority, end_stream=not ex.has_body)
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        up.close_nowait()
        raise UpstreamError(f"upstream {flow.upstream} failed: {exc!r}") from exc
    except UNSENDABLE as exc:
        # Refused before a frame of it was queued: the connection is intact.
        if (refused := ex._unsendable_request(exc)) is None:
            raise
        raise refused from exc
    ex.upstream = stream  # the exchange's end resets it unless the response ended

    flow.timings.upstream_connected = time.monotonic()
    try:
        await _send_body(ex, stream)
        response = await stream.response_head(route.response_timeout_s, ex._forward_interim)
    except trio.TooSlowError:
        raise UpstreamTimeout(
            f"{flow.upstream} sent no response within {route.response_timeout_s:g}s"
        ) from None
    except (trio.BrokenResourceError, trio.ClosedResourceError, RemoteProtocolError) as exc:
        raise UpstreamError(f"upstream {flow.upstream} failed: {exc}") from exc
    return stream, response.head


async def _send_body(ex: UpstreamRelay, stream: H2UpstreamStream) -> None:
    if not ex.has_body:
        if not ex.request_done:
            await ex._next_body_chunk()  # the request's end: lets the client codec cycle
        return
    if ex.head.expect_continue:
        # Not asked of an HTTP/2 upstream (unlike HTTP/1.1, sendrequest.py):
        # the stream's flow-control window already bounds what is sent
        # before the upstream reads.
        await ex.conn.send_informational(100, [])
    flow = ex.flow
    assert ex.route is not None
    timeout = ex.route.send_timeout_s

    async def send(data: bytes) -> bool:
        """False when the upstream answered instead (the rest is not sent)."""
        # Each piece within send_timeout_s, as over HTTP/1.1: an upstream
        # that never opens its window would otherwise hold the flow for ever.
        try:
            with trio.fail_after(timeout):
                await stream.send_body(data)
        except trio.TooSlowError:
            raise UpstreamTimeout(
                f"{flow.upstream} took no request body for {timeout:g}s"
            ) from None
        except trio.BrokenResourceError:
            # RFC 9113 §8.1: a server may answer in full before it has the
            # whole body, then reset the stream with NO_ERROR (or just end
            # its side): its answer is relayed, not a 502. close_nowait
            # cancels our side at the end of the flow.
            if stream.answered:
                return False
            raise
        return True

    transforms = ex.chain.request_body
    while (chunk := await ex._next_body_chunk()) is not None:
        if transforms:
            chunk = dispatch.transform(transforms, "trellis_request_body", flow, chunk, False)
        if chunk and not await send(chunk):
            return
    if transforms:
        last = dispatch.transform(transforms, "trellis_request_body", flow, b"", True)
        if last and not await send(last):
            return
    await stream.end(ex.trailers or None)
