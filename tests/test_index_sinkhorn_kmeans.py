"""Sinkhorn-Knopp marginals and k-means (against a NumPy Lloyd step)."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxrec.index.kmeans import kmeans, lloyd_step
from jaxrec.index.sinkhorn import center_costs, sinkhorn_log_plan


def test_sinkhorn_marginals_per_group_with_masks():
    rng = np.random.default_rng(0)
    costs = jnp.asarray(rng.uniform(size=(24, 8)), jnp.float32)
    groups = jnp.asarray([0] * 12 + [1] * 12)
    rows = jnp.asarray([True] * 12 + [True] * 5 + [False] * 7)
    cols = jnp.asarray([[True] * 8, [True, False] * 4])
    mask = np.asarray(rows[:, None] & cols[groups])

    @jax.jit
    def plans(costs):
        grouped = sinkhorn_log_plan(center_costs(costs, jnp.asarray(mask), groups, 2), 0.05, 200, rows, cols, groups, 2)
        alone = sinkhorn_log_plan(center_costs(costs[:12]), 0.05, 200)
        return jnp.exp(grouped), jnp.exp(alone)

    plan, one_group = map(np.asarray, plans(costs))
    for g, (n, k) in enumerate([(12, 8), (5, 4)]):
        block = plan[12 * g:12 * g + n][:, np.asarray(cols[g])]
        np.testing.assert_allclose(block.sum(1), 1.0, atol=1e-3)
        np.testing.assert_allclose(block.sum(0), n / k, atol=1e-3)
    assert plan[~mask].sum() == 0 and np.all(np.isfinite(plan))  # no mass on masked rows/columns
    np.testing.assert_allclose(one_group, plan[:12], atol=1e-5)  # groups are independent problems


def test_lloyd_step_matches_numpy_and_kmeans_reduces_inertia():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(loc, 0.3, size=(40, 3)) for loc in (-3, 0, 3)]).astype(np.float32)
    centers = x[[0, 1, 2, 3]]
    new, inertia = jax.jit(lloyd_step)(jnp.asarray(x), jnp.asarray(centers))
    d = ((x[:, None] - centers[None]) ** 2).sum(-1)
    labels = d.argmin(1)
    expected = np.stack([x[labels == j].mean(0) if np.any(labels == j) else centers[j] for j in range(4)])
    np.testing.assert_allclose(np.asarray(new), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(float(inertia), d.min(1).sum(), rtol=1e-5)

    _, history = jax.jit(kmeans, static_argnums=(2, 3))(jax.random.key(0), jnp.asarray(x), 3, 5)
    history = np.asarray(history)
    assert np.all(np.diff(history) <= 1e-3 * history[0])  # Lloyd never increases the inertia
    assert history[-1] < 0.3**2 * 3 * len(x) * 1.5  # found the three clusters
