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

    ``users``/``items`` are int [E] dense indices. Each round drops, at once, every row whose user or item has
    < k rows among the rows still kept; the rounds work on the shrinking set of kept rows.
    """
    keep = np.ones(users.shape[0], dtype=bool)
    if k <= 1 or users.size == 0:
        return keep
    rows, u, i = np.arange(users.shape[0]), users, items
    num_users, num_items = int(users.max()) + 1, int(items.max()) + 1
    while True:
        ok = (np.bincount(u, minlength=num_users)[u] >= k) & (np.bincount(i, minlength=num_items)[i] >= k)
        if ok.all():
            break
        rows, u, i = rows[ok], u[ok], i[ok]
    keep[:] = False
    keep[rows] = True
    return keep


def dedup_mask(users: np.ndarray, items: np.ndarray, timestamps: np.ndarray | None) -> np.ndarray:
    """bool [E]: True for the earliest occurrence of each (user, item) pair (ties: source order).

    ``users``/``items`` are non-negative int [E]. One stable sort by pair finds the repeated pairs; only their
    rows are ordered by (pair, time, source position).
    """
    n = users.shape[0]
    keep = np.ones(n, dtype=bool)
    if n < 2:
        return keep
    pair = users.astype(np.int64) * (int(items.max()) + 1) + items
    by_pair = np.argsort(pair, kind="stable")
    pair = pair[by_pair]
    same = pair[1:] == pair[:-1]
    if not same.any():
        return keep
    repeated = np.zeros(n, dtype=bool)  # in pair order: the rows of pairs that occur more than once
    repeated[1:] |= same
    repeated[:-1] |= same
    rows, pair = by_pair[repeated], pair[repeated]  # rows ascending within each pair (stable sort)
    if timestamps is not None:
        order = np.lexsort((rows, timestamps[rows], pair))
        rows, pair = rows[order], pair[order]
    first = np.ones(rows.size, dtype=bool)
    first[1:] = pair[1:] != pair[:-1]
    keep[rows[~first]] = False
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
    return {"step": step, "users": _distinct(raw.users[keep]), "items": _distinct(raw.items[keep]),
            "interactions": int(keep.sum())}


def _distinct(ids: np.ndarray) -> int:
    """How many distinct values the dense non-negative int ``ids`` hold."""
    return int(np.count_nonzero(np.bincount(ids))) if ids.size else 0


def _present(ids: np.ndarray) -> np.ndarray:
    """The distinct values of dense non-negative int ``ids``, ascending (``np.unique`` without a sort)."""
    return np.flatnonzero(np.bincount(ids))


def _dense_rank(keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    """For each of ``values`` (drawn from ``keys``, which are unique), its position in ``keys``."""
    lookup = np.full(int(keys.max()) + 1, -1, dtype=np.int64)
    lookup[keys] = np.arange(keys.size)
    return lookup[values]


def _chronological(users: np.ndarray, time: np.ndarray) -> np.ndarray:
    """int [E]: row order by user, then time, ties by position (``np.lexsort((arange, time, users))``), as one
    stable sort of a combined key when it fits in int64."""
    if time.size == 0:
        return np.zeros(0, np.int64)
    low, span = int(time.min()), int(time.max()) - int(time.min()) + 1
    if (int(users.max()) + 1) * span >= 2 ** 62:
        return np.lexsort((np.arange(time.size), time, users))
    return np.argsort(users.astype(np.int64) * span + (time - low), kind="stable")


def _first_appearance(items: np.ndarray) -> np.ndarray:
    """The distinct values of dense non-negative int ``items`` in order of first appearance."""
    first = np.full(int(items.max()) + 1, items.size, dtype=np.int64)
    np.minimum.at(first, items, np.arange(items.size))
    present = np.flatnonzero(first < items.size)
    return present[np.argsort(first[present])]


def _build(raw: RawInteractions, rows: np.ndarray, remap: Remap, seed: int, record: dict[str, Any]) -> Dataset:
    users, items = raw.users[rows], raw.items[rows]
    user_keys = _present(users)  # source user indices are numbered by first appearance
    if remap == "random":
        rng = np.random.default_rng(seed)
        user_keys = rng.permutation(user_keys)
    new_user = _dense_rank(user_keys, users)
    time = raw.timestamps[rows] if raw.timestamps is not None else np.zeros(rows.size, np.int64)
    order = _chronological(new_user, time)  # per user chronological, ties by source order (rows ascend)
    rows, new_user, items = rows[order], new_user[order], items[order]
    item_keys = rng.permutation(_present(items)) if remap == "random" else _first_appearance(items)
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
