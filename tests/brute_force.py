"""Brute-force references for the recipe tests: ranks by a Python sort under the tie rule (higher score
first, ties to the lower item id) and HR/NDCG@K written from their definitions."""

import math
from collections.abc import Sequence


def rank_of(target: int, scores: Sequence[float], candidates: Sequence[int] | None = None) -> int:
    """1-based rank of ``target`` among ``candidates`` (default: every item) sorted by (-score, id)."""
    ids = range(len(scores)) if candidates is None else [int(c) for c in candidates]
    return sorted(ids, key=lambda i: (-scores[i], i)).index(int(target)) + 1


def occurrences(sequences, num_items: int) -> list[int]:
    """How often each item occurs in the training sequences (the popularity score)."""
    counts = [0] * num_items
    for seq in sequences:
        for item in seq:
            counts[int(item)] += 1
    return counts


def list_rank(items: Sequence[int], target: int) -> float:
    """1-based position of ``target`` in a ranked list; inf when it is not there (a miss at every K)."""
    items = [int(i) for i in items]
    return items.index(int(target)) + 1 if int(target) in items else math.inf


def hr_ndcg(ranks: Sequence[float], ks: Sequence[int], mrr: str | None = None) -> dict[str, float]:
    """HR@K = share of ranks <= K; NDCG@K = mean of 1/log2(rank + 1) over ranks <= K (0 otherwise);
    with ``mrr`` (its key, e.g. "MRR", or "MRR@R" for lists of R) also the mean of 1/rank (0 for a miss)."""
    out = {}
    for k in ks:
        out[f"HR@{k}"] = sum(r <= k for r in ranks) / len(ranks)
        out[f"NDCG@{k}"] = sum(1 / math.log2(r + 1) for r in ranks if r <= k) / len(ranks)
    if mrr:
        out[mrr] = sum(1 / r for r in ranks) / len(ranks)
    return out


def subset(metrics: dict, like: dict) -> dict:
    """``metrics`` restricted to the keys of ``like`` (to compare with ``pytest.approx(like)``)."""
    return {k: metrics[k] for k in like}
