"""The columnar path of the large formats: Arrow's multi-threaded CSV / JSON-lines readers with column projection
and vectorized value checks, with the format's line loop behind it to name the first bad line.

Every value check here is at least as strict as the line loop's rules (``int()`` / ``float()`` of the stripped
field, ids that are digit tokens, ...): when Arrow cannot parse the file, or a value is missing or is one that
only the line loop takes (a JSON number as an id, ``"12.0"`` as a timestamp, a padded field), the format's line
loop reads the file instead. It raises a :class:`~jaxrec.errors.DataError` naming the file and the first bad line,
or, when every line is valid by its rules, returns exactly what the columnar path would have meant to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.json as pjson

T = TypeVar("T")
BLOCK_BYTES = 8 << 20  # bytes per parse block (each thread parses one block at a time)


class NotColumnar(Exception):
    """A value the vectorized checks do not take: the line loop decides (and names the line if it is bad)."""


def columnar_or_lines(columnar: Callable[[], T], lines: Callable[[], T]) -> T:
    """``columnar()``, or ``lines()`` (the format's line loop) when Arrow cannot parse the file or a value needs
    the line loop's rules."""
    try:
        return columnar()
    except (pa.ArrowException, NotColumnar, OSError):
        return lines()


def read_csv(path: Path, names: Sequence[str], *, delimiter: str = ",", quoted: bool = True, skip_rows: int = 0,
             include: Sequence[str] | None = None) -> pa.Table:
    """A delimited file (``.gz``/``.bz2`` decompressed), every column read as strings; rows must have exactly
    ``len(names)`` fields (empty lines are skipped)."""
    return pcsv.read_csv(
        path,
        read_options=pcsv.ReadOptions(column_names=list(names), skip_rows=skip_rows, block_size=BLOCK_BYTES),
        parse_options=pcsv.ParseOptions(delimiter=delimiter, quote_char='"' if quoted else False),
        convert_options=pcsv.ConvertOptions(column_types={n: pa.string() for n in names},
                                            include_columns=list(include or names), strings_can_be_null=False,
                                            quoted_strings_can_be_null=False))


def read_jsonl(path: Path, schema: pa.Schema) -> pa.Table:
    """JSON lines (``.gz``/``.bz2`` decompressed), only the fields of ``schema`` (others are skipped unparsed
    into columns); a field absent from a line is null."""
    return pjson.read_json(path, read_options=pjson.ReadOptions(block_size=BLOCK_BYTES),
                           parse_options=pjson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"))


def no_nulls(column: pa.ChunkedArray) -> pa.ChunkedArray:
    if column.null_count:
        raise NotColumnar
    return column


def stripped(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """String values that have no surrounding whitespace (the line loop strips them)."""
    no_nulls(column)
    if not pc.all(pc.equal(column, pc.utf8_trim_whitespace(column))).as_py():
        raise NotColumnar
    return column


def digit_ids(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Ids that are non-negative integer tokens (MovieLens, S3-Rec), kept as their text."""
    no_nulls(column)
    if len(column) and not pc.all(pc.ascii_is_decimal(column)).as_py():
        raise NotColumnar
    return column


def ints(column: pa.ChunkedArray) -> np.ndarray:
    """int64 [E] from integer text or an int64 column."""
    return pc.cast(no_nulls(column), pa.int64()).to_numpy()


def floats(column: pa.ChunkedArray) -> np.ndarray:
    """float32 [E] from number text or a float column (parsed as float64 first, as ``float()`` does)."""
    return pc.cast(no_nulls(column), pa.float64()).to_numpy().astype(np.float32)


def empty(column: pa.ChunkedArray) -> None:
    """Check a column holds only empty strings (the gaps of a ``::``-separated file read with ``:``)."""
    if column.null_count or pc.max(pc.utf8_length(column)).as_py() not in (0, None):
        raise NotColumnar
