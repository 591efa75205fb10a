"""The columnar path of the large formats: Arrow's multi-threaded CSV / JSON-lines readers with column projection
and vectorized value checks, with the format's line loop behind it to name the first bad line.

Every value check here is at least as strict as the line loop's rules (``int()`` / ``float()`` of the stripped
field, ids that are digit tokens, ...): when Arrow cannot parse the file, or a value is missing or is one that
only the line loop takes (a JSON number as an id, ``"12.0"`` as a timestamp, a padded field), the format's line
loop reads the file instead. It raises a :class:`~jaxrec.errors.DataError` naming the file and the first bad line,
or, when every line is valid by its rules, returns the rows as the line-by-line readers always did.
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
BLOCK_BYTES = 32 << 20  # bytes per parse block (each thread parses one block at a time)
IDS = pa.dictionary(pa.int32(), pa.string())  # raw ids, hashed while parsing: each distinct text is kept once
# the characters Python's str.strip() removes (str.isspace), as an RE2 class
PY_SPACE = r"[\t\n\x0b\f\r\x1c-\x1f \x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}]"
# the parsers allocate a block's buffers and free them: with the C allocator this costs a third of the CPU time it
# does with Arrow's default jemalloc pool, which returns freed pages to the kernel and faults them in again
POOL = pa.system_memory_pool()


class NotColumnar(Exception):
    """A value the vectorized checks do not take: the line loop decides (and names the line if it is bad)."""


def columnar_or_lines(columnar: Callable[[], T], lines: Callable[[], T]) -> T:
    """``columnar()``, or ``lines()`` (the format's line loop) when Arrow cannot parse the file or a value needs
    the line loop's rules."""
    try:
        return columnar()
    except (pa.ArrowException, NotColumnar, OSError):
        return lines()


def read_csv(path: Path, names: Sequence[str], *, types: dict[str, pa.DataType] | None = None, delimiter: str = ",",
             quoted: bool = True, skip_rows: int = 0, include: Sequence[str] | None = None) -> pa.Table:
    """A delimited file (``.gz``/``.bz2`` decompressed) whose rows have exactly ``len(names)`` fields (empty lines
    are skipped); columns typed by ``types`` (e.g. :data:`IDS`, ``pa.int64()``), others read as strings."""
    types = {n: (types or {}).get(n, pa.string()) for n in names}
    return pcsv.read_csv(
        path,
        read_options=pcsv.ReadOptions(column_names=list(names), skip_rows=skip_rows, block_size=BLOCK_BYTES),
        parse_options=pcsv.ParseOptions(delimiter=delimiter, quote_char='"' if quoted else False),
        convert_options=pcsv.ConvertOptions(column_types=types, include_columns=list(include or names),
                                            strings_can_be_null=False, quoted_strings_can_be_null=False),
        memory_pool=POOL)


def read_jsonl(path: Path, schema: pa.Schema) -> pa.Table:
    """JSON lines (``.gz``/``.bz2`` decompressed), only the fields of ``schema`` (others are skipped unparsed
    into columns); a field absent from a line is null."""
    return pjson.read_json(path, read_options=pjson.ReadOptions(block_size=BLOCK_BYTES),
                           parse_options=pjson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"),
                           memory_pool=POOL)


def no_nulls(column: pa.ChunkedArray) -> pa.ChunkedArray:
    if column.null_count:
        raise NotColumnar
    return column


def unified(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """A dictionary column whose chunks share one dictionary (their own dictionaries merged in chunk order, so the
    values stay in order of first appearance); other columns as they are."""
    return column.unify_dictionaries() if pa.types.is_dictionary(column.type) else column


def _values(column: pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """The distinct texts of a unified dictionary column, or the column itself."""
    if pa.types.is_dictionary(column.type):
        return column.chunk(0).dictionary if column.num_chunks else pa.array([], pa.string())
    return column


def stripped(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """String values (or dictionary texts) with no surrounding whitespace (the line loop strips them)."""
    column = unified(no_nulls(column))
    values = _values(column)
    if len(values) and pc.any(pc.match_substring_regex(values, f"^{PY_SPACE}|{PY_SPACE}$")).as_py():
        raise NotColumnar
    return column


def digit_ids(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Ids that are non-negative integer tokens (MovieLens, S3-Rec), kept as their text."""
    column = unified(no_nulls(column))
    values = _values(column)
    if len(values) and not pc.all(pc.ascii_is_decimal(values)).as_py():
        raise NotColumnar
    return column


def ints(column: pa.ChunkedArray) -> np.ndarray:
    """int64 [E] from integer text or an int64 column."""
    return pc.cast(no_nulls(column), pa.int64()).to_numpy()


def floats(column: pa.ChunkedArray) -> np.ndarray:
    """float32 [E] from number text or a float column (parsed as float64 first, as ``float()`` does)."""
    return pc.cast(pc.cast(no_nulls(column), pa.float64()), pa.float32(), safe=False).to_numpy()


def empty(column: pa.ChunkedArray) -> None:
    """Check a column holds only empty strings (the gaps of a ``::``-separated file read with ``:``)."""
    if column.null_count or pc.max(pc.utf8_length(column)).as_py() not in (0, None):
        raise NotColumnar
