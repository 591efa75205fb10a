"""What every reader shares: the parsed columns and the raw log built from them (ids numbered by first appearance,
vectorized), file access, and meta normalisation."""

from __future__ import annotations

import ast
import bz2
import dataclasses
import gzip
import html
import json
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jaxrec.data.dataset import Dataset
from jaxrec.errors import DataError


@dataclasses.dataclass
class Columns:
    """A source's interaction rows in source order, as parsed (E rows).

    Attributes:
      users, items: Arrow arrays [E] of the source's raw ids: strings, or a dictionary of them whose chunks share
        one dictionary (``columnar.unified``).
      timestamps: int64 [E] unix seconds, or None when the source has no time.
      ratings: float32 [E], or None.
    """

    users: pa.Array | pa.ChunkedArray
    items: pa.Array | pa.ChunkedArray
    timestamps: np.ndarray | None = None
    ratings: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.users)


@dataclasses.dataclass
class RawInteractions:
    """A source's interactions in source order, before processing (E rows).

    Attributes:
      users: int [E] (int32 or int64) index into ``user_raw_ids`` (numbered by first appearance in the source).
      items: int [E] index into ``item_raw_ids`` (likewise).
      user_raw_ids, item_raw_ids: the source's ids.
      timestamps: int64 [E] unix seconds, or None when the source has no time.
      ratings: float32 [E], or None.
      item_meta: raw item id -> canonical item fields (title, description, brand, categories,
        attributes, ...); items without metadata are absent (a dict, or an :class:`ItemMeta`).
      name: dataset name; info: provenance (format, files, ...).
    """

    users: np.ndarray
    items: np.ndarray
    user_raw_ids: list[str]
    item_raw_ids: list[str]
    timestamps: np.ndarray | None
    ratings: np.ndarray | None
    item_meta: Mapping[str, dict[str, Any]]
    name: str
    info: dict[str, Any]

    @property
    def num_interactions(self) -> int:
        return int(self.users.shape[0])

    @classmethod
    def from_columns(cls, columns: Columns, name: str, info: dict[str, Any],
                     item_meta: dict[str, dict[str, Any]] | None = None) -> "RawInteractions":
        """Number the raw ids of ``columns`` by first appearance (a hash table, no Python loop over rows)."""
        if len(columns) == 0:
            raise DataError(f"{info.get('input', name)}: no interactions found")
        users, user_raw_ids = encode_ids(columns.users)
        items, item_raw_ids = encode_ids(columns.items)
        return cls(users=users, items=items, user_raw_ids=user_raw_ids, item_raw_ids=item_raw_ids,
                   timestamps=columns.timestamps, ratings=columns.ratings, item_meta=item_meta or {}, name=name,
                   info=info)


def encode_ids(values: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, list[str]]:
    """(int32 [E] index of each value, the distinct values in order of first appearance): a hash table, or the
    dictionary a column was parsed into (its chunks sharing one dictionary, see ``columnar.unified``)."""
    encoded = values if pa.types.is_dictionary(values.type) else pc.dictionary_encode(values)
    chunks = encoded.chunks if isinstance(encoded, pa.ChunkedArray) else [encoded]
    if not chunks:
        return np.zeros(0, np.int32), []
    # dictionary_encode runs one hash table over all chunks: each chunk's dictionary extends the previous one's
    dictionary = chunks[-1].dictionary
    indices = np.concatenate([c.indices.to_numpy(zero_copy_only=False) for c in chunks]).astype(np.int32, copy=False)
    return indices, dictionary.to_pylist()


