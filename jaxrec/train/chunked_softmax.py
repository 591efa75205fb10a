"""Full-softmax cross-entropy over a large catalog without materialising the [M, N] logits.

The catalog's rows are visited in chunks of ``chunk`` items under one ``lax.scan`` that keeps a running
log-sum-exp per query; the scan body is rematerialised, so the backward pass recomputes each chunk's
logits instead of storing them. Peak memory is O(M * chunk) instead of O(M * N): a 1M-item SASRec
catalog at B=128, T=50 needs 25 GB of fp32 logits, chunked by 8,192 items about 210 MB. The result
equals ``optax.softmax_cross_entropy_with_integer_labels(hidden @ table.T, labels)`` (values and
gradients, up to float rounding).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def chunked_softmax_cross_entropy(hidden: jax.Array, table: jax.Array, labels: jax.Array, chunk: int) -> jax.Array:
    """hidden [M, d] (queries), table [N, d] (item embeddings), labels int [M] in [0, N) → losses [M]."""
    num_items, dim = table.shape
    chunks = -(-num_items // chunk)
    padded = jnp.pad(table, ((0, chunks * chunk - num_items), (0, 0))).reshape(chunks, chunk, dim)
    valid = (jnp.arange(chunks * chunk) < num_items).reshape(chunks, chunk)

    @jax.checkpoint
    def body(carry, xs):
        running_max, running_sum = carry
        rows, keep = xs
        logits = jnp.where(keep[None, :], hidden @ rows.T, -jnp.inf)  # [M, chunk]
        new_max = jnp.maximum(running_max, jnp.max(logits, axis=-1))
        running_sum = running_sum * jnp.exp(running_max - new_max) + jnp.sum(jnp.exp(logits - new_max[:, None]), -1)
        return (new_max, running_sum), None

    start = (jnp.full(hidden.shape[:1], -jnp.inf, hidden.dtype), jnp.zeros(hidden.shape[:1], hidden.dtype))
    (top, total), _ = jax.lax.scan(body, start, (padded, valid))
    target = jnp.sum(hidden * table[labels], axis=-1)
    return top + jnp.log(total) - target
