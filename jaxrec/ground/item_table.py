"""Item embedding tables [N,d] on disk (zarr v3 via tensorstore), read and ranked block by block.

A catalog larger than host memory works: :func:`write_item_table` consumes row blocks as they are
produced (e.g. by :func:`jaxrec.ground.embed.embed_texts` batch by batch), :meth:`ItemTable.rows`
reads any row range, :func:`host_rows` gives each host of a multi-host job its own contiguous
range, and :func:`stream_topk` ranks against the table holding only one block (plus the next one
being read) in memory: block i+1 is read from disk while the device ranks block i.
:func:`multihost_topk` is the multi-host version: every host streams only its own rows, then the
hosts' top-k lists are all-gathered and merged (ties still to the lower id).
"""

from __future__ import annotations

import os
from typing import Iterable

import jax
import jax.numpy as jnp
import numpy as np
import tensorstore as ts
from jax.experimental import multihost_utils

from jaxrec.atomic import atomic_dir
from jaxrec.errors import DataError, JaxrecError
from jaxrec.ground.scores import check_finite, make_scorer
from jaxrec.ground.topk import DEFAULT_TILE, check_k, select_topk, topk_fold

DEFAULT_CHUNK_ROWS = 16384


def _spec(path) -> dict:
    return {"driver": "zarr3", "kvstore": {"driver": "file", "path": os.fspath(path)}}


def write_item_table(path, blocks: Iterable, n_items: int, dim: int, dtype="float32",
                     chunk_rows: int = DEFAULT_CHUNK_ROWS) -> "ItemTable":
    """Write row ``blocks`` (each [b,d], in item-id order, b arbitrary) as an [n_items, dim] table.

    The table appears at ``path`` only when all ``n_items`` rows were written (atomic rename).
    """
    dtype = np.dtype(jnp.dtype(dtype))
    with atomic_dir(path, lambda p: (p / "table").is_dir(), "jaxrec item table") as tmp:
        store = ts.open({**_spec(tmp / "table"), "metadata": {
            "shape": [n_items, dim], "data_type": dtype.name,
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [min(chunk_rows, max(n_items, 1)), dim]}},
        }}, create=True).result()
        offset = 0
        for block in blocks:
            block = np.asarray(block)
            if block.ndim != 2 or block.shape[1] != dim or offset + block.shape[0] > n_items:
                raise JaxrecError(
                    f"item table block of shape {block.shape} at row {offset} does not fit [{n_items}, {dim}]"
                )
            store[offset:offset + block.shape[0]].write(block.astype(dtype)).result()
            offset += block.shape[0]
        if offset != n_items:
            raise JaxrecError(f"item table got {offset} rows, expected {n_items}")
    return ItemTable(path)