class InteractionLog:
    """Collects (user, item, timestamp, rating) rows of the line-by-line readers (the small formats, and the
    line loop that locates a bad row) as :class:`Columns`."""

    def __init__(self, with_timestamps: bool, with_ratings: bool):
        self._users: list[str] = []
        self._items: list[str] = []
        self._timestamps: list[int] | None = [] if with_timestamps else None
        self._ratings: list[float] | None = [] if with_ratings else None

    def add(self, user: str, item: str, timestamp: int | None = None, rating: float | None = None) -> None:
        self._users.append(user)
        self._items.append(item)
        if self._timestamps is not None:
            self._timestamps.append(timestamp)
        if self._ratings is not None:
            self._ratings.append(rating)

    def __len__(self) -> int:
        return len(self._users)

    def columns(self) -> Columns:
        return Columns(users=pa.array(self._users, pa.string()), items=pa.array(self._items, pa.string()),
                       timestamps=None if self._timestamps is None else np.asarray(self._timestamps, dtype=np.int64),
                       ratings=None if self._ratings is None else np.asarray(self._ratings, dtype=np.float32))

    def build(self, item_meta: dict[str, dict[str, Any]], name: str, info: dict[str, Any]) -> RawInteractions:
        return RawInteractions.from_columns(self.columns(), name, info, item_meta)


class ItemMeta(Mapping[str, dict[str, Any]]):
    """Raw item id -> canonical item fields, normalised (:func:`normalize_meta`) only when asked for: the source
    rows stay columns until processing knows which items it keeps.

    ``table`` holds one row per id of ``raw_ids`` with the source fields, in the order they are normalised.
    """

    def __init__(self, raw_ids: pa.Array, table: pa.Table, aliases: dict[str, str]):
        self._ids, self._table, self._aliases = raw_ids, table, aliases

    def records(self, raw_ids: Sequence[str]) -> list[dict[str, Any]]:
        """The canonical fields of each of ``raw_ids`` (``{}`` for an id without metadata), in one pass."""
        rows = pc.index_in(pa.array(raw_ids, pa.string()), value_set=self._ids)
        found = self._table.take(pc.drop_null(rows)).to_pylist()
        it = iter(found)
        return [{} if row is None else normalize_meta(next(it), self._aliases) for row in rows.to_pylist()]

    def __getitem__(self, raw_id: str) -> dict[str, Any]:
        if not pc.is_in(pa.array([raw_id], pa.string()), value_set=self._ids)[0].as_py():
            raise KeyError(raw_id)
        return self.records([raw_id])[0]

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids.to_pylist())

    def __len__(self) -> int:
        return len(self._ids)


def meta_records(item_meta: Mapping[str, dict[str, Any]], raw_ids: Sequence[str]) -> list[dict[str, Any]]:
    """Per raw id its canonical fields (``{}`` when it has none); an :class:`ItemMeta` normalises them in one pass."""
    if isinstance(item_meta, ItemMeta):
        return item_meta.records(raw_ids)
    return [item_meta.get(r, {}) for r in raw_ids]


def raw_from_dataset(ds: Dataset) -> RawInteractions:
    """View a canonical dataset as a raw log (to re-process it, e.g. k-core the synthetic data)."""
    users = np.repeat(np.arange(ds.num_users, dtype=np.int64), ds.lengths())
    meta = {it["raw_id"]: {k: v for k, v in it.items() if k != "raw_id"} for it in ds.items}
    return RawInteractions(users=users, items=ds.item_ids.astype(np.int64), user_raw_ids=list(ds.user_raw_ids),
                           item_raw_ids=[it["raw_id"] for it in ds.items], timestamps=ds.timestamps,
                           ratings=ds.ratings, item_meta=meta, name=ds.name, info=dict(ds.info))


def open_text(path: Path, encoding: str = "utf-8"):
    """Open a text file, transparently decompressing ``.gz``/``.bz2``."""
    if path.is_dir():
        raise DataError(f"{path} is a directory; expected a file (name the file itself, e.g. {path}/u.data)")
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding=encoding, newline="")
    if path.suffix == ".bz2":
        return bz2.open(path, "rt", encoding=encoding, newline="")
    return open(path, encoding=encoding, newline="")


