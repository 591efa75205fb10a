"""Exact full-catalog rank of one target item per query, without sorting the catalog.

rank(t) = 1 + #{items with score > s_t} + #{items with score == s_t and id < t} (the canonical
jaxrec tie rule; ranks are 1-based), counted tile by tile. The target's score s_t is read from the
kernel's own tile scores in a first pass and the counting happens in a second pass of the *same*
loop body, so s_t is bit-identical to the score the target is compared with: duplicated
embeddings tie exactly and the tie rule decides, never rounding. HR@K / NDCG@K follow from the
ranks (``jaxrec.eval.metrics``).
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
from jaxrec.ground.topk import DEFAULT_TILE, check_exclude


def target_ranks(queries, items, targets, metric: str = "l2", item_bias=None, *, exclude=None,
                 tile: int = DEFAULT_TILE, compute_dtype=None, mesh=None):
    """1-based rank [Q] int32 of ``targets`` [Q] (item ids) among all items, per query.

    Arguments as :func:`jaxrec.ground.topk`; items in ``exclude`` [Q,E] (e.g. the user's history)
    are not counted (the target itself is ranked even if listed there).
    """
    scorer = make_scorer(metric, queries, items, compute_dtype, has_bias=item_bias is not None)
    bias = check_item_vector("item_bias", item_bias, items.shape[0])
    targets = check_targets(targets, queries.shape[0], items.shape[0])
    exclude = check_exclude(exclude, queries.shape[0])
    item_arrays = (items,) if bias is None else (items, bias)
    ranks, finite = rank_fold(scorer, tile, mesh, item_arrays, (queries,), targets, exclude)
    check_finite("embeddings (queries or items)", finite)
    return ranks[0]


def check_targets(targets, n_queries: int, n_items: int):
    """``targets`` must be int [Q] ids in [0, N); returns int32."""
    targets = np.asarray(targets)
    if targets.shape != (n_queries,) or not np.issubdtype(targets.dtype, np.integer):
        raise JaxrecError(f"targets must be integer item ids of shape [{n_queries}], got {targets.dtype} {targets.shape}")
    if targets.size and (targets.min() < 0 or targets.max() >= n_items):
        raise JaxrecError(f"targets must be item ids in [0, {n_items}), got range [{targets.min()}, {targets.max()}]")
    return jnp.asarray(targets, jnp.int32)


@partial(jax.jit, static_argnums=(0, 1, 2))
def rank_fold(scorer, tile: int, mesh, item_arrays, replicated, targets, exclude):
    """Ranks [G,Q] of ``targets`` under any scorer (metric or fusion), and all_finite."""

    def local(shard_arrays, rep, id_offset, id_end, axes):
        (queries,), excl, tgt = rep[0][:1], rep[1], rep[2]
        prepared = scorer.prepare(rep[0])
        g, q = scorer.num_variants(prepared), tgt.shape[0]
        zeros = jnp.zeros((g, q), jnp.float32)
        init = (scorer.init_stats(prepared), zeros, jnp.zeros((g, q), jnp.int32))
        target_phase = scorer.stat_phases

        def step(carry, phase, parts, ids, valid):
            stats, s_t, count = carry
            tile_stats, scores = scorer.tile(prepared, stats, parts, valid)

            def collect_stats(_):
                return tile_stats, s_t, count

            def read_target(_):
                is_target = valid[None, :] & (ids[None, :] == tgt[:, None])
                return stats, s_t + jnp.sum(jnp.where(is_target[None], scores, 0.0), -1), count

            def count_higher(_):
                keep = valid[None, :] & (ids[None, :] != tgt[:, None])
                if excl is not None:
                    keep = keep & ~exclusion_mask(excl, ids)
                st = s_t[..., None]
                higher = (scores > st) | ((scores == st) & (ids[None, :] < tgt[:, None])[None])
                return stats, s_t, count + jnp.sum(keep[None] & higher, -1, dtype=jnp.int32)

            branches = [collect_stats] * target_phase + [read_target, count_higher]
            return lax.switch(phase, branches, None)

        def end_phase(carry, phase, axes):
            stats, s_t, count = carry
            if axes is None:
                return carry
            reduced = scorer.reduce_stats(stats, axes)
            stats = jax.tree.map(lambda r, s: jnp.where(phase < target_phase, r, s), reduced, stats)
            return stats, jnp.where(phase == target_phase, lax.psum(s_t, axes), s_t), count

        (_, _, count), finite = fold_item_tiles(
            step, init, shard_arrays, tile=tile, id_offset=id_offset, id_end=id_end,
            phases=target_phase + 2, end_phase=end_phase, axes=axes)
        if axes is not None:
            count = lax.psum(count, axes)
        return count + 1, finite & jnp.all(jnp.isfinite(queries))

    return over_item_shards(local, mesh, item_arrays, (replicated, exclude, targets))
