"""LC-Rec processed data: ``<D>.inter.json`` ``{user: [item, ...]}`` (chronological), optional
``<D>.item.json`` ``{item: {title, description, brand, categories, ...}}`` and optional
``<D>.index.json`` ``{item: ["<a_1>", "<b_7>", ...]}`` (the item's semantic-ID tokens).

The index is kept per item as the field ``lcrec_index`` (so it follows id remapping and filtering),
and its source file is recorded in ``info["lcrec_index"]``. There are no timestamps: user order is
the file's key order, and each list is in time order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jaxrec.data.readers.common import InteractionLog, RawInteractions, load_json, normalize_meta
from jaxrec.errors import DataError

INDEX_FIELD = "lcrec_index"
META_ALIASES = {"category": "categories"}


def _inter_file(path: Path) -> Path:
    if path.is_dir():
        found = sorted(path.glob("*.inter.json"))
        if len(found) != 1:
            raise DataError(f"{path}: expected exactly one *.inter.json, found {[f.name for f in found]}")
        return found[0]
    if not path.name.endswith(".inter.json"):
        raise DataError(f"{path}: expected an LC-Rec '<dataset>.inter.json' file")
    return path


def read(path: Path, meta: Path | None = None) -> RawInteractions:
    inter = _inter_file(path)
    prefix = inter.name[: -len(".inter.json")]
    table = load_json(inter)
    if not isinstance(table, dict):
        raise DataError(f"{inter}: expected a JSON object {{user: [item, ...]}}, got {type(table).__name__}")
    log = InteractionLog(with_timestamps=False, with_ratings=False)
    for user, items in table.items():
        if not isinstance(items, list) or not all(isinstance(i, (int, str)) for i in items):
            raise DataError(f"{inter}: user {user!r}: expected a list of item ids, got {str(items)[:60]}")
        for item in items:
            log.add(str(user), str(item))
    item_file = meta or inter.with_name(f"{prefix}.item.json")
    index_file = inter.with_name(f"{prefix}.index.json")
    item_meta: dict[str, dict[str, Any]] = {}
    if item_file.is_file():
        records = load_json(item_file)
        if not isinstance(records, dict):
            raise DataError(f"{item_file}: expected a JSON object {{item: {{title, ...}}}}")
        for item, record in records.items():
            if not isinstance(record, dict):
                raise DataError(f"{item_file}: item {item!r}: expected an object of text fields, got {str(record)[:60]}")
            item_meta[str(item)] = normalize_meta(record, META_ALIASES)
    info: dict[str, Any] = {"format": "lcrec", "input": str(inter),
                            "meta": str(item_file) if item_file.is_file() else None}
    if index_file.is_file():
        index = load_json(index_file)
        if not isinstance(index, dict):
            raise DataError(f"{index_file}: expected a JSON object {{item: [token, ...]}}")
        levels = set()
        for item, tokens in index.items():
            if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
                raise DataError(f"{index_file}: item {item!r}: expected a list of token strings, got {str(tokens)[:60]}")
            item_meta.setdefault(str(item), {})[INDEX_FIELD] = tokens
            levels.add(len(tokens))
        info["lcrec_index"] = {"source": str(index_file), "field": INDEX_FIELD, "levels": sorted(levels)}
    return log.build(item_meta, name=prefix, info=info)
