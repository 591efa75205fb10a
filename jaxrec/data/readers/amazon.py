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
from typing import Any, Sequence

from jaxrec.data.readers.common import (InteractionLog, RawInteractions, iter_lines, normalize_meta, parse_record,
                                        to_float, to_int)
from jaxrec.errors import DataError

REVIEW_FIELDS = ("reviewerID", "asin", "overall", "unixReviewTime")
META_ALIASES = {"category": "categories", "feature": "attributes", "features": "attributes", "store": "brand"}
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
    log = _read_csv(path, csv_columns) if is_csv else read_reviews(path)
    meta = meta or default_meta(path)
    item_meta = read_meta(meta) if meta is not None else {}
    info = {"format": "amazon", "input": str(path), "meta": str(meta) if meta else None}
    return log.build(item_meta, name=category_name(path), info=info)


def read_reviews(path: Path, fields: tuple[str, str, str, str] = REVIEW_FIELDS, per_second: int = 1) -> InteractionLog:
    """Review JSON lines; ``fields`` names the user, item, rating and time keys of the release, whose
    timestamps count ``per_second`` ticks per second (2023: milliseconds)."""
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
    return log


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


def _read_csv(path: Path, csv_columns: str | Sequence[str] | None) -> InteractionLog:
    columns = tuple(c.strip() for c in csv_columns.split(",")) if isinstance(csv_columns, str) else csv_columns
    columns = tuple(columns or DEFAULT_COLUMNS)
    if not {"user", "item"} <= set(columns) or not set(columns) <= set(COLUMN_NAMES):
        raise DataError(f"csv columns must name user and item (and optionally rating, timestamp), got {columns}")
    positions = {c: i for i, c in enumerate(columns)}
    log = InteractionLog(with_timestamps="timestamp" in positions, with_ratings="rating" in positions)
    per_second = 1
    for lineno, line in iter_lines(path):
        try:
            row = next(csv.reader([line]))
        except csv.Error as e:
            raise DataError(f"{path}:{lineno}: malformed CSV ({e})") from None
        if lineno == 1 and csv_columns is None and (header := _column_positions(row)) is not None:
            positions = header
            log = InteractionLog(with_timestamps="timestamp" in positions, with_ratings="rating" in positions)
            # Amazon Reviews 2023's benchmark CSVs (user_id,parent_asin,rating,timestamp) count milliseconds
            per_second = 1000 if "parent_asin" in (h.strip().lower() for h in row) else 1
            continue
        if len(row) <= max(positions.values()):
            raise DataError(f"{path}:{lineno}: expected {len(positions)} comma-separated fields "
                            f"({','.join(sorted(positions, key=positions.get))}), got {line[:60]!r}")
        ts = to_int(path, lineno, "timestamp", row[positions["timestamp"]]) // per_second if "timestamp" in positions else None
        rating = to_float(path, lineno, "rating", row[positions["rating"]]) if "rating" in positions else None
        log.add(row[positions["user"]].strip(), row[positions["item"]].strip(), ts, rating)
    return log


def read_meta(path: Path) -> dict[str, dict[str, Any]]:
    """asin (2014/2018; ``parent_asin`` in 2023) -> canonical item fields (the first line of a repeated id wins)."""
    out: dict[str, dict[str, Any]] = {}
    for lineno, line in iter_lines(path):
        record = parse_record(path, lineno, line)
        key = "asin" if "asin" in record else "parent_asin"
        if key not in record:
            raise DataError(f"{path}:{lineno}: product is missing 'asin' (or 2023's 'parent_asin')")
        out.setdefault(str(record[key]), normalize_meta(record, META_ALIASES))
    return out