class ItemTable:
    """An [N,d] embedding table written by :func:`write_item_table`."""

    def __init__(self, path):
        self.path = os.fspath(path)
        try:
            self._store = ts.open(_spec(os.path.join(self.path, "table")), open=True).result()
        except ValueError as e:  # tensorstore reports a missing or corrupt array as ValueError
            raise DataError(f"{self.path}: not a jaxrec item table (zarr3 array 'table'): {e}") from None
        if self._store.rank != 2:
            raise DataError(f"{self.path}: item table must be 2-D [N,d], got shape {self._store.shape}")

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(int(s) for s in self._store.shape)

    @property
    def dtype(self) -> np.dtype:
        return self._store.dtype.numpy_dtype

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) as a host array [stop-start, d]."""
        n = self.shape[0]
        if not 0 <= start <= stop <= n:
            raise JaxrecError(f"row range [{start}, {stop}) is outside the item table's {n} rows")
        return self._store[start:stop].read().result()

    def read_async(self, start: int, stop: int):
        """A future of :meth:`rows` (the read runs in tensorstore's threads)."""
        return self._store[start:stop].read()


def host_rows(n_items: int, process_index: int | None = None, process_count: int | None = None):
    """The contiguous row range ``(start, stop)`` this host owns (hosts split the catalog evenly)."""
    index = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    per_host = -(-n_items // count)
    return min(index * per_host, n_items), min((index + 1) * per_host, n_items)


@jax.jit
def _merge(best_s, best_i, new_s, new_i):
    return select_topk(jnp.concatenate([best_s, new_s], -1), jnp.concatenate([best_i, new_i], -1),
                       best_s.shape[-1])


def stream_topk(queries, table: ItemTable, k: int, metric: str = "l2", *, rows=None,
                block_rows: int = 1 << 18, tile: int = DEFAULT_TILE, compute_dtype=None, mesh=None):
    """Exact top-``k`` of ``queries`` [Q,d] over ``table`` rows ``rows`` (default all), streamed.

    Host memory holds two blocks of ``block_rows`` rows. Returns ``(scores [Q,k], ids [Q,k])`` with
    table row ids, as :func:`jaxrec.ground.topk` over the same rows would.
    """
    start, stop = (0, table.shape[0]) if rows is None else rows
    n = stop - start
    check_k(k, n)
    block_rows = min(max(block_rows, k), n)
    scorer = make_scorer(metric, queries, jax.ShapeDtypeStruct((n, table.shape[1]), table.dtype), compute_dtype)
    queries = jnp.asarray(queries)
    best, finite = None, True
    pending = table.read_async(start, min(start + block_rows, stop))
    for block_start in range(start, stop, block_rows):
        block = np.asarray(pending.result())
        next_start = block_start + block_rows
        if next_start < stop:
            pending = table.read_async(next_start, min(next_start + block_rows, stop))
        n_valid = block.shape[0]
        if n_valid < block_rows:  # keep one compiled shape: pad the last block (masked by n_valid)
            block = np.concatenate([block, np.zeros((block_rows - n_valid, block.shape[1]), block.dtype)])
        s, i, block_finite = topk_fold(scorer, k, tile, mesh, (block,), (queries,), None, block_start, n_valid)
        finite = finite & block_finite
        best = (s[0], i[0]) if best is None else _merge(*best, s[0], i[0])
    check_finite(f"queries or item table {table.path} rows [{start}, {stop})", finite)
    return best


def multihost_topk(queries, table: ItemTable, k: int, metric: str = "l2", **stream_kwargs):
    """Exact top-``k`` of ``queries`` [Q,d] over every row of ``table``, each host reading only its
    :func:`host_rows`; call it on every process. ``stream_kwargs`` go to :func:`stream_topk` (e.g.
    ``mesh`` over this host's devices). Returns ``(scores [Q,k], ids [Q,k])`` on every host, equal to
    a single-host :func:`stream_topk` over the whole table.
    """
    check_k(k, table.shape[0])
    start, stop = host_rows(table.shape[0])
    local_k = min(k, stop - start)
    scores = np.full((len(queries), k), -np.inf, np.float32)
    ids = np.full((len(queries), k), -1, np.int32)
    if local_k:
        s, i = stream_topk(queries, table, local_k, metric, rows=(start, stop), **stream_kwargs)
        scores[:, :local_k], ids[:, :local_k] = np.asarray(s), np.asarray(i)
    if jax.process_count() == 1:
        return jnp.asarray(scores), jnp.asarray(ids)
    all_s, all_i = multihost_utils.process_allgather((scores, ids))  # [hosts, Q, k], hosts in row order
    return _merge_hosts(jnp.asarray(all_s), jnp.asarray(all_i))


@jax.jit
def _merge_hosts(all_s, all_i):
    """[H,Q,k] per-host lists (host h holds lower ids than host h+1) -> the global top-k [Q,k]."""
    hosts, q, k = all_s.shape
    flat = lambda a: jnp.moveaxis(a, 0, 1).reshape(q, hosts * k)
    return select_topk(flat(all_s), flat(all_i), k)
