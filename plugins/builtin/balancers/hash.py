"""``hash``: consistent hashing: requests with the same key go to the same target.

``[plugins.hash]`` (or named instances, ``[plugins.hash.byuser]``)::

    [plugins.hash]
    key = "client_ip"        # or "path", "header:NAME", "cookie:NAME"
    algorithm = "ring"       # or "maglev"
    vnodes = 160             # ring: points per unit of weight
    table_size = 65537       # maglev: lookup table entries, a prime

The key:

- ``client_ip``: the TCP peer's address (behind another proxy every request
  shares it: hash a header there);
- ``path``: the request path without the query (nginx's ``$uri``);
- ``header:NAME``: the header's value (several fields are joined with
  ``", "``); the name is case-insensitive;
- ``cookie:NAME``: the cookie's value, read from every ``Cookie`` field
  (``a=1; b=2``); names are case-sensitive, the first one wins, and a value
  in double quotes is taken without them.

A request without the header or cookie is hashed by its client address.
Keys are hashed with BLAKE2b, never Python's per-process salted ``hash()``,
so a key maps to the same target in every process of a fleet and across
restarts.

``ring`` (Karger et al.): each target gets ``round(vnodes * weight)``
points (at least one) on a 64-bit circle, at the hashes of
``"NAME#0"``, ``"NAME#1"``...; a key goes to the owner of the first point
clockwise from its hash. Points depend on the target's *name*, not on its
position, so adding a target takes about ``1 / (n + 1)`` of the keys, all
to the new target, and nothing else moves. When the owner is not a
candidate (down, or already tried by this request), the walk goes on
clockwise to the next point whose target is one: only that target's keys
move, spread over the others.

``maglev`` (Eisenbud et al., NSDI 2016): a lookup table of ``table_size``
entries, each naming a target, filled from per-target permutations of the
entries; a key goes to entry ``hash % table_size``, one index. Weights
count: at each round of the fill a target claims entries in proportion to
its weight, so the shares are within an entry of the weights (a ring's are
off by a few per cent). Adding a target moves about ``1 / (n + 1)`` of the
keys, nearly all to the new target: Maglev's fill lets a few of the moved
keys (0.1 to 2% of them in our measurements) change hands between the old
targets too.

When a key's target is not a candidate (down, or already tried by a retry),
the key probes further along its own sequence of table slots (a second
hash of the key gives the stride) until a slot belongs to a candidate, at
most :data:`MAGLEV_PROBES` times, then falls back to a plain hash over the
candidates. The keys of the targets that are candidates never move, the
orphaned keys spread over the others in proportion to their table shares,
and no table is ever filled after the balancer was built (a fill takes
20 to 40 ms for 65,537 entries: it must not happen inside a pick).

May import: stdlib, attrs, sdk, ._common.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Callable, Sequence
from typing import Any, Literal, final

import attrs

import sdk

from ._common import find, stable_hash

__all__ = [
    "MAGLEV_PROBES",
    "MAX_TABLE_SIZE",
    "MAX_VNODES",
    "HashConfig",
    "HashPlugin",
    "KeyReader",
    "MaglevBalancer",
    "RingBalancer",
    "key_reader",
    "maglev_table",
]

#: Tables over candidate subsets a maglev balancer keeps.
MAGLEV_PROBES = 64
#: Largest ``table_size``: filling the table takes time on the event loop.
MAX_TABLE_SIZE = 1_000_003
#: Largest ``vnodes``.
MAX_VNODES = 10_000

#: Reads a request's key; ``None`` when the request has none (no such header).
KeyReader = Callable[[sdk.Flow], str | None]


# ------------------------------------------------------------------ keys
def key_reader(spec: str) -> KeyReader:
    """The function reading key ``spec`` (already validated) from a flow."""
    kind, _, name = spec.partition(":")
    if kind == "header":
        lower = name.lower()

        def header(flow: sdk.Flow) -> str | None:
            values = flow.request.headers.get_all(lower)
            if not values:
                return None
            return values[0] if len(values) == 1 else ", ".join(values)

        return header
    if kind == "cookie":
        return lambda flow: flow.request.headers.cookies().get(name)
    if kind == "path":
        return lambda flow: flow.request.path_only
    return lambda flow: flow.client.address


# ------------------------------------------------------------- validators
def _key(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    kind, colon, name = value.partition(":")
    if value in ("client_ip", "path") or (
        colon and kind in ("header", "cookie") and sdk.is_token(name)
    ):
        return
    raise ValueError(
        f"must be 'client_ip', 'path', 'header:NAME' or 'cookie:NAME' (NAME a header or"
        f" cookie name), got {value!r}"
    )


def _vnodes(_: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 1 <= value <= MAX_VNODES:
        raise ValueError(f"must be between 1 and {MAX_VNODES}, got {value!r}")


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    i = 2
    while i * i <= n:
        if n % i == 0:
            return False
        i += 1
    return True


def _table_size(_: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 2 <= value <= MAX_TABLE_SIZE:
        raise ValueError(f"must be a prime between 2 and {MAX_TABLE_SIZE}, got {value!r}")
    if not _is_prime(value):
        raise ValueError(f"must be a prime (such as 65537 or 655373), got {value!r}")


@attrs.frozen(kw_only=True)
class HashConfig:
    """The ``[plugins.hash]`` table: what to hash and how keys map onto targets."""

    #: ``client_ip``, ``path``, ``header:NAME`` or ``cookie:NAME``.
    key: str = attrs.field(default="client_ip", validator=_key)
    #: ``ring`` (consistent hash ring) or ``maglev`` (lookup table).
    algorithm: Literal["ring", "maglev"] = "ring"
    #: Ring points per unit of weight.
    vnodes: int = attrs.field(default=160, validator=_vnodes)
    #: Maglev table entries: a prime, ideally over 100 times the number of targets.
    table_size: int = attrs.field(default=65537, validator=_table_size)


# ------------------------------------------------------------------ ring
@final
class RingBalancer:
    """A consistent hash ring: sorted points and the index of the target owning each."""

    __slots__ = ("_key", "_owners", "_points", "_targets")

    def __init__(self, group: sdk.Group, key: KeyReader, vnodes: int) -> None:
        pairs: list[tuple[int, int]] = []
        for t in group.targets:
            if t.weight > 0:  # weight 0: drained, never a candidate
                for i in range(max(1, round(vnodes * t.weight))):
                    pairs.append((stable_hash(f"{t.name}#{i}"), t.index))
        pairs.sort()  # equal points (equal names): the lower index first
        self._points = [p for p, _ in pairs]
        self._owners = array("I", [o for _, o in pairs])
        self._targets = group.targets
        self._key = key

    def pick(self, flow: sdk.Flow, candidates: Sequence[sdk.Target]) -> sdk.Target:
        key = self._key(flow)
        points = self._points
        n = len(points)
        if n == 0:
            return candidates[0]
        i = bisect_right(points, stable_hash(flow.client.address if key is None else key))
        if i == n:
            i = 0
        owners = self._owners
        if len(candidates) == len(self._targets):  # all of them: no walk needed
            return self._targets[owners[i]]
        for _ in range(n):
            target = find(candidates, owners[i])
            if target is not None:
                return target
            i += 1
            if i == n:
                i = 0
        return candidates[0]  # only when candidates are not in group order


# ---------------------------------------------------------------- maglev
def maglev_table(targets: Sequence[sdk.Target], size: int) -> array[int]:
    """Fill a Maglev lookup table of ``size`` (a prime) entries with target indices.

    Each target walks its own permutation of the entries, ``offset + j *
    skip (mod size)`` from hashes of its name, and claims the first free
    entry on its turn (Eisenbud et al., algorithm 1). Weighted: at each
    round a target earns ``weight / max weight`` turns and uses whole ones,
    so the heaviest target takes one entry per round and the shares follow
    the weights. ``targets`` must have positive weights.
    """
    if not targets or size < 2:
        raise ValueError("a maglev table needs targets and at least 2 entries")
    heaviest = max(t.weight for t in targets)
    share = [t.weight / heaviest for t in targets]
    where = [stable_hash(t.name, b"maglev-offset") % size for t in targets]
    skips = [stable_hash(t.name, b"maglev-skip") % (size - 1) + 1 for t in targets]
    owners = [t.index for t in targets]
    credit = [0.0] * len(targets)
    table = [-1] * size
    left = size
    while True:
        for k, owner in enumerate(owners):
            turns = credit[k] + share[k]
            c, skip = where[k], skips[k]
            while turns >= 1.0:
                turns -= 1.0
                while table[c] >= 0:  # the next entry of k's permutation still free
                    c += skip
                    if c >= size:
                        c -= size
                table[c] = owner
                left -= 1
                if not left:
                    return array("I", table)
            credit[k] = turns
            where[k] = c


@final
class MaglevBalancer:
    """A Maglev table over the group, and a few over subsets of it."""

    __slots__ = ("_key", "_primary", "_size", "_targets")

    def __init__(self, group: sdk.Group, key: KeyReader, size: int) -> None:
        weighted = [t for t in group.targets if t.weight > 0]  # drained ones are never candidates
        self._primary = maglev_table(weighted, size) if weighted else None
        self._targets = group.targets
        self._size = size
        self._key = key

    def pick(self, flow: sdk.Flow, candidates: Sequence[sdk.Target]) -> sdk.Target:
        key = self._key(flow)
        text = flow.client.address if key is None else key
        slot = stable_hash(text) % self._size
        table = self._primary
        if table is not None:
            index = table[slot]
            if len(candidates) == len(self._targets):  # all of them
                return self._targets[index]
            target = find(candidates, index)
            if target is not None:
                return target
            # Orphaned: walk the key's own slot sequence to a candidate.
            size = self._size
            stride = 1 + stable_hash(text, b"stride") % (size - 1) if size > 1 else 1
            for _ in range(MAGLEV_PROBES):
                slot = (slot + stride) % size
                target = find(candidates, table[slot])
                if target is not None:
                    return target
        return candidates[stable_hash(text, b"fallback") % len(candidates)]


class HashPlugin:
    """Load balancing: consistent hashing of the client IP, path, a header or a cookie."""

    config_class = HashConfig

    def __init__(self, config: HashConfig | None = None) -> None:
        self.config = config if config is not None else HashConfig()

    @sdk.hookimpl
    def trellis_balancer(self, group: sdk.Group) -> sdk.Balancer:
        c = self.config
        key = key_reader(c.key)
        if c.algorithm == "ring":
            return RingBalancer(group, key, c.vnodes)
        if c.table_size < len(group.targets):
            raise sdk.ConfigError(
                [
                    f"hash: table_size {c.table_size} is smaller than the group's"
                    f" {len(group.targets)} targets (use a prime over 100 times that)"
                ]
            )
        return MaglevBalancer(group, key, c.table_size)
