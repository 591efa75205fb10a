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
import pyarrow as pa
import pyarrow.compute as pc

from jaxrec.data.dataset import TEXT_FIELDS, Dataset
from jaxrec.data.readers.common import RawInteractions, meta_records
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
    rows, u, i = None, users, items  # rows: the kept rows' positions, None while it is all of them
    num_users, num_items = int(users.max()) + 1, int(items.max()) + 1
    while u.size:
        user_rows, item_rows = np.bincount(u, minlength=num_users), np.bincount(i, minlength=num_items)
        few_users, few_items = (user_rows > 0) & (user_rows < k), (item_rows > 0) & (item_rows < k)
        if not (few_users.any() or few_items.any()):
            break
        ok = ~few_users[u]
        ok &= ~few_items[i]
        rows = np.flatnonzero(ok) if rows is None else rows[ok]
        u, i = u[ok], i[ok]
    if rows is not None:
        keep[:] = False
        keep[rows] = True
    return keep


def dedup_mask(users: np.ndarray, items: np.ndarray, timestamps: np.ndarray | None) -> np.ndarray:
    """bool [E]: True for the earliest occurrence of each (user, item) pair (ties: source order).

    ``users``/``items`` are non-negative int [E]. An in-place sort of the pair keys tells whether any pair repeats
    (MovieLens: none); only then are the rows ordered by pair (stable) and the repeated ones by (time, position).
    """
    n = users.shape[0]
    keep = np.ones(n, dtype=bool)
    if n < 2:
        return keep
    pair = _pair_keys(users, items)
    pair.sort()
    if not np.any(pair[1:] == pair[:-1]):
        return keep
    pair = _pair_keys(users, items)
    by_pair = np.argsort(pair, kind="stable")
    pair = pair[by_pair]
    same = pair[1:] == pair[:-1]
    repeated = np.zeros(n, dtype=bool)  # in pair order: the rows of pairs that occur more than once
    repeated[1:] |= same
    repeated[:-1] |= same
    rows, pair = by_pair[repeated], pair[repeated]  # rows ascending within each pair (stable sort)
    if timestamps is not None:
        order = np.lexsort((rows, timestamps[rows], pair))
        rows, pair = rows[order], pair[order]
    later = np.zeros(rows.size, dtype=bool)
    later[1:] = pair[1:] == pair[:-1]
    keep[rows[later]] = False
    return keep


