"""Similarity scores between queries and a tile of catalog items (higher is always better).

Score of query ``q`` and item ``x`` per metric (``b`` the optional per-item bias):

* ``"dot"``:    ``q·x + b``
* ``"cosine"``: ``(q/|q|)·(x/|x|) + b``  (norms floored at 1e-12, as ``torch.nn.functional.normalize``)
* ``"l2"``:     ``-|q - x|² + b``  — the *negative squared* Euclidean distance, computed as
  ``2 q·x - |x|² - |q|²`` so a tile costs one matmul. Its ranking equals ranking by distance.

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

    The scorer protocol shared with :class:`jaxrec.ground.fusion.FusionScorer`: ``stat_phases``
    passes collect per-query statistics (none here) before the ranking pass; ``tile`` returns the
    statistics of one tile and the scores [G,Q,T] (G score variants; G = 1 here).
    """

    metric: str
    compute_dtype: str
    has_bias: bool = False
    stat_phases = 0

    def prepare(self, replicated):
        """``(queries [Q,d],)`` → (matmul operand [Q,d] in compute_dtype, |q|² [Q] float32)."""
        (queries,) = replicated
        return self.prepare_queries(queries)

    def prepare_queries(self, queries):
        q = queries.astype(jnp.float32)
        if self.metric == "cosine":
            q = q / jnp.maximum(jnp.linalg.norm(q, axis=1, keepdims=True), NORM_FLOOR)
        q = q.astype(self.compute_dtype)
        q32 = q.astype(jnp.float32)
        return q, jnp.sum(q32 * q32, axis=1)

    def raw_scores(self, prepared, items):
        """Metric scores [Q,T] float32 of prepared queries against an item tile [T,d]."""
        q, q_sq = prepared[0], prepared[1]
        x = items.astype(self.compute_dtype)
        precision = lax.Precision.HIGHEST if x.dtype == jnp.float32 else lax.Precision.DEFAULT
        dot = lax.dot_general(q, x, (((1,), (1,)), ((), ())), precision=precision,
                              preferred_element_type=jnp.float32)
        if self.metric == "dot":
            return dot
        x32 = x.astype(jnp.float32)
        x_sq = jnp.sum(x32 * x32, axis=1)
        if self.metric == "cosine":
            return dot / jnp.maximum(jnp.sqrt(x_sq), NORM_FLOOR)[None, :]
        return 2.0 * dot - x_sq[None, :] - q_sq[:, None]

    def num_variants(self, prepared) -> int:
        return 1

    def init_stats(self, prepared):
        return ()

    def reduce_stats(self, stats, axes):
        return stats

    def tile(self, prepared, stats, parts, valid):
        """``parts`` = (items [T,d], bias [T] if has_bias) → ((), scores [1,Q,T])."""
        scores = self.raw_scores(prepared, parts[0])
        if self.has_bias:
            scores = scores + parts[1][None, :]
        return (), scores[None]


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
