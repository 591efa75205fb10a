"""BIGRec processed data: a folder with ``id2name.txt`` and ``train``/``valid``/``test`` files.

* ``id2name.txt``: one item per line, ``id<TAB>name`` or ``name<TAB>id`` (the integer column is
  detected over the whole file).
* ``{train,valid,test}.csv``: BIGRec's example tables with columns ``user_id``,
  ``history_<x>_id`` (a Python list literal, parsed with ``ast.literal_eval``), optional
  ``history_rating``, the target ``<x>_id``, optional ``rating`` and ``timestamp``.
* or ``{train,valid,test}.json``: a JSON list (or JSON lines) of either records with the same
  columns, or BIGRec's prompts ``{"instruction", "input", "output"}`` whose quoted titles are mapped
  back to ids through ``id2name.txt``.

Examples with a ``user_id`` are merged back into per-user sequences: each example's history plus
target is a window of the user's sequence; windows are taken in time order and appended where they
stop overlapping the sequence built so far. Items known only from a history get the timestamp of
that example's target. Prompt records carry no user: each becomes its own sequence (history then
target), named ``<split>:<k>``. ``info["bigrec"]`` records the example counts of each split file.
"""

from __future__ import annotations

import ast
import csv
import dataclasses
import json
from pathlib import Path
from typing import Any

from jaxrec.data.readers.common import InteractionLog, RawInteractions, iter_lines, open_text, to_float, to_int
from jaxrec.errors import DataError

SPLITS = ("train", "valid", "test")


@dataclasses.dataclass
class Example:
    user: str
    history: list[str]
    history_ratings: list[float] | None
    target: str
    rating: float | None
    timestamp: int | None


def read(path: Path, meta: Path | None = None) -> RawInteractions:
    folder = path if path.is_dir() else path.parent
    names_file = meta or folder / "id2name.txt"
    names = read_id2name(names_file)
    examples: list[Example] = []
    counts: dict[str, int] = {}
    for split in SPLITS:
        file = next((folder / f"{split}{ext}" for ext in (".csv", ".json", ".jsonl") if (folder / f"{split}{ext}").is_file()),
                    None)
        if file is None:
            continue
        found = _read_csv(file) if file.suffix == ".csv" else _read_json(file, names, split)
        counts[split] = len(found)
        examples.extend(found)
    if not examples:
        raise DataError(f"{folder}: no BIGRec split files found (expected train/valid/test .csv or .json)")
    has_ts = all(e.timestamp is not None for e in examples)
    has_ratings = all(e.rating is not None for e in examples)
    log = InteractionLog(with_timestamps=has_ts, with_ratings=has_ratings)
    for user, rows in _sequences(examples, has_ts):
        for item, ts, rating in rows:
            log.add(user, item, ts if has_ts else None, rating if has_ratings else None)
    item_meta = {item_id: {"title": name} for item_id, name in names.items()}
    info = {"format": "bigrec", "input": str(folder), "meta": str(names_file), "bigrec": {"examples": counts}}
    return log.build(item_meta, name=folder.name, info=info)


def read_id2name(path: Path) -> dict[str, str]:
    """Item id -> name from ``id2name.txt`` (either column order)."""
    rows = []
    for lineno, line in iter_lines(path):
        fields = line.split("\t")
        if len(fields) != 2:
            raise DataError(f"{path}:{lineno}: expected 'id<TAB>name' or 'name<TAB>id', got {line[:60]!r}")
        rows.append((lineno, fields[0].strip(), fields[1].strip()))
    if not rows:
        raise DataError(f"{path}: empty")
    id_first = all(a.lstrip("-").isdigit() for _, a, _ in rows)
    if not id_first:
        bad = next(((n, b) for n, _, b in rows if not b.lstrip("-").isdigit()), None)
        if bad is not None:
            raise DataError(f"{path}:{bad[0]}: expected an integer item id in the first or the second column "
                            f"on every line, got {bad[1]!r}")
    return {(a if id_first else b): (b if id_first else a) for _, a, b in rows}


def _literal_list(path: Path, lineno: int, column: str, value: Any) -> list:
    if isinstance(value, list):
        return value
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError, TypeError):
        parsed = None
    if not isinstance(parsed, (list, tuple)):
        raise DataError(f"{path}:{lineno}: column {column} must be a list like [1, 2, 3], got {str(value)[:60]!r}")
    return list(parsed)


def _example(path: Path, lineno: int, record: dict[str, Any], columns: dict[str, str]) -> Example:
    def get(key):
        return record.get(columns[key]) if key in columns else None

    history = [str(to_int(path, lineno, columns["history"], h))
               for h in _literal_list(path, lineno, columns["history"], get("history"))]
    history_ratings = None
    if "history_rating" in columns:
        history_ratings = [to_float(path, lineno, columns["history_rating"], r)
                           for r in _literal_list(path, lineno, columns["history_rating"], get("history_rating"))]
        if len(history_ratings) != len(history):
            raise DataError(f"{path}:{lineno}: history_rating has {len(history_ratings)} entries but the history "
                            f"has {len(history)}")
    return Example(
        user=str(get("user")),
        history=history,
        history_ratings=history_ratings,
        target=str(to_int(path, lineno, columns["target"], get("target"))),
        rating=to_float(path, lineno, "rating", get("rating")) if "rating" in columns else None,
        timestamp=to_int(path, lineno, "timestamp", get("timestamp")) if "timestamp" in columns else None,
    )


