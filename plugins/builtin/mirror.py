"""Request mirroring: :class:`MirrorPlugin` copies a share of requests to a shadow origin.

``[plugins.mirror]`` (or a named instance ``[plugins.mirror.LABEL]``), on a route::

    [plugins.mirror]
    upstream = "http://10.0.0.9:8080"   # the shadow (http only for now), or
    # group = "shadow"                  # a [[groups]] entry (one of the two)
    percent = 100                       # share of the requests copied, 0..100
    max_in_flight = 8                   # shadow requests sent at the same time
    queue = 64                          # copies waiting for a sender; when full, dropped
    max_body_bytes = 65536              # larger request bodies: the copy is dropped
    timeout_s = 5.0                     # per shadow request, connect to last byte

Fire and forget: the real request never waits for, and never fails because
of, the shadow. How:

- ``trellis_request_body`` (plain ``def``, on the hot path) only appends the
  chunks it sees to a per-flow buffer in ``flow.stash`` and returns ``None``
  (the chunk goes upstream unchanged). A body over ``max_body_bytes`` stops
  the buffering (the buffer is freed) and the copy is dropped. Put ``mirror``
  last in the chain to copy the body as the upstream gets it. Note that a
  route with any request-body hook has its upstream requests re-framed by the
  kernel with chunked encoding.
- ``trellis_flow_done`` enqueues the copy. At that point the real request and
  its response are over, so the copy can neither slow nor fail them; the price
  is that the shadow sees a request only after the primary answered it (by
  design for a shadow, whose answers are discarded anyway). The copy is the
  request as the upstream got it (after rewriting plugins), with the
  shadow's base path in front, the ``Host`` header kept, hop-by-hop and
  framing headers replaced by a ``content-length`` and
  ``x-mirrored-by: trellis`` added. Flows that never went upstream (answered
  locally or refused: ``flow.upstream`` is ``None``) and flows whose body was
  not read to its end are not copied.
- The queue is a bounded trio memory channel created in ``trellis_startup``;
  ``send_nowait`` on a full queue drops the copy (counted, never waited for).
  ``max_in_flight`` worker tasks started with ``context.start_soon`` take
  copies from it and send each with h11 over a fresh ``trio.open_tcp_stream``
  (``connection: close``), read and discard the response, and never raise:
  failures are counted and logged at info level.

Counters on the instance: ``queued``, ``sent`` (the shadow answered),
``dropped`` (queue full, body too large or incomplete, not started) and
``failed`` (connect error, timeout, protocol error). Decisions recorded:
``mirror: queued``, ``mirror: dropped (queue full)``, ``mirror: dropped
(body over N bytes)``, ``mirror: dropped (body incomplete)``, ``mirror: not
sampled (P%)``. The choice is drawn once per request (random, not sticky).

With ``group``, each copy goes to the next *available* target of that
group (round-robin over the targets the kernel's health checks and passive
ejection leave in rotation, read from ``context.groups``), with that
target's base path; ``https`` targets are skipped, and a copy finding no
target is counted in ``failed``.

``https://`` shadows are refused by the configuration for now (no TLS client here).

May import: stdlib, attrs, trio, h11, sdk.
"""

from __future__ import annotations

import logging
import math
import random
from typing import Any

import attrs
import h11
import trio

import sdk

__all__ = ["MirrorConfig", "MirrorPlugin", "ShadowRequest"]

log = logging.getLogger("trellis.plugins.mirror")

#: Not copied to the shadow: hop-by-hop and framing fields (the copy sets its own).
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "expect",
    }
)


#: What a failed shadow exchange raises (counted in ``failed``, logged at info).
_NETWORK_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError)


