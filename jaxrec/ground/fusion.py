"""BIGRec score fusion: grounding distance re-weighted by popularity or collaborative scores.

As in BIGRec's released evaluation scripts (``adjust_pda.py`` / ``adjust_ci.py``), for query q and
item i::

    D[q,i]  = distance(q, i)                       # l2: Euclidean (not squared), as torch.cdist
    D̃[q,i] = (D[q,i] - min_j D[q,j]) / (max_j D[q,j] - min_j D[q,j])   # min-max over the catalog, per query
    F[q,i]  = D̃[q,i] · (1 + C[q,i])^(-γ)           # lower is better

``C`` is either popularity per item [N] (BIGRec: interaction counts min-max normalised over items)
or per-query collaborative scores [Q,N] (BIGRec: a SASRec's scores min-max normalised per query
row); :func:`minmax` does either normalisation. Distances for the other metrics: cosine → 1 − cos,
dot → −q·x. γ is chosen on validation separately for every metric and cut-off K
(:func:`choose_gamma`) from BIGRec's grids (:data:`POPULARITY_GAMMAS`, :data:`CF_GAMMAS`).

The kernels return the score ``−F`` (higher is better) so the canonical tie rule applies. The
per-query min and max come from a first tiled pass over the catalog; nothing [Q,N] is built
(except ``C`` itself when it is per query).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping

import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxrec.errors import JaxrecError
from jaxrec.ground.rank import check_targets, rank_fold
from jaxrec.ground.scores import MetricScorer, check_finite, check_item_vector, make_scorer
from jaxrec.ground.topk import DEFAULT_TILE, check_exclude, check_k, topk_fold

# BIGRec's γ grids: popularity 0,1,...,99; collaborative 0,0.01,...,0.99,1,2,...,99.
POPULARITY_GAMMAS = np.arange(100, dtype=np.float32)
CF_GAMMAS = np.concatenate([np.arange(100) / 100, np.arange(1, 100)]).astype(np.float32)

# Fused scores of one tile are [G,Q,tile]: the tile shrinks so that stays under this many elements.
MAX_TILE_ELEMENTS = 1 << 24


@dataclasses.dataclass(frozen=True)
class FusionScorer:
    """Scores −F (module docstring) for G values of γ at once; one statistics pass (min/max D)."""

    base: MetricScorer
    per_query_weights: bool
    stat_phases = 1

    def prepare(self, replicated):
        """``(queries [Q,d], gammas [G])`` → (query operand, |q|², gammas)."""
        queries, gammas = replicated
        return self.base.prepare_queries(queries) + (gammas,)

    def num_variants(self, prepared) -> int:
        return prepared[2].shape[0]

    def init_stats(self, prepared):
        q = prepared[0].shape[0]
        return jnp.full((q,), jnp.inf, jnp.float32), jnp.full((q,), -jnp.inf, jnp.float32)

    def reduce_stats(self, stats, axes):
        if axes is None:
            return stats
        return lax.pmin(stats[0], axes), lax.pmax(stats[1], axes)

    def distance(self, scores):
        """Metric scores → BIGRec distance D (+inf stays +inf for invalid items)."""
        if self.base.metric == "l2":
            return jnp.sqrt(jnp.maximum(-scores, 0.0))
        return 1.0 - scores if self.base.metric == "cosine" else -scores

    def finalize(self, prepared, scores):
        return scores

    def tile(self, prepared, stats, parts, valid):
        """``parts`` = (items [T,d], C [T] or [T,Q]) → ((min D, max D) so far, scores -F [G,Q,T])."""
        base_scores = self.base.rank_scores(prepared, parts[0], None, valid)
        dist = self.distance(self.base.true_scores(prepared, base_scores))
        d_min, d_max = stats
        tile_stats = (jnp.minimum(d_min, jnp.min(jnp.where(valid, dist, jnp.inf), -1)),
                      jnp.maximum(d_max, jnp.max(jnp.where(valid, dist, -jnp.inf), -1)))
        spread = d_max - d_min
        normalised = (dist - d_min[:, None]) / jnp.where(spread > 0, spread, 1.0)[:, None]
        log_weight = jnp.log1p(parts[1].T if self.per_query_weights else parts[1][None, :])
        gammas = prepared[2][:, None, None]
        return tile_stats, -(normalised[None] * jnp.exp(-gammas * log_weight[None]))


def minmax(values, axis=-1):
    """(v − min) / (max − min) along ``axis`` (BIGRec's normalisation of D and of C); 0 where constant."""
    values = np.asarray(values, np.float32)
    low = values.min(axis=axis, keepdims=True)
    spread = values.max(axis=axis, keepdims=True) - low
    return (values - low) / np.where(spread > 0, spread, 1.0)


def _fusion_inputs(metric, queries, items, weights, gammas, compute_dtype, tile):
    base = make_scorer(metric, queries, items, compute_dtype)
    n, q = items.shape[0], queries.shape[0]
    if np.ndim(weights) == 2:
        if np.shape(weights) != (q, n):
            raise JaxrecError(f"per-query weights C must have shape [Q={q}, N={n}], got {np.shape(weights)}")
        weights = jnp.asarray(weights, jnp.float32).T  # item-major, tiled along items
    else:
        weights = check_item_vector("weights C", weights, n)
    gammas = jnp.atleast_1d(jnp.asarray(gammas, jnp.float32))
    if gammas.ndim != 1:
        raise JaxrecError(f"gammas must be a scalar or 1-D grid, got shape {gammas.shape}")
    tile = max(1, min(tile, MAX_TILE_ELEMENTS // (gammas.shape[0] * q)))
    return FusionScorer(base, weights.ndim == 2), (items, weights), (queries, gammas), tile


def fused_topk(queries, items, weights, gamma: float, k: int, metric: str = "l2", *, exclude=None,
               tile: int = DEFAULT_TILE, compute_dtype=None, mesh=None):
    """Top-``k`` items by fused distance F (lowest first): ``(scores −F [Q,k], indices [Q,k])``."""
    check_k(k, items.shape[0])
    scorer, item_arrays, replicated, tile = _fusion_inputs(metric, queries, items, weights, gamma,
                                                           compute_dtype, tile)
    exclude = check_exclude(exclude, queries.shape[0])
    scores, ids, finite = topk_fold(scorer, k, tile, mesh, item_arrays, replicated, exclude)
    check_finite("embeddings (queries or items)", finite)
    return scores[0], ids[0]


def fused_target_ranks(queries, items, targets, weights, gammas, metric: str = "l2", *, exclude=None,
                       tile: int = DEFAULT_TILE, compute_dtype=None, mesh=None):
    """1-based ranks [G,Q] of ``targets`` under F for every γ in ``gammas`` [G] (one catalog pass each
    for min/max, target score and counting, shared by all γ)."""
    scorer, item_arrays, replicated, tile = _fusion_inputs(metric, queries, items, weights, gammas,
                                                           compute_dtype, tile)
    targets = check_targets(targets, queries.shape[0], items.shape[0])
    exclude = check_exclude(exclude, queries.shape[0])
    ranks, finite = rank_fold(scorer, tile, mesh, item_arrays, replicated, targets, exclude)
    check_finite("embeddings (queries or items)", finite)
    return ranks


def choose_gamma(ranks, gammas, metrics: Mapping[str, Callable]) -> dict:
    """Best γ per metric on validation, as BIGRec: ``{name: (gamma, value)}``.

    ``ranks`` [G,Q] from :func:`fused_target_ranks`; ``metrics`` maps a name (e.g. "ndcg@10") to a
    function of 1-based ranks [Q] returning a float (higher is better). The smallest γ wins ties.
    """
    ranks = np.asarray(ranks)
    gammas = np.asarray(gammas)
    if ranks.ndim != 2 or ranks.shape[0] != gammas.shape[0]:
        raise JaxrecError(f"ranks must be [G={gammas.shape[0]}, Q] (one row per gamma), got {ranks.shape}")
    best = {}
    for name, metric in metrics.items():
        values = np.array([float(metric(row)) for row in ranks])
        i = int(np.argmax(values))
        best[name] = (float(gammas[i]), float(values[i]))
    return best
