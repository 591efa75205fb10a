"""How an item is written in text: its title, its description, and its key (the id text a model
reads and generates: seeded random integers or semantic-id tokens such as ``<a_12><b_7><c_3><d_0>``).
"""

from __future__ import annotations

from typing import Literal, Mapping, Sequence

import numpy as np

from jaxrec.data.dataset import Dataset
from jaxrec.errors import DataError

KeyMode = Literal["random", "semantic"]


def titles(ds: Dataset) -> list[str]:
    """Per item its title (``"item <raw_id>"`` when the source has none), whitespace-stripped."""
    return [t.strip() for t in ds.titles()]


def descriptions(ds: Dataset) -> list[str]:
    """Per item its description, or ``""`` when it has none."""
    return [str(it.get("description") or "").strip() for it in ds.items]


DOCUMENT_FIELDS = ("title", "description", "brand", "categories", "attributes")


def documents(ds: Dataset, fields: Sequence[str] = ("title", "description")) -> list[str]:
    """Per item the text to embed: its non-empty ``fields`` joined by spaces, list fields by ", "
    (LC-Rec embeds ``"title description"``; ML-100K ``title categories``: ``"Kolya (1996) Comedy"``);
    ``""`` for an item with none of them."""
    unknown = [f for f in fields if f not in DOCUMENT_FIELDS]
    if unknown or not fields:
        raise DataError(f"item text fields {list(fields)}: expected a non-empty list of {', '.join(DOCUMENT_FIELDS)}")
    out = []
    for item in ds.items:
        values = [item.get(field) for field in fields]
        values = [", ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v or "") for v in values]
        out.append(" ".join(v.strip() for v in values if v.strip()))
    return out


def quoted(title: str) -> str:
    """A title in double quotes, as BIGRec writes items: ``"Toy Story (1995)"``."""
    return f'"{title}"'


def index_strings(index: Mapping[int | str, Sequence[str]], num_items: int) -> list[str]:
    """Per item its semantic-id tokens concatenated without spaces.

    ``index`` maps item id (int, or its decimal string as in LC-Rec's ``.index.json``) to a list of
    token strings like ``["<a_12>", "<b_7>", "<c_3>", "<d_0>"]``.

    Raises:
      DataError: an item has no index, a key is not an item id, or two items share an index.
    """
    out: list[str | None] = [None] * num_items
    for key, tokens in index.items():
        try:
            item = int(key)
        except (TypeError, ValueError):
            raise DataError(f"item index: key {key!r} is not an item id") from None
        if not 0 <= item < num_items:
            raise DataError(f"item index: item id {item} is outside [0, {num_items})")
        if isinstance(tokens, str) or not tokens:
            raise DataError(f"item index: item {item} must map to a non-empty list of tokens, got {tokens!r}")
        out[item] = "".join(tokens)
    missing = [i for i, s in enumerate(out) if s is None]
    if missing:
        raise DataError(f"item index: {len(missing)} items have no index (first: {missing[:5]})")
    first_owner: dict[str, int] = {}
    for item, text in enumerate(out):
        if text in first_owner:
            raise DataError(f"item index: items {first_owner[text]} and {item} share the index {text}")
        first_owner[text] = item
    return out  # type: ignore[return-value]


def random_id_strings(num_items: int, seed: int) -> list[str]:
    """Per item a distinct seeded random integer id, all with the same number of digits.

    With ``d = len(str(num_items)) + 1`` digits the ids are drawn from ``[10**(d-1), 10**d)``, so
    they carry no information about the item's position in the catalog (unlike P5's sequential ids).
    """
    digits = len(str(num_items)) + 1
    low = 10 ** (digits - 1)
    ids = np.random.default_rng(seed).choice(9 * low, size=num_items, replace=False) + low
    return [str(i) for i in ids.tolist()]


def item_keys(ds: Dataset, mode: KeyMode, index: Mapping[int | str, Sequence[str]] | None = None,
              seed: int = 0) -> list[str]:
    """Per item the key text: ``"random"`` integer ids (seeded) or ``"semantic"`` ids from ``index``."""
    if mode == "random":
        return random_id_strings(ds.num_items, seed)
    if mode == "semantic":
        if index is None:
            raise DataError("item keys in 'semantic' mode need an item index (item id -> tokens)")
        return index_strings(index, ds.num_items)
    raise DataError(f"item key mode must be 'random' or 'semantic', got {mode!r}")
