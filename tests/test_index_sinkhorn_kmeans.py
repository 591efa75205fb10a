"""Sinkhorn-Knopp marginals and k-means (against a NumPy Lloyd step)."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxrec.index.kmeans import kmeans, lloyd_step
from jaxrec.index.sinkhorn import center_costs, sinkhorn_log_plan


def test_sinkhorn_marginals_with_and_without_masks():
    rng = np.random.default_rng(0)
    costs = jnp.asarray(rng.uniform(size=(2, 12, 8)), jnp.float32)
    rows = jnp.asarray([[True] * 12, [True] * 5 + [False] * 7])
    cols = jnp.asarray([[True] * 8, [True, False] * 4])
    mask = rows[:, :, None] & cols[:, None, :]
    plan = np.asarray(jnp.exp(sinkhorn_log_plan(center_costs(costs, mask), 0.05, 200, rows, cols)))
    for b, (n, k) in enumerate([(12, 8), (5, 4)]):
        valid = plan[b][np.asarray(rows[b])][:, np.asarray(cols[b])]
        np.testing.assert_allclose(valid.sum(1), 1.0, atol=1e-3)
        np.testing.assert_allclose(valid.sum(0), n / k, atol=1e-3)
        assert plan[b][~np.asarray(mask[b])].sum() == 0  # no mass on masked rows/columns
    assert np.all(np.isfinite(plan))


def test_lloyd_step_matches_numpy_and_kmeans_reduces_inertia():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(loc, 0.3, size=(40, 3)) for loc in (-3, 0, 3)]).astype(np.float32)
    centers = x[[0, 1, 2, 3]]
    new, inertia = lloyd_step(jnp.asarray(x), jnp.asarray(centers))
    d = ((x[:, None] - centers[None]) ** 2).sum(-1)
    labels = d.argmin(1)
    expected = np.stack([x[labels == j].mean(0) if np.any(labels == j) else centers[j] for j in range(4)])
    np.testing.assert_allclose(np.asarray(new), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(float(inertia), d.min(1).sum(), rtol=1e-5)

    _, history = kmeans(jax.random.key(0), jnp.asarray(x), 3, 5)
    history = np.asarray(history)
    assert np.all(np.diff(history) <= 1e-3 * history[0])  # Lloyd never increases the inertia
    assert history[-1] < 0.3**2 * 3 * len(x) * 1.5  # found the three clusters
