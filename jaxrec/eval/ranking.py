"""Evaluation driver: apply a jitted per-batch ranking function to all users in fixed-size batches."""

from __future__ import annotations

from typing import Callable, Mapping

import jax
import numpy as np


def batched_ranks(rank_batch: Callable[..., jax.Array], arrays: Mapping[str, np.ndarray], batch_size: int) -> np.ndarray:
    """Ranks for every row of ``arrays``, computed ``batch_size`` rows at a time.

    Every call of ``rank_batch(**batch)`` sees the same static shapes (one compilation): the last
    batch is padded by repeating row 0 and the padded rows are dropped from the result.

    Args:
      rank_batch: maps a dict of arrays with leading dim ``batch_size`` to int ranks [batch_size].
      arrays: name -> array with the same leading dim U.
      batch_size: rows per call.

    Returns:
      int64 [U] ranks.
    """
    sizes = {name: a.shape[0] for name, a in arrays.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"arrays must share their leading dimension, got {sizes}")
    total = next(iter(sizes.values()))
    out = []
    for start in range(0, total, batch_size):
        idx = np.arange(start, start + batch_size)
        idx[idx >= total] = 0
        ranks = rank_batch(**{name: a[idx] for name, a in arrays.items()})
        out.append(np.asarray(ranks)[: min(batch_size, total - start)])
    return np.concatenate(out).astype(np.int64) if out else np.zeros(0, np.int64)
