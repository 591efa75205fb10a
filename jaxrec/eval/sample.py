"""Which evaluation users a recipe scores: all of them, or a seeded sample (``eval.users``)."""

from __future__ import annotations

import numpy as np


def eval_subset(total: int, limit: int | None, seed: int) -> np.ndarray:
    """int [n]: the sorted rows of ``total`` evaluation users to score: all of them, or a seeded
    sample of ``limit``."""
    if limit is None or limit >= total:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).choice(total, limit, replace=False))
