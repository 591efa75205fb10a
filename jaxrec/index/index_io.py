"""Item-index files in LC-Rec's format, as released by LC-Rec and LETTER.

A JSON object mapping each item id (a decimal string, 0..N-1) to its code tokens, level l written
with the l-th letter: ``{"0": ["<a_228>", "<b_220>", "<c_159>", "<d_91>"], ...}``.
"""

from __future__ import annotations

import json
import re
import string
from pathlib import Path

import numpy as np

from jaxrec.atomic import atomic_file
from jaxrec.errors import DataError
from jaxrec.remote import local_input

_TOKEN = re.compile(r"<([a-z])_(\d+)>")
LEVEL_LETTERS = string.ascii_lowercase


def level_token(level: int, code: int) -> str:
    """The token of ``code`` at ``level``: level 0 → ``<a_code>``, level 1 → ``<b_code>``, ..."""
    return f"<{LEVEL_LETTERS[level]}_{code}>"


def codes_to_tokens(codes: np.ndarray) -> list[list[str]]:
    """codes int [N, L] → per item its L tokens."""
    return [[level_token(level, int(c)) for level, c in enumerate(row)] for row in np.asarray(codes)]


def index_vocabulary(codes: np.ndarray) -> list[str]:
    """Every token the index uses, level by level then by code (the tokens to add to a tokenizer)."""
    codes = np.asarray(codes)
    return [level_token(level, int(c)) for level in range(codes.shape[1]) for c in np.unique(codes[:, level])]


def write_index(path: str | Path, codes: np.ndarray) -> None:
    """Write codes int [N, L] as an LC-Rec index file (atomically)."""
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[1] > len(LEVEL_LETTERS):
        raise DataError(f"{path}: codes must be [items, levels ≤ 26], got shape {codes.shape}")
    with atomic_file(path) as f:
        json.dump({str(i): tokens for i, tokens in enumerate(codes_to_tokens(codes))}, f)


def read_index(path: str | Path, num_items: int | None = None) -> np.ndarray:
    """Read an LC-Rec index file into codes int32 [N, L] (row i = item i).

    Raises DataError naming the item and token when the file does not have the format above, when
    items have different numbers of levels, or when the item ids are not exactly 0..N-1 (N =
    ``num_items`` when given).
    """
    path = local_input(path)
    if not path.is_file():
        raise DataError(f"index file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON: line {e.lineno}: {e.msg}") from None
    if not isinstance(data, dict) or not data:
        raise DataError(f"{path}: expected a non-empty JSON object {{item id: [tokens]}}")
    n = len(data) if num_items is None else num_items
    rows: list[list[int] | None] = [None] * n
    levels = None
    for key, tokens in data.items():
        if not key.isdigit() or int(key) >= n:
            raise DataError(f"{path}: item id {key!r} is not an integer in 0..{n - 1}")
        if not isinstance(tokens, list) or not tokens:
            raise DataError(f"{path}: item {key}: expected a non-empty list of tokens, got {tokens!r}")
        if levels is None:
            levels = len(tokens)
        if len(tokens) != levels:
            raise DataError(f"{path}: item {key} has {len(tokens)} tokens, earlier items have {levels}")
        row = []
        for level, token in enumerate(tokens):
            match = _TOKEN.fullmatch(token) if isinstance(token, str) else None
            if match is None or match.group(1) != LEVEL_LETTERS[level]:
                raise DataError(f"{path}: item {key}: token {level} is {token!r}, expected "
                                f"<{LEVEL_LETTERS[level]}_N> with N an integer")
            row.append(int(match.group(2)))
        rows[int(key)] = row
    missing = [i for i, row in enumerate(rows) if row is None]
    if missing:
        raise DataError(f"{path}: {len(missing)} item ids missing, first: {missing[0]} (expected 0..{n - 1})")
    return np.asarray(rows, np.int32)