def _columns(path: Path, names: list[str]) -> dict[str, str]:
    """Map roles (user, history, history_rating, target, rating, timestamp) to column names."""
    columns: dict[str, str] = {}
    for name in names:
        if name == "user_id":
            columns["user"] = name
        elif name.startswith("history_") and name.endswith("_id"):
            columns.setdefault("history", name)
        elif name == "history_rating":
            columns["history_rating"] = name
        elif name.endswith("_id"):
            columns.setdefault("target", name)
        elif name in ("rating", "timestamp"):
            columns[name] = name
    missing = [r for r in ("user", "history", "target") if r not in columns]
    if missing:
        raise DataError(f"{path}: missing columns for {', '.join(missing)}: expected user_id, history_<x>_id and "
                        f"<x>_id (got {', '.join(names)})")
    return columns


def _read_csv(path: Path) -> list[Example]:
    with open_text(path) as f:
        reader = csv.DictReader(f)
        columns = _columns(path, reader.fieldnames or [])
        out = []
        try:
            for record in reader:
                if None in record or any(v is None for v in record.values()):
                    raise DataError(f"{path}:{reader.line_num}: expected {len(reader.fieldnames)} columns")
                out.append(_example(path, reader.line_num, record, columns))
        except csv.Error as e:
            raise DataError(f"{path}:{reader.line_num}: malformed CSV ({e})") from None
    return out


def _json_records(path: Path) -> list[tuple[int, Any]]:
    """(line number, record): a JSON list (positions = line of the list's start) or JSON lines."""
    with open_text(path) as f:
        text = f.read()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        if path.suffix == ".jsonl" or e.msg == "Extra data":
            out = []
            for lineno, line in iter_lines(path):
                try:
                    out.append((lineno, json.loads(line)))
                except json.JSONDecodeError as err:
                    raise DataError(f"{path}:{lineno}: invalid JSON ({err.msg})") from None
            return out
        raise DataError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of examples, got {type(data).__name__}")
    return [(k + 1, record) for k, record in enumerate(data)]


def _read_json(path: Path, names: dict[str, str], split: str) -> list[Example]:
    by_title: dict[str, str] = {}
    for item_id, name in names.items():
        by_title.setdefault(name, item_id)
    out = []
    columns = None
    for k, record in _json_records(path):
        if not isinstance(record, dict):
            raise DataError(f"{path}: example {k}: expected a JSON object")
        if "output" in record and "input" in record:
            history = [_title_id(path, k, t, by_title) for t in _quoted_titles(record["input"])]
            target = _title_id(path, k, _strip_quotes(record["output"]), by_title)
            out.append(Example(user=f"{split}:{k - 1}", history=history, history_ratings=None, target=target,
                               rating=None, timestamp=None))
            continue
        columns = columns or _columns(path, list(record))
        out.append(_example(path, k, record, columns))
    return out


def _strip_quotes(text: str) -> str:
    return text.strip().strip('"').strip()


def _quoted_titles(text: str) -> list[str]:
    """Titles listed as ``"A", "B", "C"`` inside a BIGRec prompt input."""
    start, end = text.find('"'), text.rfind('"')
    if start < 0 or end <= start:
        return []
    return [t for t in text[start + 1:end].split('", "')]


def _title_id(path: Path, k: int, title: str, by_title: dict[str, str]) -> str:
    if title not in by_title:
        raise DataError(f"{path}: example {k}: title {title!r} is not in id2name.txt")
    return by_title[title]


def _sequences(examples: list[Example], has_ts: bool):
    """(user, [(item, timestamp, rating), ...]) per user, rebuilt from overlapping example windows."""
    by_user: dict[str, list[Example]] = {}
    for e in examples:
        by_user.setdefault(e.user, []).append(e)
    for user, rows in by_user.items():
        if has_ts:
            rows = sorted(rows, key=lambda e: e.timestamp)
        sequence: list[tuple[str, int | None, float | None]] = []
        for e in rows:
            ratings = e.history_ratings or [e.rating] * len(e.history)
            window = [(h, e.timestamp, r) for h, r in zip(e.history, ratings)] + [(e.target, e.timestamp, e.rating)]
            items = [w[0] for w in window]
            built = [s[0] for s in sequence]
            overlap = next((n for n in range(min(len(built), len(items)), 0, -1) if built[-n:] == items[:n]), 0)
            sequence.extend(window[overlap:])
        yield user, sequence
