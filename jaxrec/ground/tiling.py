"""Walk the catalog in fixed-size item tiles, on one device or sharded along items over a mesh.

Every kernel in ``jaxrec.ground`` is a *fold*: a carry updated tile by tile, so memory is
O(Q·tile) and the [Q,N] score matrix never exists. A fold may make several passes ("phases", e.g.
one pass for per-query statistics, then one for ranking); all phases run the **same traced loop
body**, so a score computed in phase 0 is bit-identical to the same score in phase 1.

Tiles never need padding copies of the catalog: when N is not a multiple of the tile, the last tile
is shifted back to end at row N and its rows already seen are masked out (``valid`` False), which
is the same as padding with -inf scores. Ids at or beyond ``id_end`` (padding added to split the
catalog evenly over devices, or to fill the last block streamed from disk) are masked too.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from jaxrec.errors import JaxrecError

# step(carry, phase, tile_arrays, ids[T], valid[T]) -> carry
Step = Callable
# end_phase(carry, phase, axes) -> carry; runs the collectives (axes=None on one device)
EndPhase = Callable


def fold_item_tiles(step: Step, carry, item_arrays: tuple, *, tile: int, id_offset, id_end,
                    phases: int = 1, end_phase: EndPhase | None = None, axes=None):
    """Run ``phases`` passes of ``step`` over item tiles of ``item_arrays`` (each [N, ...]).

    ``item_arrays[0]`` are the embeddings [N,d]; returns ``(carry, all_finite)`` where ``all_finite``
    says whether every valid embedding row was finite (checked per row sum: O(N·d), cheap).
    Item ids are ``id_offset + row``; ids >= ``id_end`` are padding.
    """
    if not isinstance(tile, int) or tile < 1:
        raise JaxrecError(f"tile must be a positive number of items, got {tile!r}")
    n = item_arrays[0].shape[0]
    tile = min(tile, n)
    num_tiles = -(-n // tile)
    last_start = n - tile

    def one_tile(state, t):
        carry, phase, finite = state
        nominal = t * tile
        start = jnp.minimum(nominal, last_start)
        parts = tuple(lax.dynamic_slice_in_dim(a, start, tile, axis=0) for a in item_arrays)
        rows = start + jnp.arange(tile, dtype=jnp.int32)
        ids = id_offset + rows
        valid = (rows >= nominal) & (ids < id_end)
        row_ok = jnp.isfinite(jnp.sum(parts[0].astype(jnp.float32), axis=1))
        finite = finite & jnp.all(row_ok | ~valid)
        return (step(carry, phase, parts, ids, valid), phase, finite), None

    def one_phase(state, phase):
        carry, finite = state
        (carry, _, finite), _ = lax.scan(one_tile, (carry, phase, finite), jnp.arange(num_tiles))
        if end_phase is not None:
            carry = end_phase(carry, phase, axes)
        return (carry, finite), None

    (carry, finite), _ = lax.scan(one_phase, (carry, jnp.bool_(True)), jnp.arange(phases))
    if axes is not None:
        finite = lax.pmin(finite.astype(jnp.int32), axes).astype(bool)
    return carry, finite


def exclusion_mask(exclude, ids):
    """[Q,T] True where the tile item ``ids`` [T] (contiguous) is in ``exclude`` [Q,E] (-1 = none)."""
    q, e = exclude.shape
    tile = ids.shape[0]
    pos = exclude - ids[0]
    pos = jnp.where((exclude >= 0) & (pos >= 0) & (pos < tile), pos, tile)  # tile = out of range: dropped
    rows = jnp.broadcast_to(jnp.arange(q)[:, None], (q, e))
    return jnp.zeros((q, tile), bool).at[rows, pos].set(True, mode="drop")


def over_item_shards(local: Callable, mesh: Mesh | None, item_arrays: tuple, replicated: tuple,
                     id_base=0, n_valid=None):
    """Call ``local(item_arrays, replicated, id_offset, id_end, axes)`` on one device or per shard.

    Item ids run from ``id_base``; only the first ``n_valid`` rows (default all) are real. With a
    mesh, ``item_arrays`` (each [N, ...]) are split along items over *all* mesh axes (padded to a
    multiple of the device count; padding is masked by ``id_end``) and ``replicated`` is copied to
    every device. ``local`` must return results already combined over ``axes`` (the same on every
    device).
    """
    n = item_arrays[0].shape[0]
    id_base = jnp.asarray(id_base, jnp.int32)
    id_end = id_base + jnp.asarray(n if n_valid is None else n_valid, jnp.int32)
    if mesh is None:
        return local(item_arrays, replicated, id_base, id_end, None)
    axes = tuple(mesh.axis_names)
    devices = mesh.size
    padded = -(-n // devices) * devices
    if padded != n:
        item_arrays = tuple(jnp.pad(a, [(0, padded - n)] + [(0, 0)] * (a.ndim - 1)) for a in item_arrays)
    n_local = padded // devices

    def per_shard(shard_arrays, rep, base, end):
        offset = base + (lax.axis_index(axes) * n_local).astype(jnp.int32)
        return local(shard_arrays, rep, offset, end, axes)

    explicit = AxisType.Explicit in mesh.axis_types
    move = jax.reshard if explicit else lax.with_sharding_constraint  # Explicit vs Auto mesh axes

    def place(tree, spec):
        return jax.tree.map(lambda a: move(a, NamedSharding(mesh, spec)), tree)

    specs = (P(axes), P(), P(), P())
    args = tuple(place(a, spec) for a, spec in zip((item_arrays, replicated, id_base, id_end), specs))
    return jax.shard_map(per_shard, mesh=mesh, in_specs=specs, out_specs=P(), check_vma=False)(*args)