def iter_lines(path: Path, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """(1-based line number, line without newline) for non-blank lines.

    ``encoding="auto"`` decodes each line as UTF-8, falling back to Latin-1 (old MovieLens files).
    """
    try:
        if encoding == "auto":
            with open_text(path, "latin-1") as f:
                for lineno, line in enumerate(f, 1):
                    line = line.rstrip("\r\n")
                    if line.strip():
                        yield lineno, _utf8_or_latin1(line)
            return
        with open_text(path, encoding) as f:
            for lineno, line in enumerate(f, 1):
                line = line.rstrip("\r\n")
                if line.strip():
                    yield lineno, line
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid {encoding} text ({e.reason} at byte {e.start})") from None
    except (OSError, EOFError) as e:  # e.g. a truncated or corrupt .gz
        raise DataError(f"{path}: cannot read ({e})") from None


def _utf8_or_latin1(line: str) -> str:
    """A line read as Latin-1, re-decoded as UTF-8 when its bytes are valid UTF-8."""
    try:
        return line.encode("latin-1").decode("utf-8")
    except UnicodeDecodeError:
        return line


def parse_record(path: Path, lineno: int, line: str) -> dict[str, Any]:
    """One JSON object per line; Python-literal dicts (Amazon 2014 meta) via ``ast.literal_eval``."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError:
        try:
            obj = ast.literal_eval(line)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise DataError(f"{path}:{lineno}: expected a JSON object (or Python dict literal), "
                            f"got {line[:60]!r}") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
    return obj


def load_json(path: Path) -> Any:
    """A whole JSON document; errors name the file and line."""
    with open_text(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None


def integer_id(path: Path, lineno: int, field: str, value: str) -> str:
    """``value`` unchanged if it is a non-negative integer token (formats whose ids are numbers: MovieLens,
    S3-Rec); otherwise DataError naming file and line (a stray token must not become a new id)."""
    if not value.isascii() or not value.isdigit():
        raise DataError(f"{path}:{lineno}: {field} must be an integer id, got {value!r}")
    return value


def to_int(path: Path, lineno: int, field: str, value: Any) -> int:
    """``value`` as an int (``"12"``, ``12``, ``"12.0"``); otherwise DataError naming file and line."""
    try:
        return int(value)
    except (TypeError, ValueError):
        try:
            number = float(value)
            if number.is_integer():
                return int(number)
        except (TypeError, ValueError, OverflowError):
            pass
    raise DataError(f"{path}:{lineno}: {field} must be an integer, got {value!r}")


def to_float(path: Path, lineno: int, field: str, value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DataError(f"{path}:{lineno}: {field} must be a number, got {value!r}") from None


def _text(value: Any) -> str | None:
    if isinstance(value, (list, tuple)):
        value = " ".join(str(v) for v in value if v)
    if value is None:
        return None
    text = " ".join(html.unescape(str(value)).split())
    return text or None


def _strings(value: Any) -> list[str]:
    """Flatten str / list / nested lists into unique non-empty strings, order kept."""
    out: list[str] = []

    def walk(v):
        if isinstance(v, (list, tuple)):
            for x in v:
                walk(x)
        elif v is not None:
            s = " ".join(html.unescape(str(v)).split())
            if s and s not in out:
                out.append(s)

    walk(value)
    return out


def normalize_meta(record: dict[str, Any], aliases: dict[str, str] | None = None) -> dict[str, Any]:
    """Canonical item fields from a source record.

    ``title``/``description``/``brand`` become single strings, ``categories``/``attributes`` lists of
    strings; ``aliases`` maps source field names onto them (e.g. ``{"category": "categories"}``).
    Empty fields are omitted; other fields are ignored.
    """
    aliases = aliases or {}
    out: dict[str, Any] = {}
    for key, value in record.items():
        field = aliases.get(key, key)
        if field in ("title", "description", "brand"):
            text = _text(value)
            if text and field not in out:
                out[field] = text
        elif field in ("categories", "attributes"):
            values = _strings(value)
            if values:
                out[field] = out.get(field, []) + [v for v in values if v not in out.get(field, [])]
    return out
