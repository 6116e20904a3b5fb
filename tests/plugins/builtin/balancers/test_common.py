"""The shared helpers: a stable hash, lookups by index, the weighted draw."""

from __future__ import annotations

import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

from plugins.builtin.balancers._common import (
    find,
    position_at_or_after,
    stable_hash,
    weighted_draw,
)
from tests.plugins.builtin.balancers.support import make_targets

ROOT = Path(__file__).resolve().parents[4]


def test_stable_hash_is_pinned_and_unsalted() -> None:
    # The value is BLAKE2b's, whatever the process: a restart or another proxy
    # of the fleet must send a key to the same target. A changed value here
    # means every hash-balanced client moves on upgrade.
    assert stable_hash("10.0.0.1") == 0x538EF646E14D03E6
    assert stable_hash("10.0.0.1", b"maglev-skip") != stable_hash("10.0.0.1")
    assert 0 <= stable_hash("") < 2**64
    code = (
        "from plugins.builtin.balancers._common import stable_hash;"
        "print(stable_hash('10.0.0.1'), hash('10.0.0.1'))"
    )
    outputs = [
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
            env={"PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)},
        ).stdout.split()
        for seed in ("1", "2")
    ]
    assert outputs[0][0] == outputs[1][0] == str(stable_hash("10.0.0.1"))
    assert outputs[0][1] != outputs[1][1]  # Python's own hash() is salted


def test_position_at_or_after_walks_a_subset_and_wraps() -> None:
    a, b, c, d = make_targets(1, 1, 1, 1)
    subset = (a, c, d)
    assert [position_at_or_after(subset, i) for i in range(6)] == [0, 1, 1, 2, 0, 0]
    assert position_at_or_after((b,), 0) == position_at_or_after((b,), 9) == 0


def test_find_by_index() -> None:
    a, _, c = make_targets(1, 1, 1)
    assert find((a, c), 2) is c
    assert find((a, c), 0) is a
    assert find((a, c), 1) is None
    assert find((a, c), 7) is None
    assert find((), 0) is None


def test_weighted_draw_shares() -> None:
    """5:3:2 over 10,000 draws with a fixed seed: each within 3 points of its share.

    (The binomial standard deviation is at most 0.5 points: 6 sd.)
    """
    targets = make_targets(5, 3, 2)
    rng = random.Random(7)
    counts = Counter(weighted_draw(rng.random, targets).name for _ in range(10_000))
    for name, share in (("a", 50), ("b", 30), ("c", 20)):
        assert abs(counts[name] / 100 - share) <= 3, counts


def test_weighted_draw_edges() -> None:
    a, b, c = make_targets(1, 2, 1)
    assert weighted_draw(lambda: 0.0, (a, b, c)) is a
    assert weighted_draw(lambda: 0.26, (a, b, c)) is b
    assert weighted_draw(lambda: 0.999_999, (a, b, c)) is c
    assert weighted_draw(lambda: 1.0, (a, b, c)) is c  # rounding up to the total
    assert weighted_draw(lambda: 0.5, (b,)) is b
