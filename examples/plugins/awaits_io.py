"""A plugin that awaits I/O: ask an external token service before letting a request in.

``trellis_request_access`` is an ``async def``; the kernel's dispatcher awaits
it (pluggy cannot). The wire protocol is deliberately tiny: connect to
``host:port``, send the bearer token and a newline, read one line back:
``ok`` lets the request pass, ``no`` refuses it with 403. A request without
a bearer token gets 401 without asking anyone.

Timeouts, two of them:

- the plugin's own ``timeout_s`` bounds the whole exchange with the service;
  when it passes (or the service is unreachable or answers nonsense) the
  request gets ``503`` (fail closed, but with a clear status);
- the kernel's deadline (``[kernel] plugin_deadline_s``, or
  ``[kernel.policy.tokens] deadline_s``) applies to every awaited hook call
  as well. If it is shorter than ``timeout_s`` it wins, and the flow ends
  with the kernel's own fault handling (502 for ``fail_closed``, or the
  request passes unchecked for ``fail_open``). Keep ``timeout_s`` below it.

One connection per request keeps the example short; a real plugin would keep
a pool, opened in ``trellis_startup`` and closed in ``trellis_shutdown``
(constructors do no I/O).

Load it with::

    [kernel.modules]
    tokens = "examples.plugins.awaits_io:TokenCheckPlugin"

    [kernel]
    plugins = ["tokens"]

    [plugins.tokens]
    host = "127.0.0.1"
    port = 7001
    timeout_s = 0.5

May import: stdlib, attrs, trio, sdk.
"""

from __future__ import annotations

import attrs
import trio

import sdk

#: The longest reply line we read; anything longer is nonsense.
MAX_REPLY = 64


@attrs.frozen(kw_only=True)
class TokenCheckConfig:
    """The ``[plugins.tokens]`` table."""

    # Token service host.
    host: str = "127.0.0.1"
    # Token service TCP port (required).
    port: int = attrs.field(validator=[attrs.validators.ge(1), attrs.validators.le(65535)])
    # Time allowed for connecting, sending and reading the answer (seconds).
    timeout_s: float = attrs.field(default=1.0, validator=attrs.validators.gt(0))


def bearer_token(flow: sdk.Flow) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` field, if there is one."""
    scheme, _, token = (flow.request.headers.get("authorization") or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token


class TokenCheckPlugin:
    """Let a request in only if an external token service says its bearer token is ok."""

    config_class = TokenCheckConfig

    def __init__(self, config: TokenCheckConfig) -> None:
        self.config = config

    async def ask(self, token: str) -> str | None:
        """The service's answer (``"ok"``, ``"no"``, ...), or ``None`` if it did not give one."""
        with trio.move_on_after(self.config.timeout_s):
            try:
                stream = await trio.open_tcp_stream(self.config.host, self.config.port)
                async with stream:
                    await stream.send_all(token.encode("latin-1") + b"\n")
                    reply = b""
                    while b"\n" not in reply and len(reply) <= MAX_REPLY:
                        chunk = await stream.receive_some(MAX_REPLY)
                        if not chunk:
                            break
                        reply += chunk
                    return reply.partition(b"\n")[0].strip().decode("latin-1")
            except (OSError, trio.BrokenResourceError):
                return None
        return None  # timed out

    @sdk.hookimpl
    async def trellis_request_access(self, flow: sdk.Flow) -> sdk.Response | None:
        token = bearer_token(flow)
        if token is None:
            return sdk.Response.make(
                401, "401 bearer token required\n", [("www-authenticate", "Bearer")]
            )
        answer = await self.ask(token)
        flow.record(f"tokens: {answer or 'no answer'}")
        if answer == "ok":
            return None
        if answer == "no":
            return sdk.Response.make(403, "403 token refused\n")
        return sdk.Response.make(503, "503 token service unavailable\n")
