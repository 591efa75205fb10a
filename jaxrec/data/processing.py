"""Raw interactions → canonical :class:`~jaxrec.data.dataset.Dataset`.

Steps, in this order (each recorded in ``info["processing"]["steps"]`` with the counts it left):

1. ``min_rating``: keep interactions rated >= the threshold (needs ratings).
2. ``drop_items_without_meta``: drop items with no text field (title, description, brand,
   categories, attributes).
3. dedup: a repeated (user, item) pair keeps only its earliest interaction (by timestamp, ties and
   untimed sources by source order).
4. ``kcore``: repeatedly drop users and items with fewer than k interactions until none is left
   (a fixed point: every remaining user and item has >= k interactions).
5. id remapping: ``first`` numbers users by first appearance in the source and items by first
   appearance when reading users' chronological sequences in user-id order; ``random`` numbers both
   by a permutation seeded by ``seed`` (avoids leaking item order into ids).
6. each user's interactions are sorted by timestamp, stably (ties keep source order).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from jaxrec.data.dataset import TEXT_FIELDS, Dataset
from jaxrec.data.readers.common import RawInteractions
from jaxrec.errors import DataError

Remap = Literal["first", "random"]


def kcore_mask(users: np.ndarray, items: np.ndarray, k: int) -> np.ndarray:
    """bool [E]: the interactions of the k-core (fixed point of dropping users/items with < k rows).

    ``users``/``items`` are int [E] dense indices.
    """
    keep = np.ones(users.shape[0], dtype=bool)
    if k <= 1:
        return keep
    while True:
        user_counts = np.bincount(users[keep], minlength=int(users.max(initial=-1)) + 1)
        item_counts = np.bincount(items[keep], minlength=int(items.max(initial=-1)) + 1)
        new_keep = keep & (user_counts[users] >= k) & (item_counts[items] >= k)
        if np.array_equal(new_keep, keep):
            return keep
        keep = new_keep


def dedup_mask(users: np.ndarray, items: np.ndarray, timestamps: np.ndarray | None) -> np.ndarray:
    """bool [E]: True for the earliest occurrence of each (user, item) pair (ties: source order)."""
    n = users.shape[0]
    order = np.arange(n)
    time = timestamps if timestamps is not None else order
    by_pair = np.lexsort((order, time, items, users))
    pairs = np.stack([users[by_pair], items[by_pair]], axis=1)
    first = np.ones(n, dtype=bool)
    first[1:] = np.any(pairs[1:] != pairs[:-1], axis=1)
    keep = np.zeros(n, dtype=bool)
    keep[by_pair[first]] = True
    return keep


def process(raw: RawInteractions, *, kcore: int = 0, min_rating: float | None = None,
            drop_items_without_meta: bool = False, remap: Remap = "first", seed: int = 0) -> Dataset:
    """Apply the steps of the module docstring and build the canonical dataset."""
    if remap not in ("first", "random"):
        raise DataError(f"remap must be 'first' or 'random', got {remap!r}")
    if kcore < 0:
        raise DataError(f"kcore must be >= 0, got {kcore}")
    keep = np.ones(raw.num_interactions, dtype=bool)
    steps: list[dict[str, Any]] = [_counts("read", raw, keep)]
    if min_rating is not None:
        if raw.ratings is None:
            raise DataError(f"--min-rating {min_rating} needs ratings, but the {raw.info.get('format')} "
                            f"source {raw.info.get('input')} has none")
        keep &= raw.ratings >= min_rating
        steps.append(_counts(f"min_rating>={min_rating}", raw, keep))
    if drop_items_without_meta:
        has_meta = np.array([any(raw.item_meta.get(r, {}).get(f) for f in TEXT_FIELDS) for r in raw.item_raw_ids],
                            dtype=bool)
        keep &= has_meta[raw.items]
        steps.append(_counts("drop_items_without_meta", raw, keep))
    rows = np.flatnonzero(keep)
    ts = None if raw.timestamps is None else raw.timestamps[rows]
    rows = rows[dedup_mask(raw.users[rows], raw.items[rows], ts)]
    steps.append(_counts("dedup", raw, _mask(rows, raw.num_interactions)))
    if kcore > 1:
        rows = rows[kcore_mask(raw.users[rows], raw.items[rows], kcore)]
        steps.append(_counts(f"{kcore}-core", raw, _mask(rows, raw.num_interactions)))
    if rows.size == 0:
        raise DataError(f"no interactions left after processing {raw.info.get('input', raw.name)} "
                        f"(steps: {steps})")
    return _build(raw, rows, remap, seed, {
        "kcore": kcore, "min_rating": min_rating, "drop_items_without_meta": drop_items_without_meta,
        "remap": remap, "seed": seed, "steps": steps})


def _mask(rows: np.ndarray, n: int) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    mask[rows] = True
    return mask


def _counts(step: str, raw: RawInteractions, keep: np.ndarray) -> dict[str, Any]:
    return {"step": step, "users": int(np.unique(raw.users[keep]).size),
            "items": int(np.unique(raw.items[keep]).size), "interactions": int(keep.sum())}


def _dense_rank(keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    """For each of ``values`` (drawn from ``keys``, which are unique), its position in ``keys``."""
    lookup = np.full(int(keys.max()) + 1, -1, dtype=np.int64)
    lookup[keys] = np.arange(keys.size)
    return lookup[values]


def _build(raw: RawInteractions, rows: np.ndarray, remap: Remap, seed: int, record: dict[str, Any]) -> Dataset:
    users, items = raw.users[rows], raw.items[rows]
    user_keys = np.unique(users)  # source user indices are numbered by first appearance
    if remap == "random":
        rng = np.random.default_rng(seed)
        user_keys = rng.permutation(user_keys)
    new_user = _dense_rank(user_keys, users)
    time = raw.timestamps[rows] if raw.timestamps is not None else np.zeros(rows.size, np.int64)
    order = np.lexsort((rows, time, new_user))  # per user chronological, ties by source order
    rows, new_user, items = rows[order], new_user[order], items[order]
    if remap == "random":
        item_keys = rng.permutation(np.unique(items))
    else:
        uniq, first_pos = np.unique(items, return_index=True)
        item_keys = uniq[np.argsort(first_pos)]
    new_item = _dense_rank(item_keys, items)
    counts = np.bincount(new_user, minlength=user_keys.size)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    item_records = []
    for key in item_keys.tolist():
        raw_id = raw.item_raw_ids[key]
        item_records.append({"raw_id": raw_id, **raw.item_meta.get(raw_id, {})})
    info = dict(raw.info)
    info["processing"] = record
    return Dataset(
        items=item_records,
        user_raw_ids=[raw.user_raw_ids[k] for k in user_keys.tolist()],
        offsets=offsets,
        item_ids=new_item.astype(np.int32),
        timestamps=None if raw.timestamps is None else raw.timestamps[rows],
        ratings=None if raw.ratings is None else raw.ratings[rows],
        name=raw.name,
        info=info,
    )
