"""What the balancers share: a stable hash, finding a candidate by index, a weighted draw.

``candidates`` come in group order (the :class:`sdk.Balancer` contract), so
a target is found by its ``index`` with a binary search: no set is built
per pick. A helper that finds nothing, because a caller broke that order,
never returns a non-candidate; the balancer then falls back to another
candidate.

May import: stdlib, sdk.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from collections.abc import Callable, Sequence
from operator import attrgetter

import sdk

__all__ = ["find", "position_at_or_after", "stable_hash", "weighted_draw"]

_INDEX: Callable[[sdk.Target], int] = attrgetter("index")
_blake2b = hashlib.blake2b


def stable_hash(text: str, salt: bytes = b"") -> int:
    """A 64-bit BLAKE2b digest of ``text`` as an integer.

    The same in every process and on every run, unlike Python's per-process
    salted ``hash()``: a key must land on the same target after a restart
    and on every proxy of a fleet. ``salt`` (at most 16 bytes) derives
    independent hashes from one text.
    """
    data = text.encode("utf-8", "surrogateescape")
    if salt:
        digest = _blake2b(data, digest_size=8, person=salt).digest()
    else:  # the per-request case; an empty ``person`` is BLAKE2b's default anyway
        digest = _blake2b(data, digest_size=8).digest()
    return int.from_bytes(digest, "big")


def position_at_or_after(candidates: Sequence[sdk.Target], index: int) -> int:
    """The position in ``candidates`` of the first target whose index is ``>= index``.

    Wraps to ``0`` past the last one: this is how a cursor over the group's
    indices walks a subset of the targets without skipping or repeating.
    """
    i = bisect_left(candidates, index, key=_INDEX)
    return i if i < len(candidates) else 0


def find(candidates: Sequence[sdk.Target], index: int) -> sdk.Target | None:
    """The candidate whose group index is ``index``, or ``None`` when it is not one."""
    i = bisect_left(candidates, index, key=_INDEX)
    if i < len(candidates):
        target = candidates[i]
        if target.index == index:
            return target
    return None


def weighted_draw(random: Callable[[], float], candidates: Sequence[sdk.Target]) -> sdk.Target:
    """One candidate drawn with probability ``weight / total weight``.

    ``random`` returns floats in ``[0, 1)`` (``random.Random().random``).
    Equal weights make the draw uniform.
    """
    total = 0.0
    for t in candidates:
        total += t.weight
    x = random() * total
    for t in candidates:
        x -= t.weight
        if x < 0.0:
            return t
    return candidates[-1]  # x rounded to exactly the total
