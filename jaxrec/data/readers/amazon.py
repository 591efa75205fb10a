"""Amazon review data, 2014 (McAuley et al.) and 2018 (Ni et al.) releases.

Interactions: ``reviews_<Cat>_5.json(.gz)`` / ``<Cat>_5.json(.gz)`` JSON lines with ``reviewerID``,
``asin``, ``overall``, ``unixReviewTime``; or a ratings CSV ``ratings_<Cat>.csv`` (no header:
``user,item,rating,timestamp`` unless ``csv_columns`` says otherwise, e.g. the 2018 order
``item,user,rating,timestamp``; a header row naming the columns is recognised). A header with
``parent_asin`` marks an Amazon Reviews 2023 benchmark CSV, whose millisecond timestamps are stored in
seconds; that release's JSON lines are read by ``--format amazon2023``.

Metadata: ``meta_<Cat>.json(.gz)``, one product per line — strict JSON (2018, 2023) or a Python dict
literal (2014, parsed with ``ast.literal_eval``). Used fields: ``title``, ``description`` (string or
list), ``brand`` (2023: ``store``), ``categories`` (2014, list of category paths; 2023, one path) /
``category`` (2018), ``feature`` (2018; 2023: ``features``; kept as ``attributes``). Products are keyed by
``asin`` (2023: ``parent_asin``). Found next to the reviews file when ``meta`` is not given.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jaxrec.data.readers import columnar
from jaxrec.data.readers.common import (Columns, InteractionLog, ItemMeta, RawInteractions, encode_ids,
                                        iter_lines, normalize_meta, parse_record, to_float, to_int)
from jaxrec.errors import DataError

REVIEW_FIELDS = ("reviewerID", "asin", "overall", "unixReviewTime")
META_ALIASES = {"category": "categories", "feature": "attributes", "features": "attributes", "store": "brand"}
# the product fields read from strict-JSON meta (2018, 2023), in the order they are normalised
META_SCHEMA = pa.schema([("asin", pa.string()), ("parent_asin", pa.string()), ("title", pa.string()),
                         ("description", pa.list_(pa.string())), ("brand", pa.string()), ("store", pa.string()),
                         ("categories", pa.list_(pa.string())), ("category", pa.list_(pa.string())),
                         ("attributes", pa.list_(pa.string())), ("feature", pa.list_(pa.string())),
                         ("features", pa.list_(pa.string()))])
COLUMN_NAMES = {
    "user": ("user", "userid", "user_id", "reviewerid"),
    "item": ("item", "itemid", "item_id", "asin", "parent_asin"),
    "rating": ("rating", "overall", "score"),
    "timestamp": ("timestamp", "ts", "time", "unixreviewtime"),
}
DEFAULT_COLUMNS = ("user", "item", "rating", "timestamp")


def category_name(path: Path) -> str:
    """``reviews_Beauty_5.json.gz`` / ``Beauty_5.json`` / ``ratings_Beauty.csv`` -> ``Beauty``."""
    stem = path.name.split(".")[0]
    stem = re.sub(r"^(reviews|ratings)_", "", stem)
    return re.sub(r"_5$", "", stem)


def default_meta(path: Path) -> Path | None:
    name = category_name(path)
    for suffix in (".json.gz", ".json", ".jsonl.gz", ".jsonl"):
        candidate = path.with_name(f"meta_{name}{suffix}")
        if candidate.is_file():
            return candidate
    return None


def read(path: Path, meta: Path | None = None, csv_columns: str | Sequence[str] | None = None) -> RawInteractions:
    is_csv = ".csv" in path.suffixes
    columns = _read_csv(path, csv_columns) if is_csv else read_reviews(path)
    meta = meta or default_meta(path)
    info = {"format": "amazon", "input": str(path), "meta": str(meta) if meta else None}
    raw = RawInteractions.from_columns(columns, category_name(path), info)
    raw.item_meta = read_meta(meta, raw.item_raw_ids) if meta is not None else {}
    return raw


def read_reviews(path: Path, fields: tuple[str, str, str, str] = REVIEW_FIELDS, per_second: int = 1) -> Columns:
    """Review JSON lines; ``fields`` names the user, item, rating and time keys of the release, whose
    timestamps count ``per_second`` ticks per second (2023: milliseconds)."""
    return columnar.columnar_or_lines(lambda: _reviews_columnar(path, fields, per_second),
                                      lambda: _reviews_lines(path, fields, per_second))


def _reviews_columnar(path: Path, fields: tuple[str, str, str, str], per_second: int) -> Columns:
    user, item, rating, time = fields
    table = columnar.read_jsonl(path, pa.schema([(user, pa.string()), (item, pa.string()), (rating, pa.float64()),
                                                 (time, pa.int64())]))
    return Columns(users=columnar.no_nulls(table[user]), items=columnar.no_nulls(table[item]),
                   timestamps=columnar.ints(table[time]) // per_second, ratings=columnar.floats(table[rating]))


def _reviews_lines(path: Path, fields: tuple[str, str, str, str], per_second: int) -> Columns:
    user, item, rating, time = fields
    log = InteractionLog(with_timestamps=True, with_ratings=True)
    for lineno, line in iter_lines(path):
        record = parse_record(path, lineno, line)
        missing = [k for k in fields if k not in record]
        if missing:
            raise DataError(f"{path}:{lineno}: review is missing {', '.join(missing)} "
                            f"(expected {', '.join(fields)})")
        log.add(str(record[user]), str(record[item]), to_int(path, lineno, time, record[time]) // per_second,
                to_float(path, lineno, rating, record[rating]))
    return log.columns()


def _column_positions(header: list[str]) -> dict[str, int] | None:
    """Column positions from a header row, or None if the row is not a header."""
    lowered = [h.strip().lower() for h in header]
    positions = {}
    for column, names in COLUMN_NAMES.items():
        for i, h in enumerate(lowered):
            if h in names:
                positions[column] = i
                break
    return positions if {"user", "item"} <= positions.keys() else None


def _read_csv(path: Path, csv_columns: str | Sequence[str] | None) -> Columns:
    columns = tuple(c.strip() for c in csv_columns.split(",")) if isinstance(csv_columns, str) else csv_columns
    columns = tuple(columns or DEFAULT_COLUMNS)
    if not {"user", "item"} <= set(columns) or not set(columns) <= set(COLUMN_NAMES):
        raise DataError(f"csv columns must name user and item (and optionally rating, timestamp), got {columns}")
    positions = {c: i for i, c in enumerate(columns)}
    width, header, per_second = len(columns), False, 1
    first = next(iter_lines(path), None)
    if first is not None:
        row = next(csv.reader([first[1]]), [])
        width = max(width, len(row))
        if first[0] == 1 and csv_columns is None and (found := _column_positions(row)) is not None:
            positions, header = found, True
            # Amazon Reviews 2023's benchmark CSVs (user_id,parent_asin,rating,timestamp) count milliseconds
            per_second = 1000 if "parent_asin" in (h.strip().lower() for h in row) else 1
    return columnar.columnar_or_lines(lambda: _csv_columnar(path, positions, width, header, per_second),
                                      lambda: _csv_lines(path, positions, header, per_second))


def _csv_columnar(path: Path, positions: dict[str, int], width: int, header: bool, per_second: int) -> Columns:
    names = [f"c{i}" for i in range(width)]
    types = {names[positions["user"]]: columnar.IDS, names[positions["item"]]: columnar.IDS}
    table = columnar.read_csv(path, names, types=types, skip_rows=int(header),
                              include=[names[i] for i in positions.values()])
    column = {c: table[names[i]] for c, i in positions.items()}
    return Columns(users=columnar.stripped(column["user"]), items=columnar.stripped(column["item"]),
                   timestamps=columnar.ints(column["timestamp"]) // per_second if "timestamp" in column else None,
                   ratings=columnar.floats(column["rating"]) if "rating" in column else None)


def _csv_lines(path: Path, positions: dict[str, int], header: bool, per_second: int) -> Columns:
    log = InteractionLog(with_timestamps="timestamp" in positions, with_ratings="rating" in positions)
    for lineno, line in iter_lines(path):
        try:
            row = next(csv.reader([line]))
        except csv.Error as e:
            raise DataError(f"{path}:{lineno}: malformed CSV ({e})") from None
        if header and lineno == 1:
            continue
        if len(row) <= max(positions.values()):
            raise DataError(f"{path}:{lineno}: expected {len(positions)} comma-separated fields "
                            f"({','.join(sorted(positions, key=positions.get))}), got {line[:60]!r}")
        ts = to_int(path, lineno, "timestamp", row[positions["timestamp"]]) // per_second if "timestamp" in positions else None
        rating = to_float(path, lineno, "rating", row[positions["rating"]]) if "rating" in positions else None
        log.add(row[positions["user"]].strip(), row[positions["item"]].strip(), ts, rating)
    return log.columns()


def read_meta(path: Path, keep: Sequence[str] | None = None) -> Mapping[str, dict[str, Any]]:
    """asin (2014/2018; ``parent_asin`` in 2023) -> canonical item fields (the first line of a repeated id wins),
    for the products in ``keep`` (all when None). Strict JSON lines are read columnar; 2014's Python literals and
    lines of other shapes line by line."""
    return columnar.columnar_or_lines(lambda: _meta_columnar(path, keep), lambda: _meta_lines(path, keep))


def _meta_columnar(path: Path, keep: Sequence[str] | None) -> ItemMeta:
    table = columnar.read_jsonl(path, META_SCHEMA)
    key = pc.coalesce(table["asin"], table["parent_asin"])
    if key.null_count:
        raise columnar.NotColumnar  # a product without an id: the line loop names its line
    wanted = np.ones(len(key), dtype=bool) if keep is None else pc.is_in(
        key, value_set=pa.array(keep, pa.string())).to_numpy(zero_copy_only=False)
    rows = np.flatnonzero(wanted)
    _, first = np.unique(encode_ids(key.take(rows))[0], return_index=True)
    rows = np.sort(rows[first])  # the first line of each kept id
    fields = [f for f in META_SCHEMA.names if f not in ("asin", "parent_asin")]
    return ItemMeta(key.take(rows).combine_chunks(), table.select(fields).take(rows), META_ALIASES)


def _meta_lines(path: Path, keep: Sequence[str] | None) -> dict[str, dict[str, Any]]:
    wanted = None if keep is None else set(keep)
    out: dict[str, dict[str, Any]] = {}
    for lineno, line in iter_lines(path):
        record = parse_record(path, lineno, line)
        key = "asin" if "asin" in record else "parent_asin"
        if key not in record:
            raise DataError(f"{path}:{lineno}: product is missing 'asin' (or 2023's 'parent_asin')")
        raw_id = str(record[key])
        if (wanted is None or raw_id in wanted) and raw_id not in out:
            out[raw_id] = normalize_meta(record, META_ALIASES)
    return out
