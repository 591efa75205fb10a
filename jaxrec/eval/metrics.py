"""Full-catalog ranking metrics: HR@K, NDCG@K, Recall@K, MRR — vectorized, from ranks or top-K lists.

Conventions (the same everywhere in jaxrec):

* Ranks are 1-based: the best item has rank 1.
* **Tie rule.** The rank of target ``t`` with score ``s_t`` is
  ``1 + #{i : s_i > s_t} + #{i : s_i == s_t and i < t}``, i.e. the position of ``t`` in a stable
  sort by ``(-score, item id)``: among equal scores the lower item id wins. This is deterministic
  and neither optimistic (target first among ties) nor pessimistic (target last among ties).
  Scores must be finite (NaN compares false and would make the rank optimistic).
* HR@K = 1[rank <= K]; NDCG@K = 1[rank <= K] / log2(rank + 1) (single relevant item, so the ideal
  DCG is 1); MRR = 1 / rank over the whole catalog (no cut-off).
* Recall@K with several relevant items per user = |top-K ∩ targets| / |targets|; with one target
  it equals HR@K.

Per-user values are averaged over users; all functions return plain Python floats so results can be
written as JSON directly.
"""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np

from jaxrec.errors import JaxrecError

DEFAULT_KS = (1, 5, 10, 20)


def ranks_from_topk(topk: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """1-based rank of each target inside its top-K list, or ``K + 1`` when it is absent.

    Args:
      topk: int [B, K] item ids, best first (entries < 0 are padding, e.g. an invalid generation).
      targets: int [B].

    Returns:
      int64 [B]; a value of ``K + 1`` means "not in the top K" and counts as a miss for every cut-off
      <= K.
    """
    topk, targets = np.asarray(topk), np.asarray(targets)
    _check_batch(topk, targets)
    hit = topk == targets[:, None]
    first = np.argmax(hit, axis=1)
    return np.where(hit.any(axis=1), first + 1, topk.shape[1] + 1).astype(np.int64)


def metrics_from_ranks(ranks: np.ndarray | jax.Array, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """``HR@K``, ``NDCG@K`` for each K, ``MRR`` and ``users`` from 1-based ranks [B]."""
    ranks = np.asarray(ranks, dtype=np.float64)
    if ranks.ndim != 1:
        raise JaxrecError(f"ranks must be a 1-D array, got shape {ranks.shape}")
    if ranks.size and ranks.min() < 1:
        raise JaxrecError(f"ranks are 1-based; got a rank of {ranks.min():g}")
    out: dict[str, float] = {}
    for k in ks:
        hit = ranks <= k
        out[f"HR@{k}"] = _mean(hit)
        out[f"NDCG@{k}"] = _mean(np.where(hit, 1.0 / np.log2(ranks + 1.0), 0.0))
    out["MRR"] = _mean(1.0 / ranks) if ranks.size else 0.0
    out["users"] = int(ranks.size)
    return out


def recall_at_k(topk: np.ndarray, targets: Sequence[Sequence[int]] | np.ndarray, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """``Recall@K`` for users with one or several relevant items.

    Args:
      topk: int [B, Kmax] item ids, best first; needs ``Kmax >= max(ks)``.
      targets: per user the relevant item ids (an int [B] array means one target each).

    Returns:
      ``{"Recall@K": mean over users of |topK ∩ targets| / |targets|}``.
    """
    topk = np.asarray(topk)
    if isinstance(targets, np.ndarray) and targets.ndim == 1:
        targets = targets[:, None]
    if topk.ndim != 2 or len(targets) != topk.shape[0]:
        raise JaxrecError(f"topk must be [B, K] with one target list per row; got {topk.shape} and {len(targets)} targets")
    if max(ks) > topk.shape[1]:
        raise JaxrecError(f"Recall@{max(ks)} needs top-{max(ks)} lists, got top-{topk.shape[1]}")
    width = max((len(t) for t in targets), default=1)
    padded = np.full((len(targets), max(width, 1)), -2, dtype=np.int64)  # -2 never matches a top-k entry
    for row, t in enumerate(targets):
        if len(t) == 0:
            raise JaxrecError(f"user row {row} has no relevant item; Recall is undefined")
        padded[row, : len(t)] = np.unique(np.asarray(t))  # duplicates would count twice
    sizes = (padded >= 0).sum(axis=1)
    match = topk[:, :, None] == padded[:, None, :]  # [B, Kmax, T]: position holds that target
    # each target counts once, even if a (degenerate) list repeats it
    return {f"Recall@{k}": _mean(match[:, :k].any(axis=1).sum(axis=1) / sizes) for k in ks}


def _check_batch(topk: np.ndarray, targets: np.ndarray) -> None:
    if topk.ndim != 2 or targets.ndim != 1 or topk.shape[0] != targets.shape[0]:
        raise JaxrecError(f"expected topk [B, K] and targets [B], got {topk.shape} and {targets.shape}")


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if np.size(values) else 0.0


def random_ranking_metrics(num_items: int, ks: list[int]) -> dict:
    """Expected HR/NDCG@K of a uniformly random ranking of ``num_items`` items."""
    gains = 1.0 / np.log2(np.arange(2, num_items + 2))
    return {**{f"HR@{k}": min(k, num_items) / num_items for k in ks},
            **{f"NDCG@{k}": float(gains[:k].sum() / num_items) for k in ks}}


def list_metrics(item_ids: np.ndarray, targets: np.ndarray, ks: Sequence[int] = DEFAULT_KS) -> dict:
    """HR/NDCG@K, ``Recall@K`` (K <= R) and ``MRR@R`` of ranked item lists [Q,R] for single-target
    users (e.g. beam search output; -1 = an empty slot). A target outside its list is a miss at every
    K, also for K > R, and counts 0 in the MRR (a list cannot know the full-catalog MRR)."""
    item_ids, targets = np.asarray(item_ids), np.asarray(targets)
    _check_batch(item_ids, targets)
    ranks = ranks_from_topk(item_ids, targets)
    width = item_ids.shape[1]
    out = metrics_from_ranks(np.where(ranks <= width, ranks, np.inf), ks)
    del out["MRR"]
    out[f"MRR@{width}"] = _mean(np.where(ranks <= width, 1.0 / ranks, 0.0))
    out.update(recall_at_k(item_ids, targets, [k for k in ks if k <= width]) if any(k <= width for k in ks) else {})
    return out
