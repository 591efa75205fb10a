"""BIGRec score fusion against a direct NumPy implementation of BIGRec's formula."""

import numpy as np
import pytest

from jaxrec.errors import JaxrecError
from jaxrec.ground import CF_GAMMAS, POPULARITY_GAMMAS, choose_gamma, fused_target_ranks, fused_topk, minmax
from jaxrec.parallel.mesh import MeshConfig, make_mesh

Q, N, D = 5, 301, 8
GAMMAS = np.array([0.0, 0.5, 1.0, 3.0, 10.0], np.float32)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(1)
    queries = rng.normal(size=(Q, D)).astype(np.float32)
    items = rng.normal(size=(N, D)).astype(np.float32)
    popularity = minmax(rng.poisson(3.0, size=N))  # BIGRec: counts min-max normalised over items
    cf = minmax(rng.normal(size=(Q, N)), axis=1)  # BIGRec: per-query scores min-max normalised per row
    targets = rng.integers(0, N, size=Q)
    return queries, items, popularity, cf, targets


def numpy_fused(queries, items, weights, gamma):
    """BIGRec: cdist → min-max per query over items → × (1 + C)^-γ (lower is better)."""
    dist = np.sqrt(((queries[:, None, :].astype(np.float64) - items[None]) ** 2).sum(-1))
    low, high = dist.min(1, keepdims=True), dist.max(1, keepdims=True)
    return (dist - low) / (high - low) * (1.0 + weights) ** (-gamma)


def numpy_order(fused):
    return np.lexsort((np.broadcast_to(np.arange(fused.shape[1]), fused.shape), fused), axis=1)


@pytest.mark.parametrize("weights_kind,sharded", [("popularity", False), ("cf", True)])
def test_fusion_matches_numpy(data, weights_kind, sharded):
    queries, items, popularity, cf, targets = data
    weights = popularity if weights_kind == "popularity" else cf
    mesh = make_mesh(MeshConfig(data=8)) if sharded else None
    ranks = fused_target_ranks(queries, items, targets, weights, GAMMAS, tile=64, mesh=mesh)
    assert ranks.shape == (len(GAMMAS), Q)
    for g, gamma in enumerate(GAMMAS):
        rank_of = np.argsort(numpy_order(numpy_fused(queries, items, weights, gamma)), axis=1) + 1
        np.testing.assert_array_equal(ranks[g], rank_of[np.arange(Q), targets])


def test_fused_topk_matches_numpy(data):
    queries, items, popularity, _, _ = data
    scores, ids = fused_topk(queries, items, popularity, 3.0, 7, tile=64)
    fused = numpy_fused(queries, items, popularity, 3.0)
    order = numpy_order(fused)[:, :7]
    np.testing.assert_array_equal(ids, order)
    np.testing.assert_allclose(-np.asarray(scores), np.take_along_axis(fused, order, 1), atol=1e-6)


def test_choose_gamma_per_metric_smallest_wins_ties():
    ranks = np.array([[1, 9, 30], [2, 2, 2], [1, 1, 60], [1, 1, 60]])
    gammas = np.array([0.0, 1.0, 2.0, 3.0])
    metrics = {
        "hr@1": lambda r: np.mean(r <= 1),
        "hr@5": lambda r: np.mean(r <= 5),
        "ndcg@50": lambda r: np.mean(np.where(r <= 50, 1 / np.log2(r + 1), 0.0)),
    }
    best = choose_gamma(ranks, gammas, metrics)
    assert best["hr@1"] == (2.0, 2 / 3)
    assert best["hr@5"][0] == 1.0  # γ=1 (all three hit) beats γ=2 (two hit)
    assert best["ndcg@50"][0] == 2.0  # γ=2 and γ=3 tie: the smaller γ wins
    with pytest.raises(JaxrecError, match="one row per gamma"):
        choose_gamma(ranks[:2], gammas, metrics)


def test_bigrec_grids_and_minmax():
    assert POPULARITY_GAMMAS[0] == 0 and POPULARITY_GAMMAS[-1] == 99 and len(POPULARITY_GAMMAS) == 100
    assert len(CF_GAMMAS) == 199 and CF_GAMMAS[1] == np.float32(0.01) and CF_GAMMAS[100] == 1
    np.testing.assert_allclose(minmax([[2.0, 4.0, 3.0], [5.0, 5.0, 5.0]]), [[0, 1, 0.5], [0, 0, 0]])


def test_fusion_rejects_bad_weights(data):
    queries, items, _, _, targets = data
    with pytest.raises(JaxrecError, match=r"per-query weights C must have shape \[Q=5, N=301\]"):
        fused_target_ranks(queries, items, targets, np.zeros((Q, N - 1)), GAMMAS)
    with pytest.raises(JaxrecError, match="weights C must have shape"):
        fused_topk(queries, items, np.zeros(N + 1), 1.0, 5)
