"""Exact top-k items per query over the full catalog, tiled and optionally sharded along items.

Memory is O(Q·(tile + k)): each item tile's scores [Q,tile] (one matmul, see
:mod:`jaxrec.ground.scores`) are merged into the running top-k [Q,k] with ``lax.top_k`` — over the
whole tile, or, once the running top-k is good, only over the few blocks of the tile that can still
enter it (:func:`merge_tile`). Sharded, each device keeps the top-k of its own slice of the
catalog; the k candidates of every device are all-gathered and reduced once more.

Ties follow the canonical jaxrec rule (lower item id first) exactly, across tiles and shards:
``lax.top_k`` is stable (equal values keep their input order), the running top-k always holds lower
ids than the tile appended after it, and shards are gathered in id order.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxrec.errors import JaxrecError
from jaxrec.ground.scores import check_finite, check_item_vector, make_scorer
from jaxrec.ground.tiling import exclusion_mask, fold_item_tiles, over_item_shards

DEFAULT_TILE = 4096
HOT_BLOCK = 16  # items per block in the sparse merge of a tile (see merge_tile)
HOT_BUDGET = 32  # blocks per query row the sparse merge can take before merging the whole tile


def topk(queries, items, k: int, metric: str = "l2", item_bias=None, *, exclude=None,
         tile: int = DEFAULT_TILE, compute_dtype=None, mesh=None):
    """Top-``k`` catalog items for each query.

    Args:
      queries: [Q,d]; items: [N,d] (any float dtype; may already be sharded over ``mesh``).
      metric: "l2" | "cosine" | "dot" (see :mod:`jaxrec.ground.scores`; higher score is better,
        for "l2" the score is the negative squared distance).
      item_bias: optional [N] added to every query's scores.
      exclude: optional int [Q,E] item ids removed per query (-1 = padding), e.g. the history.
      tile: items per tile; compute_dtype: matmul input dtype (e.g. "bfloat16"; accumulation is
        float32); mesh: shard the catalog over all axes of this mesh.

    Returns ``(scores [Q,k] float32, indices [Q,k] int32)``, best first, ties by lower id.
    Excluded items score -inf.
    """
    scorer = make_scorer(metric, queries, items, compute_dtype, has_bias=item_bias is not None)
    check_k(k, items.shape[0])
    bias = check_item_vector("item_bias", item_bias, items.shape[0])
    item_arrays = (items,) if bias is None else (items, bias)
    exclude = check_exclude(exclude, queries.shape[0])
    scores, ids, finite = topk_fold(scorer, k, tile, mesh, item_arrays, (queries,), exclude)
    check_finite("embeddings (queries or items)", finite)
    return scores[0], ids[0]


def check_k(k: int, n_items: int) -> None:
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= n_items:
        raise JaxrecError(f"k must be an integer in [1, {n_items}] (the catalog size), got {k!r}")


def check_exclude(exclude, n_queries: int):
    """``exclude`` must be int [Q,E] (-1 pads rows); returns it as int32 (or None)."""
    if exclude is None:
        return None
    exclude = jnp.asarray(exclude)
    if exclude.ndim != 2 or exclude.shape[0] != n_queries or not jnp.issubdtype(exclude.dtype, jnp.integer):
        raise JaxrecError(
            f"exclude must be an integer array [Q={n_queries}, E] of item ids (-1 = none), "
            f"got {exclude.dtype} {tuple(exclude.shape)}"
        )
    return exclude.astype(jnp.int32)


def select_topk(scores, ids, k: int):
    """Top-``k`` along the last axis of ``scores`` with their ``ids`` (stable: earlier wins ties)."""
    best, pos = lax.top_k(scores, k)
    return best, jnp.take_along_axis(ids, pos, axis=-1)


def merge_tile(best_s, best_i, scores, ids, k: int, block: int = HOT_BLOCK, budget: int = HOT_BUDGET):
    """Merge a tile's scores [...,T] (item ``ids`` [T], contiguous) into the running top-k [...,k].

    Only tile items scoring strictly above the running k-th score can enter (equal ones lose the
    tie: the running entries have lower ids). Once the running top-k is good, few tile blocks of
    ``block`` items hold such an item, so when every row has at most ``budget`` of these "hot"
    blocks only they are gathered (in id order) and merged; otherwise the whole tile is merged.
    Both paths give the same exact result.
    """
    tile = ids.shape[0]

    def merge_all(_):
        return select_topk(jnp.concatenate([best_s, scores], -1),
                           jnp.concatenate([best_i, jnp.broadcast_to(ids, scores.shape)], -1), k)

    if tile % block or tile // block <= budget:
        return merge_all(None)
    blocks = scores.reshape(scores.shape[:-1] + (tile // block, block))
    hot = jnp.max(blocks, axis=-1) > best_s[..., k - 1:]
    slot = jnp.cumsum(hot, axis=-1, dtype=jnp.int32) - 1

    def merge_hot(_):
        lead, num_blocks = hot.shape[:-1], hot.shape[-1]
        flat_hot, flat_slot = hot.reshape(-1, num_blocks), slot.reshape(-1, num_blocks)
        rows = jnp.arange(flat_hot.shape[0])[:, None]
        block_ids = jnp.broadcast_to(jnp.arange(num_blocks, dtype=jnp.int32), flat_hot.shape)
        chosen = jnp.zeros((flat_hot.shape[0], budget), jnp.int32).at[  # hot block ids, in id order
            rows, jnp.where(flat_hot, flat_slot, budget)].set(block_ids, mode="drop").reshape(lead + (budget,))
        used = jnp.arange(budget) <= slot[..., -1:]
        cand = jnp.take_along_axis(blocks, chosen[..., None], axis=-2)
        cand = jnp.where(used[..., None], cand, -jnp.inf).reshape(lead + (budget * block,))
        cand_ids = (ids[0] + chosen[..., None] * block + jnp.arange(block, dtype=jnp.int32)).reshape(cand.shape)
        return select_topk(jnp.concatenate([best_s, cand], -1), jnp.concatenate([best_i, cand_ids], -1), k)

    return lax.cond(jnp.max(slot[..., -1]) < budget, merge_hot, merge_all, None)


@partial(jax.jit, static_argnums=(0, 1, 2, 3))
def topk_fold(scorer, k: int, tile: int, mesh, item_arrays, replicated, exclude, id_base=0, n_valid=None):
    """Top-k for any scorer (metric or fusion): returns (scores [G,Q,k], ids [G,Q,k], all_finite)."""

    def local(shard_arrays, rep, id_offset, id_end, axes):
        queries, excl = rep[0][0], rep[1]
        prepared = scorer.prepare(rep[0])
        g, q = scorer.num_variants(prepared), queries.shape[0]
        init = (scorer.init_stats(prepared),
                jnp.full((g, q, k), -jnp.inf, jnp.float32), jnp.full((g, q, k), -1, jnp.int32))
        ranking_phase = scorer.stat_phases

        def step(carry, phase, parts, ids, valid):
            stats, best_s, best_i = carry
            tile_stats, scores = scorer.tile(prepared, stats, parts, valid)  # -inf where not valid
            if excl is not None:
                scores = jnp.where(exclusion_mask(excl, ids)[None], -jnp.inf, scores)

            def merge(_):
                return (stats,) + merge_tile(best_s, best_i, scores, ids, k)

            if ranking_phase == 0:
                return merge(None)
            return lax.cond(phase < ranking_phase, lambda _: (tile_stats, best_s, best_i), merge, None)

        def end_phase(carry, phase, axes):
            stats, best_s, best_i = carry
            reduced = scorer.reduce_stats(stats, axes)
            stats = jax.tree.map(lambda r, s: jnp.where(phase < ranking_phase, r, s), reduced, stats)
            return stats, best_s, best_i

        (_, best_s, best_i), finite = fold_item_tiles(
            step, init, shard_arrays, tile=tile, id_offset=id_offset, id_end=id_end,
            phases=ranking_phase + 1, end_phase=end_phase, axes=axes)
        finite = finite & jnp.all(jnp.isfinite(queries))
        if axes is not None:
            best_s, best_i = select_topk(lax.all_gather(best_s, axes, axis=2, tiled=True),
                                         lax.all_gather(best_i, axes, axis=2, tiled=True), k)
        return scorer.finalize(prepared, best_s), best_i, finite

    return over_item_shards(local, mesh, item_arrays, (replicated, exclude), id_base, n_valid)
