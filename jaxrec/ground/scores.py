"""Similarity scores between queries and a tile of catalog items (higher is always better).

Score of query ``q`` and item ``x`` per metric (``b`` the optional per-item bias):

* ``"dot"``:    ``q·x + b``
* ``"cosine"``: ``(q/|q|)·(x/|x|) + b``  (norms floored at 1e-12, as ``torch.nn.functional.normalize``)
* ``"l2"``:     ``-|q - x|² + b``  — the *negative squared* Euclidean distance, computed as
  ``2 q·x - |x|² - |q|²`` so a tile costs one matmul. Its ranking equals ranking by distance
  (BIGRec's ``torch.cdist`` distance is ``sqrt(-score)`` without bias).

The matmul runs in ``compute_dtype`` (e.g. bfloat16) and always accumulates in float32
(``preferred_element_type``); float32 inputs use full precision (``Precision.HIGHEST``), so TPUs do
not silently drop to bfloat16 passes.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxrec.errors import JaxrecError

METRICS = ("l2", "cosine", "dot")
NORM_FLOOR = 1e-12


@dataclasses.dataclass(frozen=True)
class MetricScorer:
    """Scores a tile by ``metric`` plus an optional per-item bias (static under jit).

    A tile is scored in a *ranking scale* s' with ``score = scale·s' + offset[q]`` (l2: scale 2,
    offset -|q|², s' = q·x - |x|²/2 + b/2; cosine and dot: s' = score). The per-item term is an
    extra column of the matmul in float32 (queries get a column of ones), so one matmul yields the
    ranking scores of a tile with no [Q,T] elementwise pass; invalid items (padding, rows of a
    shifted last tile) get -inf in that column. With a lower-precision ``compute_dtype`` the term is
    added after the matmul in float32 instead.

    The scorer protocol shared with :class:`jaxrec.ground.fusion.FusionScorer`: ``stat_phases``
    passes collect per-query statistics (none here) before the ranking pass; ``tile`` returns the
    statistics of one tile and ranking scores [G,Q,T] (G score variants; G = 1 here);
    ``finalize`` turns selected ranking scores into reported scores.
    """

    metric: str
    compute_dtype: str
    has_bias: bool = False
    stat_phases = 0

    @property
    def fused_column(self) -> bool:
        return jnp.dtype(self.compute_dtype) == jnp.float32

    def prepare(self, replicated):
        """``(queries [Q,d],)`` → prepared queries (see :meth:`prepare_queries`)."""
        (queries,) = replicated
        return self.prepare_queries(queries)

    def prepare_queries(self, queries):
        """Queries [Q,d] → (matmul operand [Q,d(+1)] in compute_dtype, |q|² [Q] float32)."""
        q = queries.astype(jnp.float32)
        if self.metric == "cosine":
            q = q / jnp.maximum(jnp.linalg.norm(q, axis=1, keepdims=True), NORM_FLOOR)
        q = q.astype(self.compute_dtype).astype(jnp.float32)
        q_sq = jnp.sum(q * q, axis=1)
        if self.fused_column:
            q = jnp.concatenate([q, jnp.ones((q.shape[0], 1), q.dtype)], axis=1)
        return q.astype(self.compute_dtype), q_sq

    def rank_scores(self, prepared, items, bias, valid):
        """Ranking scores s' [Q,T] float32 of an item tile [T,d] (bias [T] or None; -inf where not valid)."""
        x = items.astype(jnp.float32)
        if self.metric == "cosine":
            x = x / jnp.maximum(jnp.linalg.norm(x, axis=1, keepdims=True), NORM_FLOOR)
        x = x.astype(self.compute_dtype)
        column = jnp.zeros(x.shape[0], jnp.float32) if bias is None else bias.astype(jnp.float32)
        if self.metric == "l2":
            x32 = x.astype(jnp.float32)
            column = (column - jnp.sum(x32 * x32, axis=1)) / 2
        column = jnp.where(valid, column, -jnp.inf)
        q = prepared[0]
        if self.fused_column:
            x = jnp.concatenate([x, column[:, None]], axis=1)
        precision = lax.Precision.HIGHEST if x.dtype == jnp.float32 else lax.Precision.DEFAULT
        scores = lax.dot_general(q, x, (((1,), (1,)), ((), ())), precision=precision,
                                 preferred_element_type=jnp.float32)
        return scores if self.fused_column else scores + column[None, :]

    def true_scores(self, prepared, scores):
        """Ranking scores [..., Q, n] → metric scores (+ bias) [..., Q, n]."""
        return 2 * scores - prepared[1][:, None] if self.metric == "l2" else scores

    def num_variants(self, prepared) -> int:
        return 1

    def init_stats(self, prepared):
        return ()

    def reduce_stats(self, stats, axes):
        return stats

    def tile(self, prepared, stats, parts, valid):
        """``parts`` = (items [T,d], bias [T] if has_bias) → ((), ranking scores [1,Q,T])."""
        return (), self.rank_scores(prepared, parts[0], parts[1] if self.has_bias else None, valid)[None]

    def finalize(self, prepared, scores):
        return self.true_scores(prepared, scores)


def make_scorer(metric: str, queries, items, compute_dtype=None, has_bias: bool = False) -> MetricScorer:
    """Validate the metric and shapes of ``queries`` [Q,d] and ``items`` [N,d] (arrays or anything with
    ``shape`` and ``dtype``); build the scorer."""
    if metric not in METRICS:
        raise JaxrecError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
    if len(queries.shape) != 2 or len(items.shape) != 2:
        raise JaxrecError(
            f"queries and items must be 2-D [Q,d] and [N,d], got shapes {tuple(queries.shape)} and {tuple(items.shape)}"
        )
    if queries.shape[1] != items.shape[1]:
        raise JaxrecError(
            f"embedding dimensions differ: queries {tuple(queries.shape)} vs items {tuple(items.shape)} "
            f"(both need the same last dimension)"
        )
    if items.shape[0] == 0 or queries.shape[0] == 0:
        raise JaxrecError(f"empty input: queries {tuple(queries.shape)}, items {tuple(items.shape)}")
    dtype = jnp.result_type(queries.dtype, items.dtype) if compute_dtype is None else jnp.dtype(compute_dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise JaxrecError(f"compute_dtype must be a floating dtype, got {dtype}")
    return MetricScorer(metric, jnp.dtype(dtype).name, has_bias)


def check_item_vector(name: str, values, n_items: int):
    """A per-item vector (bias, popularity) must have shape [N]; returns it as float32 (or None)."""
    if values is None:
        return None
    if np.shape(values) != (n_items,):
        raise JaxrecError(f"{name} must have shape [{n_items}] (one value per item), got {np.shape(values)}")
    return jnp.asarray(values, jnp.float32)


def check_finite(name: str, all_finite) -> None:
    """Raise if a non-finite embedding was seen (``all_finite`` is a device scalar from the kernel)."""
    if not bool(all_finite):
        raise JaxrecError(f"{name} contain NaN or infinite values; fix the embeddings before ranking")
