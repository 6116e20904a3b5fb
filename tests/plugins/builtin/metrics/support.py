"""Helpers shared by the metrics tests: scrape, read samples, send requests.

Not a test module (no ``test_`` prefix): ``tests/test_layout.py`` maps test
modules to source modules, and this one maps to none.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

import sdk
from tests.helpers import client

#: (sample name, sorted label pairs) -> value
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, parsed by prometheus-client's own parser."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in out, f"duplicate sample {key}"
            out[key] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """The one sample ``name`` with exactly these labels (0.0 when absent)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def matching(
    samples: Samples, name: str, **labels: str
) -> dict[tuple[tuple[str, str], ...], float]:
    """Samples called ``name`` whose labels include ``labels``, by their full label set."""
    want = set(labels.items())
    return {lbl: v for (n, lbl), v in samples.items() if n == name and want <= set(lbl)}


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(matching(samples, name, **labels).values())


def label_values(samples: Samples, prefix: str = "") -> set[str]:
    """Every label value (``le`` aside) of the samples whose name starts with ``prefix``."""
    return {
        v for (n, lbl), _ in samples.items() if n.startswith(prefix) for k, v in lbl if k != "le"
    }


Address = int | tuple[str, int]


async def request(
    where: Address,
    method: str = "GET",
    path: str = "/",
    body: bytes = b"",
    headers: Iterable[tuple[str, str]] = (),
) -> dict[str, Any]:
    """One request on a fresh connection to ``where`` (a loopback port, or host and port);
    the parsed response (status, headers, body)."""
    host, port = where if isinstance(where, tuple) else ("127.0.0.1", where)
    lines = [f"{method} {path} HTTP/1.1", "Host: site.test", "Connection: close"]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    lines.extend(f"{n}: {v}" for n, v in headers)
    data = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
    raw = await client.exchange(port, data, host=host, half_close=False)
    (resp,) = client.parse_responses(raw, [method.encode()])
    return resp


async def scrape(where: Address, path: str = "/metrics") -> Samples:
    """``GET /metrics`` on ``where``, checked and parsed."""
    resp = await request(where, "GET", path)
    assert resp["status"] == 200, resp
    assert resp["headers"]["content-type"].startswith("text/plain; version=0.0.4"), resp
    assert resp["headers"]["cache-control"] == "no-store"
    text: str = resp["body"].decode()
    return parse(text)


def startup_context(
    generation: int = 1,
    groups: Mapping[str, sdk.Group] | None = None,
    server: sdk.ServerInfo | None = None,
    tasks: list[Any] | None = None,
) -> sdk.StartupContext:
    """A StartupContext for Harness tests; background tasks are recorded, not run."""

    def start_soon(fn: Any, args: tuple[Any, ...]) -> None:
        if tasks is not None:
            tasks.append((fn, args))

    return sdk.StartupContext(
        generation,
        start_soon_impl=start_soon,
        groups=dict(groups or {}),
        server=server if server is not None else sdk.ServerInfo(),
    )