# -------------------------------------------------------------- validators
def _upstream(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if not value:
        return
    try:
        origin, _base = sdk.Origin.parse(value)
    except ValueError as exc:
        raise ValueError(f"must be an http URL such as 'http://10.0.0.9:8080': {exc}") from None
    if origin.scheme != "http":
        raise ValueError(f"https shadows are not supported yet, use http://, got {value!r}")


def _percent(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not 0.0 <= value <= 100.0:  # also refuses nan
        raise ValueError(f"must be between 0 and 100, got {value!r}")


def _at_least(low: int) -> Any:
    def check(_: object, attribute: attrs.Attribute[Any], value: int) -> None:
        if value < low:
            raise ValueError(f"must be at least {low}, got {value!r}")

    return check


def _timeout(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"must be a positive number of seconds, got {value!r}")


@attrs.frozen(kw_only=True)
class MirrorConfig:
    """The ``[plugins.mirror]`` table: the shadow origin and how much is copied to it."""

    #: The shadow: ``http://host[:port][/base]``; or set ``group``.
    upstream: str = attrs.field(default="", validator=_upstream)
    #: The shadow as an upstream group (``[[groups]]`` name); or set ``upstream``.
    group: str = ""
    #: Share of the requests copied, 0..100 (drawn per request).
    percent: float = attrs.field(default=100.0, validator=_percent)
    #: Shadow requests in flight at the same time (worker tasks).
    max_in_flight: int = attrs.field(default=8, validator=_at_least(1))
    #: Copies waiting for a worker; a copy that finds the queue full is dropped.
    queue: int = attrs.field(default=64, validator=_at_least(0))
    #: Request bodies up to this size are copied; a larger body drops the copy.
    max_body_bytes: int = attrs.field(default=65536, validator=_at_least(0))
    #: Seconds for one shadow request, from connect to the response's last byte.
    timeout_s: float = attrs.field(default=5.0, validator=_timeout)

    def __attrs_post_init__(self) -> None:
        if bool(self.upstream) == bool(self.group):
            raise ValueError("set exactly one of upstream (a URL) and group (a [[groups]] name)")


@attrs.frozen
class ShadowRequest:
    """One copy waiting in the queue."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes


@attrs.define
class _Capture:
    """Per-flow state, in ``flow.stash[_STATE]``."""

    chosen: bool
    chunks: list[bytes] = attrs.field(factory=list)
    size: int = 0
    overflow: bool = False
    complete: bool = False


_STATE: sdk.StashKey[_Capture] = sdk.StashKey("mirror")


def _declares_body(headers: sdk.Headers) -> bool:
    if headers.get_all("transfer-encoding"):
        return True
    return any(v.strip() not in ("", "0") for v in headers.get_all("content-length"))


class MirrorPlugin:
    """Copy a share of requests to a shadow origin, fire and forget; answers are discarded."""

    config_class = MirrorConfig

    def __init__(self, config: MirrorConfig, rng: random.Random | None = None) -> None:
        self.config = config
        self.origin: sdk.Origin | None = None
        self.base_path = ""
        if config.upstream:
            self.origin, self.base_path = sdk.Origin.parse(config.upstream)
        #: The shadow group's targets (from ``trellis_startup``) and a round-robin counter.
        self._targets: tuple[sdk.Target, ...] = ()
        self._next = 0
        self._rng = rng if rng is not None else random.Random()
        self._send: trio.MemorySendChannel[ShadowRequest] | None = None
        self.queued = 0
        self.sent = 0
        self.dropped = 0
        self.failed = 0

    # ------------------------------------------------------------ lifecycle
    @sdk.hookimpl
    def trellis_config_check(self, groups: tuple[str, ...]) -> list[str] | None:
        group = self.config.group
        if group and group not in groups:
            return [f"group: no group named {group!r} (groups: {', '.join(groups) or 'none'})"]
        return None

    @sdk.hookimpl
    def trellis_startup(self, context: sdk.StartupContext) -> None:
        group = context.groups.get(self.config.group)
        if group is not None:
            self._targets = tuple(t for t in group.targets if t.origin.scheme == "http")
        send, receive = trio.open_memory_channel[ShadowRequest](self.config.queue)
        self._send = send
        for _ in range(self.config.max_in_flight):
            context.start_soon(self._worker, receive)

    @sdk.hookimpl
    def trellis_shutdown(self) -> None:
        # The workers were cancelled already; copies still queued are lost.
        self._send = None

    # ---------------------------------------------------------------- flow
    def _state(self, flow: sdk.Flow) -> _Capture:
        state = flow.stash.get(_STATE, None)
        if state is None:
            percent = self.config.percent
            chosen = percent >= 100.0 or self._rng.random() * 100.0 < percent
            state = _Capture(chosen=chosen)
            flow.stash[_STATE] = state
        return state

    @sdk.hookimpl
    def trellis_request_body(self, flow: sdk.Flow, chunk: bytes, end: bool) -> None:
        state = self._state(flow)
        if not state.chosen or state.overflow:
            return
        if chunk:
            state.size += len(chunk)
            if state.size > self.config.max_body_bytes:
                state.overflow = True
                state.chunks.clear()
                return
            state.chunks.append(chunk)
        if end:
            state.complete = True

    @sdk.hookimpl
    def trellis_flow_done(self, flow: sdk.Flow) -> None:
        if flow.upstream is None:
            return  # answered locally or refused: nothing went upstream
        state = self._state(flow)
        if not state.chosen:
            flow.record(f"mirror: not sampled ({self.config.percent:g}%)")
            return
        if state.overflow:
            self._drop(flow, f"body over {self.config.max_body_bytes} bytes")
            return
        if (state.chunks or _declares_body(flow.request.headers)) and not state.complete:
            self._drop(flow, "body incomplete")
            return
        copy = self._copy(flow.request, b"".join(state.chunks))
        state.chunks.clear()
        if self._send is None:
            self._drop(flow, "not started")
            return
        try:
            self._send.send_nowait(copy)
        except trio.WouldBlock:
            self._drop(flow, "queue full")
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._drop(flow, "not started")
        else:
            self.queued += 1
            flow.record("mirror: queued")

    def _drop(self, flow: sdk.Flow, why: str) -> None:
        self.dropped += 1
        flow.record(f"mirror: dropped ({why})")

    def _copy(self, request: sdk.Request, body: bytes) -> ShadowRequest:
        fields = request.headers.get_all("connection")
        named = {token.strip().lower() for value in fields for token in value.split(",")}
        skip = _HOP_BY_HOP | named
        headers = [(n, v) for n, v in request.headers.items() if n.lower() not in skip]
        if not any(n.lower() == "host" for n, _ in headers) and request.authority:
            headers.insert(0, ("host", request.authority))
        if body or request.method.upper() in ("POST", "PUT", "PATCH"):
            headers.append(("content-length", str(len(body))))
        headers += [("x-mirrored-by", "trellis"), ("connection", "close")]
        path = request.path if request.path.startswith("/") else "/" + request.path
        # A group target's base path is put in front when the copy is sent.
        return ShadowRequest(request.method, self.base_path + path, tuple(headers), body)

    def _shadow(self) -> tuple[sdk.Origin, str] | None:
        """Where the next copy goes: the origin, or the group's next available target."""
        if self.origin is not None:
            return self.origin, ""  # its base path is in the copy already
        targets = self._targets
        for _ in range(len(targets)):
            target = targets[self._next % len(targets)]
            self._next += 1
            if target.available:
                return target.origin, target.base_path
        return None

    # ------------------------------------------------------------- workers
    async def _worker(self, receive: trio.MemoryReceiveChannel[ShadowRequest]) -> None:
        async for copy in receive:
            await self._deliver(copy)

    async def _deliver(self, copy: ShadowRequest) -> None:
        """Send one copy and discard the answer; never raises (but cancellation)."""
        shadow = self._shadow()
        if shadow is None:
            self.failed += 1
            log.info("mirror: no available target in group %r", self.config.group)
            return
        origin, base = shadow
        try:
            with trio.fail_after(self.config.timeout_s):
                status = await self._exchange(copy, origin, base + copy.target)
        except trio.TooSlowError:
            self.failed += 1
            log.info("mirror: %s %s to %s timed out", copy.method, copy.target, origin)
        except _NETWORK_ERRORS as e:
            self.failed += 1
            log.info("mirror: %s %s to %s failed: %s", copy.method, copy.target, origin, e)
        except Exception:  # a bug here must not kill the worker
            self.failed += 1
            log.warning("mirror: unexpected error sending to %s", origin, exc_info=True)
        else:
            self.sent += 1
            log.debug("mirror: %s %s -> %s %d", copy.method, copy.target, origin, status)

    async def _exchange(self, copy: ShadowRequest, origin: sdk.Origin, target: str) -> int:
        headers = list(copy.headers)
        if not any(n.lower() == "host" for n, _ in headers):
            headers.insert(0, ("host", origin.authority))
        stream = await trio.open_tcp_stream(origin.host, origin.port)
        async with stream:
            conn = h11.Connection(h11.CLIENT)
            head = h11.Request(
                method=copy.method.encode("ascii"),
                target=target.encode("latin-1"),
                headers=[(n.encode("ascii"), v.encode("latin-1")) for n, v in headers],
            )
            data = conn.send(head)
            if copy.body:
                data += conn.send(h11.Data(data=copy.body))
            data += conn.send(h11.EndOfMessage())
            await stream.send_all(data)
            status = 0
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.EndOfMessage):
                    return status
                elif isinstance(event, h11.ConnectionClosed):
                    raise trio.BrokenResourceError("shadow closed the connection early")
