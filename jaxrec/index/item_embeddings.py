"""Item embeddings to index, from a file.

Sources:
  ``npy``     a float array [N, d], row i = item i (e.g. text embeddings computed elsewhere);
  ``sasrec``  a SASRec item-embedding table [N+1, d] whose row 0 is the padding token (jaxrec's
              SASRec layout: item i is token i+1); the padding row is dropped — collaborative
              embeddings, LETTER-style, for data without text.
Mean-pooled text embeddings from a loaded language model come from ``jaxrec.ground.embed``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from jaxrec.errors import DataError

Source = Literal["npy", "sasrec"]


def load_item_embeddings(path: str | Path, source: Source = "npy", num_items: int | None = None) -> np.ndarray:
    """float32 [N, d] item embeddings read from ``path`` (see the module docstring for ``source``)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"embeddings file not found: {path}")
    try:
        table = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise DataError(f"{path}: not a .npy array: {e}") from None
    if table.ndim != 2 or not np.issubdtype(table.dtype, np.number):
        raise DataError(f"{path}: expected a numeric 2-D array [items, dim], got {table.dtype} {table.shape}")
    if source == "sasrec":
        table = table[1:]
    elif source != "npy":
        raise DataError(f"unknown embeddings source {source!r}; expected 'npy' or 'sasrec'")
    if num_items is not None and table.shape[0] != num_items:
        hint = " (a SASRec table with a padding row? use source 'sasrec')" if table.shape[0] == num_items + 1 else ""
        raise DataError(f"{path}: {table.shape[0]} item rows, expected {num_items}{hint}")
    if table.shape[0] == 0 or not np.all(np.isfinite(table)):
        raise DataError(f"{path}: the embeddings are empty or contain NaN/inf")
    return table.astype(np.float32)
