"""Amazon Reviews 2023 (Hou et al., 2024; McAuley Lab), one category's JSON lines.

Interactions: ``<Category>.jsonl(.gz)``, one review per line with ``user_id``, ``parent_asin`` (the product; ``asin``
is a variant of it), ``rating`` and ``timestamp`` in **milliseconds**, stored here in seconds (floor). The other
review fields (title, text, images, ...) are not used.

Metadata: ``meta_<Category>.jsonl(.gz)``, one product per line, keyed by ``parent_asin``. Used fields: ``title``,
``description`` (list of paragraphs), ``store`` (kept as ``brand``), ``categories`` (one path, a list of
strings), ``features`` (kept as ``attributes``), read by :func:`jaxrec.data.readers.amazon.read_meta` (only the
products that have a review). Found next
to the reviews file when ``meta`` is not given.
"""

from __future__ import annotations

import re
from pathlib import Path

from jaxrec.data.readers.amazon import read_meta, read_reviews
from jaxrec.data.readers.common import RawInteractions

REVIEW_FIELDS = ("user_id", "parent_asin", "rating", "timestamp")


def category_name(path: Path) -> str:
    """``All_Beauty.jsonl.gz`` -> ``All_Beauty``."""
    return re.sub(r"^meta_", "", path.name.split(".")[0])


def default_meta(path: Path) -> Path | None:
    for suffix in (".jsonl.gz", ".jsonl", ".json.gz", ".json"):
        candidate = path.with_name(f"meta_{category_name(path)}{suffix}")
        if candidate.is_file():
            return candidate
    return None


def read(path: Path, meta: Path | None = None) -> RawInteractions:
    columns = read_reviews(path, REVIEW_FIELDS, per_second=1000)
    meta = meta or default_meta(path)
    info = {"format": "amazon2023", "input": str(path), "meta": str(meta) if meta else None,
            "timestamps": "seconds (the source's milliseconds // 1000)"}
    raw = RawInteractions.from_columns(columns, category_name(path), info)
    raw.item_meta = read_meta(meta, raw.item_raw_ids) if meta is not None else {}
    return raw
