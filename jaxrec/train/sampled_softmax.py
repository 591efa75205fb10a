"""Sampled softmax with logQ correction: the full-catalog cross-entropy estimated from a few sampled items.

Query ``m`` (hidden state ``h_m``, positive item ``p_m``) is scored against its positive and ``K``
negatives ``n_1..n_K`` drawn with replacement from a proposal ``Q`` over the catalog and shared by every
query of the batch. Each logit is corrected by the log-probability of drawing its item:

    c(i) = <h_m, E_i> - log q(i)
    loss_m = log( exp c(p_m) + sum_k [n_k != p_m] exp c(n_k) ) - c(p_m)

Subtracting ``log q`` (Bengio & Senecal 2008; Yi et al. 2019, "sampling-bias-corrected") makes the sampled
partition sum an estimate of the full one, so popular items drawn often are not over-penalised. A
negative equal to the query's positive (an accidental hit) is left out. With a uniform ``Q`` the
correction is one constant and cancels. Cost O(M * K) instead of O(M * N).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def sampled_softmax_cross_entropy(hidden: jax.Array, table: jax.Array, labels: jax.Array, negatives: jax.Array,
                                  label_log_q: jax.Array, negative_log_q: jax.Array) -> jax.Array:
    """hidden [M, d], table [N, d], labels int [M], negatives int [K] (shared), log q of each: [M], [K] → losses [M]."""
    positive = jnp.sum(hidden * table[labels], axis=-1) - label_log_q  # [M]
    sampled = hidden @ table[negatives].T - negative_log_q[None, :]  # [M, K]
    sampled = jnp.where(negatives[None, :] == labels[:, None], -jnp.inf, sampled)
    return jax.nn.logsumexp(jnp.concatenate([positive[:, None], sampled], axis=1), axis=-1) - positive
