"""Sinkhorn-Knopp: a near-uniform soft assignment of N rows (items) to K columns (codes).

Used as in LC-Rec: on the last RQ-VAE level during training and when re-assigning colliding items,
so that items spread evenly over the codes instead of crowding the nearest one. The iteration runs in
the log domain, so the small ε LC-Rec uses (0.003 on costs scaled to [-1, 1], i.e. exp(±333)) stays
finite in float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def center_costs(costs: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Scale ``costs`` [..., N, K] affinely to [-1, 1] over the last two axes (masked entries ignored).

    This makes ε comparable across batches, as LC-Rec does before its Sinkhorn step.
    """
    if mask is None:
        mask = jnp.ones(costs.shape, bool)
    hi = jnp.max(jnp.where(mask, costs, -jnp.inf), axis=(-2, -1), keepdims=True)
    lo = jnp.min(jnp.where(mask, costs, jnp.inf), axis=(-2, -1), keepdims=True)
    mid = (hi + lo) / 2
    return (costs - mid) / (hi - mid + 1e-5)


def sinkhorn_log_plan(costs: jax.Array, epsilon: float, iters: int,
                      row_mask: jax.Array | None = None, col_mask: jax.Array | None = None) -> jax.Array:
    """Log of the entropic transport plan between uniform rows and uniform columns.

    Args:
      costs: float [..., N, K] (e.g. :func:`center_costs` of squared distances).
      epsilon: entropy weight; smaller = closer to a hard, cost-minimising assignment.
      iters: Sinkhorn iterations (each normalises rows, then columns).
      row_mask: bool [..., N], False for padding rows (they get no mass).
      col_mask: bool [..., K], False for forbidden columns.
    Returns:
      float [..., N, K] log plan, scaled so each valid row sums to 1 and each valid column to
      n_rows / n_cols; masked entries are -inf.
    """
    n, k = costs.shape[-2:]
    if row_mask is None:
        row_mask = jnp.ones(costs.shape[:-1], bool)
    if col_mask is None:
        col_mask = jnp.ones(costs.shape[:-2] + (k,), bool)
    mask = row_mask[..., :, None] & col_mask[..., None, :]
    n_rows = jnp.maximum(row_mask.sum(-1), 1).astype(costs.dtype)[..., None, None]
    n_cols = jnp.maximum(col_mask.sum(-1), 1).astype(costs.dtype)[..., None, None]
    log_q = jnp.where(mask, -costs / epsilon, -jnp.inf)

    def normalise(log_q, axis, log_target):
        lse = jax.nn.logsumexp(log_q, axis=axis, keepdims=True, where=mask)
        return jnp.where(mask, log_q - lse + log_target, -jnp.inf)

    def step(_, log_q):
        log_q = normalise(log_q, -1, -jnp.log(n_rows))  # each row carries 1/n of the mass
        return normalise(log_q, -2, -jnp.log(n_cols))  # each column receives 1/k of the mass

    log_q = jax.lax.fori_loop(0, iters, step, log_q)
    return log_q + jnp.log(n_rows)


def sinkhorn_assign(costs: jax.Array, epsilon: float, iters: int) -> jax.Array:
    """int32 [N]: each row's most likely column under the plan of :func:`center_costs` ``costs`` [N, K]."""
    log_plan = sinkhorn_log_plan(center_costs(costs), epsilon, iters)
    return jnp.argmax(log_plan, axis=-1).astype(jnp.int32)
