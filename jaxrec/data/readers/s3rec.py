"""S3-Rec text format: ``Beauty.txt`` with one user per line, ``user item item ...`` in time order,
plus optional ``Beauty_item2attributes.json`` ``{item: [attribute id, ...]}``.

There are no timestamps: line order is user order and, within a line, time order.
"""

from __future__ import annotations

from pathlib import Path

from jaxrec.data.readers.common import InteractionLog, RawInteractions, integer_id, iter_lines, load_json
from jaxrec.errors import DataError


def default_meta(path: Path) -> Path | None:
    """``<stem>_item2attributes.json`` next to the sequence file, when present."""
    candidate = path.with_name(f"{path.stem}_item2attributes.json")
    return candidate if candidate.is_file() else None


def read(path: Path, meta: Path | None = None) -> RawInteractions:
    log = InteractionLog(with_timestamps=False, with_ratings=False)
    seen_users: dict[str, int] = {}
    for lineno, line in iter_lines(path):
        fields = line.split()
        if len(fields) < 2:
            raise DataError(f"{path}:{lineno}: expected 'user item [item ...]', got {line[:60]!r}")
        user = integer_id(path, lineno, "user id", fields[0])
        if user in seen_users:
            raise DataError(f"{path}:{lineno}: user {user!r} already listed on line {seen_users[user]}")
        seen_users[user] = lineno
        for item in fields[1:]:
            log.add(user, integer_id(path, lineno, "item id", item))
    meta = meta or default_meta(path)
    item_meta = {}
    if meta is not None:
        table = load_json(meta)
        if not isinstance(table, dict):
            raise DataError(f"{meta}: expected a JSON object {{item: [attribute, ...]}}, got {type(table).__name__}")
        for item, attributes in table.items():
            if not isinstance(attributes, list):
                raise DataError(f"{meta}: item {item!r}: expected a list of attributes, got {attributes!r}")
            if attributes:
                item_meta[str(item)] = {"attributes": [str(a) for a in attributes]}
    info = {"format": "s3rec", "input": str(path), "meta": str(meta) if meta else None}
    return log.build(item_meta, name=path.stem, info=info)
