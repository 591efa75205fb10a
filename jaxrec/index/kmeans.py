"""k-means in JAX (k-means++ seeding + Lloyd iterations), used to initialise RQ-VAE codebooks."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def squared_distances(x: jax.Array, centers: jax.Array) -> jax.Array:
    """float [..., N, K]: ||x_n - c_k||² for x [..., N, D] and centers [..., K, D] (clamped at 0)."""
    d = (jnp.sum(x * x, -1)[..., :, None] + jnp.sum(centers * centers, -1)[..., None, :]
         - 2 * jnp.einsum("...nd,...kd->...nk", x, centers))
    return jnp.maximum(d, 0.0)


def kmeans_plusplus(key: jax.Array, x: jax.Array, k: int) -> jax.Array:
    """k-means++ seeding: float [k, D] centers drawn from x [N, D] with probability ∝ D(x)²."""
    n = x.shape[0]
    first = x[jax.random.randint(key, (), 0, n)]
    centers = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(first)
    nearest = jnp.sum((x - first) ** 2, -1)

    def add_center(i, carry):
        centers, nearest = carry
        # all points already chosen (N < k or duplicates): fall back to uniform sampling
        logits = jnp.where(nearest.sum() > 0, jnp.log(nearest), 0.0)
        pick = x[jax.random.categorical(jax.random.fold_in(key, i), logits)]
        return centers.at[i].set(pick), jnp.minimum(nearest, jnp.sum((x - pick) ** 2, -1))

    centers, _ = jax.lax.fori_loop(1, k, add_center, (centers, nearest))
    return centers


def lloyd_step(x: jax.Array, centers: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One Lloyd iteration: (new centers [K, D], inertia of the input centers).

    Each center moves to the mean of the points nearest to it; a center with no points stays put.
    """
    d = squared_distances(x, centers)
    labels = jnp.argmin(d, -1)
    inertia = jnp.take_along_axis(d, labels[:, None], -1).sum()
    one_hot = jax.nn.one_hot(labels, centers.shape[0], dtype=x.dtype)  # [N, K]
    counts = one_hot.sum(0)
    sums = one_hot.T @ x
    new = jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1)[:, None], centers)
    return new, inertia


def kmeans(key: jax.Array, x: jax.Array, k: int, iters: int) -> tuple[jax.Array, jax.Array]:
    """k-means of x [N, D] into k clusters: (centers [k, D], inertia before each iteration [iters])."""
    centers = kmeans_plusplus(key, x, k)
    return jax.lax.scan(lambda c, _: lloyd_step(x, c), centers, None, length=iters)
