"""Sinkhorn-Knopp: a near-uniform soft assignment of rows (items) to K columns (codes).

Used as in LC-Rec: on the last RQ-VAE level during training (one group: the minibatch) and when
re-assigning colliding items (many groups at once: each collision group is its own transport problem,
given as a group id per row). The iteration runs in the log domain, so the small ε LC-Rec uses (0.003
on costs scaled to [-1, 1], i.e. exp(±333)) stays finite in float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _group_reduce(op: str, x: jax.Array, groups: jax.Array | None, num_groups: int) -> jax.Array:
    """Reduce x [N, ...] over the rows of each group → [G, ...] (one group: a plain reduction)."""
    if groups is None:
        return getattr(jnp, op)(x, axis=0, keepdims=True)
    segment = {"max": jax.ops.segment_max, "min": jax.ops.segment_min, "sum": jax.ops.segment_sum}[op]
    return segment(x, groups, num_segments=num_groups)


def _row_group(groups: jax.Array | None, n: int) -> jax.Array:
    return jnp.zeros(n, jnp.int32) if groups is None else groups


def center_costs(costs: jax.Array, mask: jax.Array | None = None, groups: jax.Array | None = None,
                 num_groups: int = 1) -> jax.Array:
    """Scale ``costs`` [N, K] affinely to [-1, 1] within each group (entries where ``mask`` is False ignored).

    This makes ε comparable across batches, as LC-Rec does before its Sinkhorn step.
    """
    if mask is None:
        mask = jnp.ones(costs.shape, bool)
    g = _row_group(groups, costs.shape[0])
    hi = _group_reduce("max", jnp.max(jnp.where(mask, costs, -jnp.inf), -1), groups, num_groups)[g]
    lo = _group_reduce("min", jnp.min(jnp.where(mask, costs, jnp.inf), -1), groups, num_groups)[g]
    mid = (hi + lo) / 2
    return (costs - mid[:, None]) / (hi - mid + 1e-5)[:, None]


def sinkhorn_log_plan(costs: jax.Array, epsilon: float, iters: int, row_mask: jax.Array | None = None,
                      col_mask: jax.Array | None = None, groups: jax.Array | None = None,
                      num_groups: int = 1) -> jax.Array:
    """Log of the entropic transport plan between uniform rows and uniform columns, per group.

    Args:
      costs: float [N, K] (e.g. :func:`center_costs` of squared distances).
      epsilon: entropy weight; smaller = closer to a hard, cost-minimising assignment.
      iters: Sinkhorn iterations (each normalises rows, then columns).
      row_mask: bool [N], False for padding rows (they get no mass).
      col_mask: bool [G, K], the columns each group may use.
      groups: int [N] group id of each row in 0..num_groups-1 (None: all rows form one group).
    Returns:
      float [N, K] log plan: in each group, every valid row sums to 1 and every allowed column to
      n_rows / n_cols of that group; masked entries are -inf.
    """
    n, k = costs.shape
    g = _row_group(groups, n)
    row_mask = jnp.ones(n, bool) if row_mask is None else row_mask
    col_mask = jnp.ones((num_groups, k), bool) if col_mask is None else col_mask
    mask = row_mask[:, None] & col_mask[g]
    log_rows = jnp.log(jnp.maximum(_group_reduce("sum", row_mask.astype(costs.dtype), groups, num_groups), 1))
    log_rows = log_rows.reshape(num_groups)[g][:, None]  # log n_g per row
    log_cols = jnp.log(jnp.maximum(col_mask.sum(-1), 1).astype(costs.dtype))[g][:, None]  # log k_g per row

    def normalise_rows(log_q):  # each row carries 1/n_g of its group's mass
        lse = jax.nn.logsumexp(log_q, axis=-1, keepdims=True, where=mask)
        return jnp.where(mask, log_q - lse - log_rows, -jnp.inf)

    def normalise_cols(log_q):  # each column receives 1/k_g of its group's mass
        top = _group_reduce("max", log_q, groups, num_groups)
        top = jnp.where(jnp.isfinite(top), top, 0.0)[g]
        total = _group_reduce("sum", jnp.where(mask, jnp.exp(log_q - top), 0.0), groups, num_groups)[g]
        return jnp.where(mask, log_q - top - jnp.log(total) - log_cols, -jnp.inf)

    log_q = jnp.where(mask, -costs / epsilon, -jnp.inf)
    log_q = jax.lax.fori_loop(0, iters, lambda _, q: normalise_cols(normalise_rows(q)), log_q)
    return log_q + log_rows


def sinkhorn_assign(costs: jax.Array, epsilon: float, iters: int) -> jax.Array:
    """int32 [N]: each row's most likely column under the plan for :func:`center_costs` of ``costs`` [N, K]."""
    log_plan = sinkhorn_log_plan(center_costs(costs), epsilon, iters)
    return jnp.argmax(log_plan, axis=-1).astype(jnp.int32)
