"""Seeded sampling shared by the task builders: negatives and fixed-size subsets."""

from __future__ import annotations

import functools
import zlib
from typing import AbstractSet, Callable

import numpy as np

from jaxrec.errors import DataError


def task_rng(seed: int, task: str) -> np.random.Generator:
    """A generator for one task, independent of which other tasks are switched on."""
    return np.random.default_rng([seed, zlib.crc32(task.encode())])


def sample_negatives(rng: np.random.Generator, num_items: int, exclude: AbstractSet[int], n: int) -> np.ndarray:
    """int32 [n]: distinct item ids in ``[0, num_items)``, none of them in ``exclude``.

    ``exclude`` holds valid item ids (build it once per user, e.g. with :func:`exclusion_sets`).
    Rejection sampling from the whole catalog; the complement is enumerated only when most of the
    catalog is excluded. Deterministic given ``rng``.

    Raises:
      DataError: fewer than ``n`` items remain after excluding.
    """
    available = num_items - len(exclude)
    if n > available:
        raise DataError(f"cannot sample {n} negatives: only {available} of {num_items} items are not excluded")
    if n == 0:
        return np.zeros(0, np.int32)
    if available < 4 * n or 10 * available < num_items:
        allowed = np.setdiff1d(np.arange(num_items), np.fromiter(exclude, np.int64, len(exclude)))
        return rng.choice(allowed, size=n, replace=False).astype(np.int32)
    chosen: dict[int, None] = {}  # insertion-ordered set
    while len(chosen) < n:
        for item in rng.integers(0, num_items, size=2 * n).tolist():
            if item not in exclude and item not in chosen:
                chosen[item] = None
                if len(chosen) == n:
                    break
    return np.fromiter(chosen, np.int32, n)


def exclusion_sets(items_of: Callable[[int], np.ndarray]) -> Callable[[int], frozenset[int]]:
    """Per user (cached) the set of ``items_of(user)``, for :func:`sample_negatives`."""
    return functools.lru_cache(maxsize=None)(lambda user: frozenset(items_of(user).tolist()))


def with_item(exclude: frozenset[int], item: int) -> frozenset[int]:
    """``exclude`` plus ``item`` (no copy when it is already there)."""
    return exclude if item in exclude else exclude | {item}


def subsample(rng: np.random.Generator, total: int, size: int | None) -> np.ndarray:
    """int64 [min(size, total)]: a seeded subset of ``range(total)`` in ascending order.

    ``size`` None or negative keeps everything.
    """
    if size is None or size < 0 or size >= total:
        return np.arange(total)
    return np.sort(rng.choice(total, size=size, replace=False))
