"""InfoNCE with in-batch negatives, and the gathers that pick representations out of hidden states.

``info_nce(queries, keys, valid, temperature, labels)``: row i's positive is key i; its negatives
are every other valid key whose label differs from label i (a key of the same item is neither a
positive nor a negative: no false negatives from repeated items). Similarities are cosine / temperature:

    loss_i = -log( exp(s_ii) / (exp(s_ii) + sum_{j valid, j != i, label_j != label_i} exp(s_ij)) )

and the loss is the mean over valid rows (0 when there is none). Everything is static-shape: invalid
rows/keys are masked, never removed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

NORM_EPS = 1e-6


def _normalize(x: jax.Array) -> jax.Array:
    x = x.astype(jnp.float32)
    return x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + NORM_EPS)


def info_nce(queries: jax.Array, keys: jax.Array, valid: jax.Array, temperature: float,
             labels: jax.Array | None = None) -> jax.Array:
    """queries, keys [N,d]; valid bool [N]; labels int [N] (None: all distinct) → scalar float32 loss."""
    n = queries.shape[0]
    logits = _normalize(queries) @ _normalize(keys).T / temperature  # [N,N]
    eye = jnp.eye(n, dtype=bool)
    distinct = ~eye if labels is None else labels[:, None] != labels[None, :]
    allowed = eye | (valid[None, :] & distinct)  # the diagonal keeps every row finite
    logits = jnp.where(allowed, logits, -jnp.inf)
    per_row = jax.nn.logsumexp(logits, axis=1) - jnp.diagonal(logits)
    weights = valid.astype(jnp.float32)
    return jnp.sum(jnp.where(valid, per_row, 0.0)) / jnp.maximum(weights.sum(), 1.0)


def gather_positions(hidden: jax.Array, positions: jax.Array) -> jax.Array:
    """hidden [B,T,d], positions int [B,M] → [B,M,d] (positions clipped into [0, T))."""
    positions = jnp.clip(positions, 0, hidden.shape[1] - 1)
    return jnp.take_along_axis(hidden, positions[..., None], axis=1)


def first_positions(flags: jax.Array, count: int) -> tuple[jax.Array, jax.Array]:
    """flags bool [B,T] → (positions int [B,M] of the first ``M = min(count, T)`` flagged positions in
    order, valid bool [B,M]); rows with fewer flags are filled with unflagged positions, marked invalid."""
    order = jnp.argsort(~flags, axis=1, stable=True)[:, : min(count, flags.shape[1])]
    return order, jnp.take_along_axis(flags, order, axis=1)
