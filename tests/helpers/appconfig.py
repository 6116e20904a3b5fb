"""Small configs and requests for the in-process app tests (``start_proxy``).

Used by tests/kernel/test_app.py and the tests of the modules split out of
kernel/app.py (reload, genrun, setmember, shutdown).
"""

from __future__ import annotations

from typing import Any

import trio


def respond(body: str) -> str:
    """A route that answers ``body`` itself (the ``respond`` plugin)."""
    return (
        f'\n[[routes]]\nname = "local"\nplugins = ["respond"]\n[plugins.respond]\nbody = "{body}"\n'
    )


def local_config(body: str) -> str:
    """One listener on an ephemeral port, every request answered ``body``; no watching."""
    return '[kernel]\nwatch_config = false\n[[listeners]]\nbind = "127.0.0.1:0"\n' + respond(body)


def watched_config(body: str) -> str:
    """:func:`local_config` with ``watch_config`` on."""
    return local_config(body).replace("watch_config = false", "watch_config = true")


async def get_body(port: int, client: Any, path: str = "/") -> bytes:
    """The body of one ``GET`` on a new connection."""
    raw = await client.exchange(
        port, f"GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".encode()
    )
    body: bytes = client.parse_responses(raw)[0]["body"]
    return body


async def until_generation(app: Any, number: int) -> None:
    """Wait (10 s at most) until ``app`` serves generation ``number`` or a later one."""
    with trio.fail_after(10):
        while app.generation.number < number:
            await trio.sleep(0.05)
