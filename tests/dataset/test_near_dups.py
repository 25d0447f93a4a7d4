"""The near-duplicate image search finds exactly the pairs an all-pairs comparison finds."""

from __future__ import annotations

import numpy as np
import pytest

from bracli.dataset import dataset_wide
from bracli.dataset.dataset_wide import _all_pairs, close_pairs


def _hashes(seed: int, count: int, clustered: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    high = rng.integers(0, 2**63, count, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, count, dtype=np.uint64)
    low = rng.integers(0, 2**63, count, dtype=np.uint64) * np.uint64(2)
    if clustered:  # copies of a few hashes with 0-12 bits flipped, as burst photos give
        base = rng.integers(0, 8, count)
        high, low = high[base].copy(), low[base].copy()
    for i in range(count):
        for bit in rng.choice(128, rng.integers(0, 13), replace=False).tolist():
            if bit < 64:
                high[i] ^= np.uint64(1 << bit)
            else:
                low[i] ^= np.uint64(1 << (bit - 64))
    return high, low


def _as_set(pairs) -> set[tuple[int, int, int]]:
    return set(zip(*(p.tolist() for p in pairs), strict=True))


@pytest.mark.parametrize("clustered", [False, True])
@pytest.mark.parametrize("threshold", [0, 1, 4, 8, 12, 15, 16, 40])
def test_same_pairs_as_all_pairs(threshold, clustered, monkeypatch):
    high, low = _hashes(threshold, 300, clustered)
    high[7], low[7] = high[3], low[3]  # one exact copy
    expected = _as_set(_all_pairs(high, low, threshold))
    assert _as_set(close_pairs(high, low, threshold)) == expected
    assert all(later > earlier and distance <= threshold for later, earlier, distance in expected)
    monkeypatch.setattr(dataset_wide, "CANDIDATE_BUDGET", 10)  # too alike to prune: the blocks take over
    assert _as_set(close_pairs(high, low, threshold)) == expected