def _pair_keys(users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """int64 [E]: one number per (user, item) pair."""
    pair = users.astype(np.int64)
    pair *= int(items.max()) + 1
    pair += items
    return pair


def process(raw: RawInteractions, *, kcore: int = 0, min_rating: float | None = None,
            drop_items_without_meta: bool = False, remap: Remap = "first", seed: int = 0) -> Dataset:
    """Apply the steps of the module docstring and build the canonical dataset."""
    if remap not in ("first", "random"):
        raise DataError(f"remap must be 'first' or 'random', got {remap!r}")
    if kcore < 0:
        raise DataError(f"kcore must be >= 0, got {kcore}")
    sel = _Selection(raw)
    steps: list[dict[str, Any]] = [sel.counts("read")]
    if min_rating is not None:
        if raw.ratings is None:
            raise DataError(f"--min-rating {min_rating} needs ratings, but the {raw.info.get('format')} "
                            f"source {raw.info.get('input')} has none")
        steps.append(sel.keep(raw.ratings[sel.take()] >= min_rating).counts(f"min_rating>={min_rating}"))
    if drop_items_without_meta:
        has_meta = np.array([any(m.get(f) for f in TEXT_FIELDS) for m in meta_records(raw.item_meta, raw.item_raw_ids)],
                            dtype=bool)
        steps.append(sel.keep(has_meta[sel.items]).counts("drop_items_without_meta"))
    ts = None if raw.timestamps is None else raw.timestamps[sel.take()]
    steps.append(sel.keep(dedup_mask(sel.users, sel.items, ts)).counts("dedup"))
    del ts
    if kcore > 1:
        steps.append(sel.keep(kcore_mask(sel.users, sel.items, kcore)).counts(f"{kcore}-core"))
    if sel.users.size == 0:
        raise DataError(f"no interactions left after processing {raw.info.get('input', raw.name)} "
                        f"(steps: {steps})")
    return _build(raw, sel, remap, seed, {
        "kcore": kcore, "min_rating": min_rating, "drop_items_without_meta": drop_items_without_meta,
        "remap": remap, "seed": seed, "steps": steps})


class _Selection:
    """The rows still kept (ascending, ``rows`` None while it is all of them) with their users and items."""

    def __init__(self, raw: RawInteractions):
        self.rows: np.ndarray | None = None
        self.users, self.items = raw.users, raw.items

    def take(self) -> slice | np.ndarray:
        """An index of the kept rows into the raw arrays."""
        return slice(None) if self.rows is None else self.rows

    def keep(self, mask: np.ndarray) -> "_Selection":
        """Keep the rows where ``mask`` (bool [kept rows]) is True."""
        if not mask.all():
            self.rows = np.flatnonzero(mask) if self.rows is None else self.rows[mask]
            self.users, self.items = self.users[mask], self.items[mask]
        return self

    def counts(self, step: str) -> dict[str, Any]:
        return {"step": step, "users": _distinct(self.users), "items": _distinct(self.items),
                "interactions": int(self.users.size)}


def _distinct(ids: np.ndarray) -> int:
    """How many distinct values the dense non-negative int ``ids`` hold."""
    return int(np.count_nonzero(np.bincount(ids))) if ids.size else 0


def _present(ids: np.ndarray) -> np.ndarray:
    """The distinct values of dense non-negative int ``ids``, ascending (``np.unique`` without a sort)."""
    return np.flatnonzero(np.bincount(ids))


def _dense_rank(keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    """int32: for each of ``values`` (drawn from ``keys``, which are unique), its position in ``keys``."""
    lookup = np.full(int(keys.max()) + 1, -1, dtype=np.int32)
    lookup[keys] = np.arange(keys.size, dtype=np.int32)
    return lookup[values]


def _chronological(users: np.ndarray, time: np.ndarray | None) -> np.ndarray:
    """int [E]: row order by user, then time, ties by position (``np.lexsort((arange, time, users))``), as one
    stable sort of a combined key when it fits in int64."""
    if time is None:
        return np.argsort(users, kind="stable")
    low, span = int(time.min()), int(time.max()) - int(time.min()) + 1
    if (int(users.max()) + 1) * span >= 2 ** 62:
        return np.lexsort((np.arange(time.size), time, users))
    key = users.astype(np.int64)
    key *= span
    key += time
    key -= low
    return np.argsort(key, kind="stable")


def _build(raw: RawInteractions, sel: _Selection, remap: Remap, seed: int, record: dict[str, Any]) -> Dataset:
    user_keys = _present(sel.users)  # source user indices are numbered by first appearance
    if remap == "random":
        rng = np.random.default_rng(seed)
        user_keys = rng.permutation(user_keys)
    if remap == "first" and user_keys.size == int(user_keys[-1]) + 1:
        new_user = sel.users  # every source user is kept: the numbering stays
    else:
        new_user = _dense_rank(user_keys, sel.users)
    counts = np.bincount(new_user, minlength=user_keys.size)
    time = None if raw.timestamps is None else raw.timestamps[sel.take()]
    order = _chronological(new_user, time)  # per user chronological, ties by source order (rows ascend)
    del time, new_user
    rows = order if sel.rows is None else sel.rows[order]
    items = sel.items[order]
    del order
    if remap == "random":
        item_keys = rng.permutation(_present(items))
        new_item = _dense_rank(item_keys, items)
    else:  # numbered by first appearance in the users' chronological sequences, in user-id order
        encoded = pc.dictionary_encode(pa.array(items))
        item_keys, new_item = encoded.dictionary.to_numpy(), encoded.indices.to_numpy()
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    raw_ids = [raw.item_raw_ids[key] for key in item_keys.tolist()]
    item_records = [{"raw_id": r, **m} for r, m in zip(raw_ids, meta_records(raw.item_meta, raw_ids))]
    info = dict(raw.info)
    info["processing"] = record
    return Dataset(
        items=item_records,
        user_raw_ids=[raw.user_raw_ids[k] for k in user_keys.tolist()],
        offsets=offsets,
        item_ids=new_item.astype(np.int32, copy=False),
        timestamps=None if raw.timestamps is None else raw.timestamps[rows],
        ratings=None if raw.ratings is None else raw.ratings[rows],
        name=raw.name,
        info=info,
    )
