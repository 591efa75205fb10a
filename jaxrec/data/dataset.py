"""The canonical dataset every method reads: items with text, users, chronological sequences.

On disk (a directory of Parquet and .npy files, readable with pyarrow / pandas and numpy; see docs/DATA_FORMAT.md)::

    meta.json        {"format": "jaxrec-dataset", "version": 2, "name", "users", "items",
                      "interactions", "has_timestamps", "has_ratings", "info": {...provenance...}}
    items.parquet    one row per item, row i = item id i: raw_id (string), title, description, brand
                     (string or null), categories, attributes (list<string> or null), lcrec_index
                     (list<string>, LC-Rec data only), any other field the items carry
    users.parquet    one row per user, row u = user id u: raw_id (string)
    offsets.npy      int64 [U+1]   user u's interactions are rows offsets[u]:offsets[u+1]
    item_ids.npy     int32 [E]     item id of each interaction, chronological within a user
    timestamps.npy   int64 [E]     unix seconds (only when known)
    ratings.npy      float32 [E]   explicit rating (only when known)

The ``.npy`` arrays are loaded memory-mapped (read-only). Version 1 directories (``items.jsonl`` /
``users.jsonl``, one JSON object per line) still load. Item and user ids are dense 0-based integers;
``raw_id`` maps them back to the source.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jaxrec.atomic import atomic_dir
from jaxrec.errors import DataError
from jaxrec.remote import is_remote, local_input

FORMAT = "jaxrec-dataset"
VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1: items.jsonl / users.jsonl
TEXT_FIELDS = ("title", "description", "brand", "categories", "attributes")
# the Parquet type of each known item field; other fields get the type Arrow infers from their values
ITEM_TYPES = {"raw_id": pa.string(), "title": pa.string(), "description": pa.string(), "brand": pa.string(),
              "categories": pa.list_(pa.string()), "attributes": pa.list_(pa.string()),
              "lcrec_index": pa.list_(pa.string())}


@dataclasses.dataclass
class Dataset:
    """Users' chronological item sequences plus item metadata.

    Attributes:
      items: per item id, a dict with ``raw_id`` and optional text fields (see :data:`TEXT_FIELDS`).
      user_raw_ids: per user id, the id in the source data.
      offsets: int64 [U+1], CSR row pointers into ``item_ids``.
      item_ids: int32 [E], interactions grouped by user, each group in time order.
      timestamps: int64 [E] or None.
      ratings: float32 [E] or None.
      name: a short dataset name (used in prompts and logs).
      info: provenance and processing record (source format, k-core, splits, ...).
    """

    items: list[dict[str, Any]]
    user_raw_ids: list[str]
    offsets: np.ndarray
    item_ids: np.ndarray
    timestamps: np.ndarray | None = None
    ratings: np.ndarray | None = None
    name: str = "dataset"
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self.offsets = np.asarray(self.offsets, dtype=np.int64)
        self.item_ids = np.asarray(self.item_ids, dtype=np.int32)
        if self.timestamps is not None:
            self.timestamps = np.asarray(self.timestamps, dtype=np.int64)
        if self.ratings is not None:
            self.ratings = np.asarray(self.ratings, dtype=np.float32)
        self.validate()

    # ----------------------------------------------------------------- sizes
    @property
    def num_users(self) -> int:
        return len(self.user_raw_ids)

    @property
    def num_items(self) -> int:
        return len(self.items)

    @property
    def num_interactions(self) -> int:
        return int(self.item_ids.shape[0])

    # ----------------------------------------------------------------- access
    def sequence(self, user: int) -> np.ndarray:
        """int32 [n_u]: the user's items in time order."""
        return self.item_ids[self.offsets[user] : self.offsets[user + 1]]

    def sequences(self) -> list[np.ndarray]:
        """All users' sequences (views into ``item_ids``)."""
        return np.split(self.item_ids, self.offsets[1:-1])

    def user_timestamps(self, user: int) -> np.ndarray | None:
        if self.timestamps is None:
            return None
        return self.timestamps[self.offsets[user] : self.offsets[user + 1]]

    def user_ratings(self, user: int) -> np.ndarray | None:
        if self.ratings is None:
            return None
        return self.ratings[self.offsets[user] : self.offsets[user + 1]]

    def lengths(self) -> np.ndarray:
        """int64 [U]: sequence length per user."""
        return np.diff(self.offsets)

    def titles(self) -> list[str]:
        """Per item its title, or ``"item <raw_id>"`` when the source has none."""
        return [it.get("title") or f"item {it['raw_id']}" for it in self.items]

    def iter_users(self) -> Iterator[tuple[int, np.ndarray]]:
        for u in range(self.num_users):
            yield u, self.sequence(u)

    # ----------------------------------------------------------------- checks
    def validate(self) -> None:
        """Raise DataError if arrays are inconsistent."""
        off = self.offsets
        if off.ndim != 1 or off.shape[0] != self.num_users + 1:
            raise DataError(f"offsets must have {self.num_users + 1} entries, got {off.shape}")
        if off[0] != 0 or off[-1] != self.item_ids.shape[0] or np.any(np.diff(off) < 0):
            raise DataError("offsets must start at 0, be non-decreasing and end at the number of interactions")
        if self.item_ids.size and (self.item_ids.min() < 0 or self.item_ids.max() >= self.num_items):
            raise DataError(f"item ids must lie in [0, {self.num_items}), got range "
                            f"[{self.item_ids.min()}, {self.item_ids.max()}]")
        for name in ("timestamps", "ratings"):
            arr = getattr(self, name)
            if arr is not None and arr.shape != self.item_ids.shape:
                raise DataError(f"{name} must have one entry per interaction ({self.item_ids.shape[0]}), got {arr.shape}")

    def stats(self) -> dict[str, Any]:
        """Summary numbers, as printed by ``jaxrec data stats``."""
        lengths = self.lengths()
        n_u, n_i, n_e = self.num_users, self.num_items, self.num_interactions
        with_title = sum(1 for it in self.items if it.get("title"))
        return {
            "name": self.name,
            "users": n_u,
            "items": n_i,
            "interactions": n_e,
            "density": n_e / max(1, n_u * n_i),
            "avg_seq_len": float(lengths.mean()) if n_u else 0.0,
            "min_seq_len": int(lengths.min()) if n_u else 0,
            "max_seq_len": int(lengths.max()) if n_u else 0,
            "items_with_title": with_title,
            "has_timestamps": self.timestamps is not None,
            "has_ratings": self.ratings is not None,
        }

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_sequences(
        cls,
        sequences: list[list[int]] | list[np.ndarray],
        items: list[dict[str, Any]],
        user_raw_ids: list[str] | None = None,
        timestamps: list[list[int]] | None = None,
        ratings: list[list[float]] | None = None,
        name: str = "dataset",
        info: dict[str, Any] | None = None,
    ) -> "Dataset":
        """Build from per-user lists (already in time order, ids already dense)."""
        lengths = np.array([len(s) for s in sequences], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        flat = np.concatenate([np.asarray(s, dtype=np.int32) for s in sequences]) if sequences else np.zeros(0, np.int32)
        ts = np.concatenate([np.asarray(t, dtype=np.int64) for t in timestamps]) if timestamps else None
        rt = np.concatenate([np.asarray(r, dtype=np.float32) for r in ratings]) if ratings else None
        if user_raw_ids is None:
            user_raw_ids = [str(u) for u in range(len(sequences))]
        return cls(items=items, user_raw_ids=list(user_raw_ids), offsets=offsets, item_ids=flat,
                   timestamps=ts, ratings=rt, name=name, info=dict(info or {}))

    # ----------------------------------------------------------------- io
    def save(self, path: str | Path, overwrite: bool = False) -> str | Path:
        """Write the dataset directory atomically (a temp dir renamed on success; a bucket URL uploaded with
        meta.json last); an existing ``path`` is replaced only if it is a dataset directory, empty, or
        ``overwrite``."""
        path = str(path) if is_remote(path) else Path(path)
        with atomic_dir(path, is_dataset_dir, "jaxrec dataset directory", overwrite) as tmp:
            meta = {
                "format": FORMAT,
                "version": VERSION,
                "name": self.name,
                "users": self.num_users,
                "items": self.num_items,
                "interactions": self.num_interactions,
                "has_timestamps": self.timestamps is not None,
                "has_ratings": self.ratings is not None,
                "info": self.info,
            }
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
            _write_parquet(_items_table(self.items), tmp / "items.parquet")
            _write_parquet(pa.table({"raw_id": pa.array(self.user_raw_ids, pa.string())}), tmp / "users.parquet")
            _write_npy(self.offsets, tmp / "offsets.npy")
            _write_npy(self.item_ids, tmp / "item_ids.npy")
            if self.timestamps is not None:
                _write_npy(self.timestamps, tmp / "timestamps.npy")
            if self.ratings is not None:
                _write_npy(self.ratings, tmp / "ratings.npy")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Dataset":
        """Read a dataset directory written by :meth:`save` (or its copy in a bucket, ``gs://...``); errors
        name the file and line."""
        path = local_input(path)
        meta_path = path / "meta.json"
        if not meta_path.is_file():
            raise DataError(f"{path}: not a jaxrec dataset directory (no meta.json); "
                            f"create one with `jaxrec data prepare`")
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as e:
            raise DataError(f"{meta_path}: invalid JSON: {e}") from None
        if meta.get("format") != FORMAT:
            raise DataError(f"{meta_path}: 'format' must be {FORMAT!r}, got {meta.get('format')!r}")
        if meta.get("version") not in READABLE_VERSIONS:
            raise DataError(f"{meta_path}: unsupported version {meta.get('version')!r} (expected one of "
                            f"{', '.join(map(str, READABLE_VERSIONS))})")
        if meta["version"] == 1:
            items = _read_jsonl(path / "items.jsonl")
            for i, it in enumerate(items):
                if "raw_id" not in it:
                    raise DataError(f"{path / 'items.jsonl'}:{i + 1}: missing 'raw_id'")
            users = [u.get("raw_id", str(i)) for i, u in enumerate(_read_jsonl(path / "users.jsonl"))]
        else:
            items = _rows(_read_parquet(path / "items.parquet"))
            users = _read_parquet(path / "users.parquet")["raw_id"].to_pylist()

        def arr(name: str, required: bool = True):
            f = path / name
            if not f.is_file():
                if required:
                    raise DataError(f"{path}: missing {name}")
                return None
            try:
                return np.load(f, mmap_mode="r", allow_pickle=False)
            except (ValueError, EOFError, OSError) as e:  # truncated or not an .npy file
                raise DataError(f"{f}: not a readable .npy array ({e}); the dataset is damaged: prepare it "
                                f"again with `jaxrec data prepare`") from None

        ds = cls(items=items, user_raw_ids=users, offsets=arr("offsets.npy"), item_ids=arr("item_ids.npy"),
                 timestamps=arr("timestamps.npy", meta.get("has_timestamps", False)),
                 ratings=arr("ratings.npy", meta.get("has_ratings", False)),
                 name=meta.get("name", path.name), info=meta.get("info", {}))
        for key, value in (("users", ds.num_users), ("items", ds.num_items), ("interactions", ds.num_interactions)):
            if meta.get(key) != value:
                raise DataError(f"{meta_path}: '{key}' says {meta.get(key)} but the files hold {value}")
        return ds


def is_dataset_dir(path: Path) -> bool:
    """Whether ``path`` holds a jaxrec dataset (its meta.json names the format)."""
    try:
        return json.loads((path / "meta.json").read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise DataError(f"missing file {path}")
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            out.append(obj)
    return out


def _items_table(items: list[dict[str, Any]]) -> pa.Table:
    """The items as columns: known fields typed by :data:`ITEM_TYPES`, an absent field null."""
    missing = next((i for i, it in enumerate(items) if it.get("raw_id") is None), None)
    if missing is not None:
        raise DataError(f"item {missing}: missing 'raw_id'")
    names = list(dict.fromkeys(["raw_id", *(k for it in items for k in it)]))
    columns = {}
    for name in names:
        values = [it.get(name) for it in items]
        try:
            columns[name] = pa.array(values, ITEM_TYPES.get(name))
        except (pa.ArrowException, TypeError) as e:
            raise DataError(f"item field {name!r}: cannot be stored as one Parquet column ({e})") from None
    return pa.table(columns)


def _write_npy(array: np.ndarray, path: Path) -> None:
    """``np.save``, its bytes written by Python: a failing write (a full disk) raises the system's own error."""
    array = np.ascontiguousarray(array)
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, np.lib.format.header_data_from_array_1_0(array))
        f.write(memoryview(array).cast("B"))


def _write_parquet(table: pa.Table, path: Path) -> None:
    """Encoded in memory, written by Python: a failing write (a full disk) raises the system's own error ("File
    too large", "No space left on device")."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    with open(path, "wb") as f:
        f.write(memoryview(sink.getvalue()))


def _read_parquet(path: Path) -> pa.Table:
    if not path.is_file():
        raise DataError(f"missing file {path}")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: not a readable Parquet file ({e}); the dataset is damaged: prepare it again "
                        f"with `jaxrec data prepare`") from None
    if "raw_id" not in table.column_names or table["raw_id"].null_count:
        raise DataError(f"{path}: every row needs a 'raw_id'")
    return table


def _rows(table: pa.Table) -> list[dict[str, Any]]:
    """Per row a dict of its non-null fields (an absent field is stored as null)."""
    return [{k: v for k, v in row.items() if v is not None} for row in table.to_pylist()]
