"""Seeded sampling shared by the task builders: negatives and fixed-size subsets."""

from __future__ import annotations

import zlib
from typing import Sequence

import numpy as np

from jaxrec.errors import DataError


def task_rng(seed: int, task: str) -> np.random.Generator:
    """A generator for one task, independent of which other tasks are switched on."""
    return np.random.default_rng([seed, zlib.crc32(task.encode())])


def sample_negatives(rng: np.random.Generator, num_items: int, exclude: Sequence[int] | np.ndarray, n: int) -> np.ndarray:
    """int32 [n]: distinct item ids in ``[0, num_items)``, none of them in ``exclude``.

    Rejection sampling from the whole catalog (cheap when ``exclude`` is small against the catalog);
    the complement is enumerated only when rejection would be slow. Deterministic given ``rng``.

    Raises:
      DataError: fewer than ``n`` items remain after excluding.
    """
    seen = set(np.asarray(exclude, dtype=np.int64).reshape(-1).tolist())
    available = num_items - len(seen)
    if n > available:
        raise DataError(f"cannot sample {n} negatives: only {available} of {num_items} items are not excluded")
    if n == 0:
        return np.zeros(0, np.int32)
    if 4 * (len(seen) + n) > num_items:
        allowed = np.setdiff1d(np.arange(num_items), np.fromiter(seen, np.int64, len(seen)), assume_unique=True)
        return rng.choice(allowed, size=n, replace=False).astype(np.int32)
    chosen: list[int] = []
    while len(chosen) < n:
        for item in rng.integers(0, num_items, size=2 * n).tolist():
            if item not in seen:
                seen.add(item)
                chosen.append(item)
                if len(chosen) == n:
                    break
    return np.asarray(chosen, np.int32)


def subsample(rng: np.random.Generator, total: int, size: int | None) -> np.ndarray:
    """int64 [min(size, total)]: a seeded subset of ``range(total)`` in ascending order.

    ``size`` None or negative keeps everything.
    """
    if size is None or size < 0 or size >= total:
        return np.arange(total)
    return np.sort(rng.choice(total, size=size, replace=False))
