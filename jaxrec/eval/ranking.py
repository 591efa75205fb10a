"""Ranks under the one tie rule of :mod:`jaxrec.eval.metrics` (ties go to the lower item id).

* :func:`ranks_from_scores` — target ranks from a score per item [B,N] (or per candidate, ``ids``);
* :func:`ranks_among` — the same for candidate sets, checking every target is a candidate;
* :func:`static_ranks` — every item's rank under one user-independent score [N] (popularity);
* :func:`item_counts` — the popularity score: training occurrences per item;
* :func:`batched_ranks` — a jitted per-batch ranker applied to all users in fixed-size batches.

Embedding scores over a whole catalog rank through the tiled kernel :func:`jaxrec.ground.rank.target_ranks`
(same rule, no [B,N] matrix).
"""

from __future__ import annotations

from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxrec.errors import DataError


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


def ranks_from_scores(scores: jax.Array, targets: jax.Array, exclude: jax.Array | None = None,
                      ids: jax.Array | None = None) -> jax.Array:
    """Rank of each target among all N items (or the candidates ``ids``) under the canonical tie rule
    of :mod:`jaxrec.eval.metrics`, in O(B·N) without a sort.

    Args:
      scores: float [B, N], one score per catalog item (higher is better).
      targets: int [B], the relevant item of each row.
      ids: optional int [B, N] item id of each score column (a candidate set; every target must be
        among its row's ids); default: column i is item i.
      exclude: optional int [B, L] item ids that are removed from the ranking of that row (e.g. the
        user's history); negative entries are padding. The target itself is never removed, even if
        it appears in ``exclude``.

    Returns:
      int32 [B] ranks in ``1..N`` (``1..N - #excluded`` with ``exclude``).
    """
    num_items = scores.shape[-1]
    targets = targets.astype(jnp.int32)
    if ids is None:
        item_ids, column = jnp.arange(num_items, dtype=jnp.int32)[None, :], targets
    else:
        item_ids = ids.astype(jnp.int32)
        column = jnp.argmax(item_ids == targets[:, None], axis=-1)
    target_scores = jnp.take_along_axis(scores, column[:, None], axis=-1)
    ahead = (scores > target_scores) | ((scores == target_scores) & (item_ids < targets[:, None]))
    if exclude is not None:
        rows = jnp.arange(scores.shape[0])[:, None]
        cols = jnp.where(exclude >= 0, exclude, num_items)  # padding -> out of range -> dropped
        keep = jnp.ones(scores.shape, dtype=bool).at[rows, cols].set(False, mode="drop")
        ahead = ahead & keep  # the target is never "ahead" of itself, so it is unaffected
    return 1 + jnp.sum(ahead, axis=-1, dtype=jnp.int32)


def ranks_among(scores: np.ndarray, candidates: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """int [P]: 1-based rank of each target among its candidates (scores and item ids [P,C])."""
    if not (np.asarray(candidates) == np.asarray(targets)[:, None]).any(axis=1).all():
        raise DataError("a ranking target is not among its candidates")
    return np.asarray(ranks_from_scores(jnp.asarray(scores), jnp.asarray(targets), ids=jnp.asarray(candidates)))


def static_ranks(scores: np.ndarray) -> np.ndarray:
    """int64 [N]: 1-based rank of every item under one score per item [N] (sorted by (-score, id))."""
    order = np.lexsort((np.arange(scores.size), -scores))
    ranks = np.empty(scores.size, dtype=np.int64)
    ranks[order] = np.arange(1, scores.size + 1)
    return ranks


def item_counts(train: list[np.ndarray], num_items: int) -> np.ndarray:
    """int64 [N]: how often each item occurs in the training sequences (the popularity score)."""
    flat = np.concatenate(train) if train else np.zeros(0, np.int32)
    return np.bincount(flat, minlength=num_items).astype(np.int64)
