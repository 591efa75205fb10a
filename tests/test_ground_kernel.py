"""jaxrec.ground.topk / target_ranks against a NumPy brute force (fp32) and torch (topk over torch.mm /
torch.cdist scores; skipped without torch), one device and 8."""

import jax
import numpy as np
import pytest

from jaxrec.errors import JaxrecError
from jaxrec.ground import target_ranks, topk
from jaxrec.parallel.mesh import MeshConfig, make_mesh

Q, N, D = 6, 2500, 16


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    queries = rng.normal(size=(Q, D)).astype(np.float32)
    items = rng.normal(size=(N, D)).astype(np.float32)
    # exact duplicates spread over tiles and shards: ties must go to the lower id
    for copy in (1500, 2499):
        items[copy] = items[7]
    queries[0] = items[7]  # query 0's best three are the duplicates 7, 1500, 2499 (score 0)
    bias = rng.normal(size=N).astype(np.float32)
    return queries, items, bias


@pytest.fixture(scope="module")
def mesh8():
    return make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))


def brute_scores(queries, items, metric, bias=None):
    q, x = queries.astype(np.float64), items.astype(np.float64)
    if metric == "dot":
        s = q @ x.T
    elif metric == "cosine":
        s = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (x / np.linalg.norm(x, axis=1, keepdims=True)).T
    else:
        s = -((q[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    return s if bias is None else s + bias


def canonical_order(scores):
    """Item ids per row sorted by (-score, id)."""
    ids = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    return np.lexsort((ids, -scores), axis=1)


def assert_topk_matches(scores, ids, ref_scores, k):
    """Indices equal to the brute force up to float near-ties; scores equal to fp32 rounding."""
    order = canonical_order(ref_scores)[:, :k]
    expected = np.take_along_axis(ref_scores, order, 1)
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-4)
    got = np.take_along_axis(ref_scores, np.asarray(ids), 1)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)  # same scores at each position
    exact = k == 1 or np.abs(np.diff(expected, axis=1)).min() > 1e-4  # no near-ties: ids must match
    if exact:
        np.testing.assert_array_equal(ids, order)


# Each distinct (metric, k, tile, mesh, bias?, exclude?) is one compilation: the tests below reuse
# these configurations so the whole file compiles about ten kernels.
CONFIGS = {  # name: (metric, k, tile, sharded)
    "l2_hot": ("l2", 50, 1024, False),  # sparse hot-block merge; last tile shifted back (N % 1024 != 0)
    "cosine_small": ("cosine", 5, 96, False),  # many tiles, last one shifted back
    "dot_one_tile": ("dot", 1, 4096, False),  # tile clamped to N: one tile
    "cosine_sharded": ("cosine", 20, 128, True),  # 8 devices, N=2500 padded to 2504
}


def run_topk(data, mesh8, config, bias=None, **kw):
    queries, items, _ = data
    metric, k, tile, sharded = CONFIGS[config]
    return topk(queries, items, k, metric, bias, tile=tile, mesh=mesh8 if sharded else None, **kw)


@pytest.mark.parametrize("config", list(CONFIGS))
def test_topk_matches_brute_force(data, mesh8, config):
    queries, items, bias = data
    metric, k = CONFIGS[config][:2]
    s, i = run_topk(data, mesh8, config, bias)
    assert s.shape == i.shape == (Q, k) and s.dtype == np.float32 and i.dtype == np.int32
    assert_topk_matches(np.asarray(s), np.asarray(i), brute_scores(queries, items, metric, bias), k)


@pytest.mark.parametrize("config", ["l2_hot", "cosine_sharded"])
def test_tie_rule_exact_across_tiles_and_shards(data, mesh8, config):
    s, i = run_topk(data, mesh8, config, np.zeros(N, np.float32))
    np.testing.assert_array_equal(np.asarray(i)[0, :3], [7, 1500, 2499])
    best = np.asarray(s)[0]
    assert best[0] == best[1] == best[2] > best[3]


def test_exclude_removes_items(data, mesh8):
    queries, items, bias = data
    exclude = np.full((Q, 3), -1, np.int32)
    exclude[0] = [7, 1500, -1]
    s, i = run_topk(data, mesh8, "l2_hot", bias, exclude=exclude)
    ref = brute_scores(queries, items, "l2", bias)
    ref[0, [7, 1500]] = -np.inf
    assert 7 not in np.asarray(i[0]) and 1500 not in np.asarray(i[0])
    assert_topk_matches(np.asarray(s), np.asarray(i), ref, 50)


def test_bfloat16_compute_with_fp32_accumulation(data):
    queries, items, _ = data
    s, i = topk(queries, items, 10, "dot", tile=1024, compute_dtype="bfloat16")
    rounded = [np.asarray(jax.numpy.asarray(a, "bfloat16").astype("float32")) for a in (queries, items)]
    assert_topk_matches(np.asarray(s), np.asarray(i), brute_scores(*rounded, "dot"), 10)


def brute_ranks(ref_scores, targets, exclude=None):
    ranks = []
    for row, t in enumerate(targets):
        s, ids = ref_scores[row], np.arange(ref_scores.shape[1])
        keep = ids != t
        if exclude is not None:
            keep &= ~np.isin(ids, exclude[row])
        ranks.append(1 + (((s > s[t]) | ((s == s[t]) & (ids < t))) & keep).sum())
    return np.array(ranks)


RANK_TARGETS = np.array([1500, 0, 2499, 1234, 42, 2000])
RANK_EXCLUDE = np.array([[7, -1], [1, 2], [-1, -1], [5, 9], [42, 43], [100, 2001]])


@pytest.mark.parametrize("metric,sharded", [("l2", False), ("dot", True)])
def test_target_ranks_match_brute_force(data, mesh8, metric, sharded):
    queries, items, bias = data
    mesh = mesh8 if sharded else None
    ranks = target_ranks(queries, items, RANK_TARGETS, metric, bias, exclude=RANK_EXCLUDE, tile=300, mesh=mesh)
    ref = brute_scores(queries, items, metric, bias).astype(np.float32)
    np.testing.assert_array_equal(ranks, brute_ranks(ref, RANK_TARGETS, RANK_EXCLUDE))
    assert ranks.dtype == np.int32
    # duplicates of query 0's item (ids 7 < 1500 < 2499, all score 0 under l2): ties go to the lower id
    if metric == "l2":
        no_exclude = np.full_like(RANK_EXCLUDE, -1)
        for target, rank in ((7, 1), (1500, 2), (2499, 3)):
            targets = RANK_TARGETS.copy()
            targets[0] = target
            ranks = target_ranks(queries, items, targets, "l2", np.zeros(N, np.float32), exclude=no_exclude, tile=300)
            assert int(ranks[0]) == rank


def torch_scores(queries, items, metric, bias):
    """The peer's fp32 score matrix [Q, N]: torch.mm (cosine on F.normalize'd rows) or -torch.cdist²."""
    torch = pytest.importorskip("torch")
    q, x = torch.from_numpy(queries), torch.from_numpy(items)
    if metric == "cosine":
        q, x = torch.nn.functional.normalize(q, dim=1), torch.nn.functional.normalize(x, dim=1)
    s = -torch.cdist(q, x) ** 2 if metric == "l2" else q @ x.T
    return s + torch.from_numpy(bias)


@pytest.mark.parametrize("config", list(CONFIGS))
def test_topk_and_target_ranks_match_torch(data, mesh8, config):
    """Peer: torch.topk of the torch scores gives the same scores, and the same ids wherever torch's
    list has no near-tie; target ranks equal the count of torch scores ahead of the target's."""
    queries, items, bias = data
    metric, k, tile, sharded = CONFIGS[config]
    peer = torch_scores(queries, items, metric, bias)
    ext_s, ext_i = (t.numpy() for t in peer.topk(k + 1, dim=1))  # one more: the k-th score's next neighbour
    peer_s, peer_i = ext_s[:, :k], ext_i[:, :k]
    s, i = (np.asarray(a) for a in run_topk(data, mesh8, config, bias))
    full = peer.numpy()
    np.testing.assert_allclose(s, peer_s, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(np.take_along_axis(full, i, 1), peer_s, rtol=1e-5, atol=1e-4)
    apart = np.abs(np.diff(ext_s, axis=1)) > 1e-4  # [Q, k]: position j is apart from position j+1
    clear = apart & np.concatenate([np.ones((Q, 1), bool), apart[:, :-1]], 1)  # ... and from j-1
    assert clear.mean() > 0.9  # the id check below covers most positions
    np.testing.assert_array_equal(np.where(clear, i, -1), np.where(clear, peer_i, -1))

    at_target = full[np.arange(Q), RANK_TARGETS][:, None]  # [Q, 1]
    others = np.where(np.arange(N) == RANK_TARGETS[:, None], np.inf, full)
    assert np.abs(others - at_target).min() > 1e-5  # no near-tie with a target: the count below is robust
    ahead = (full > at_target) | ((full == at_target) & (np.arange(N) < RANK_TARGETS[:, None]))
    ranks = target_ranks(queries, items, RANK_TARGETS, metric, bias, tile=tile, mesh=mesh8 if sharded else None)
    np.testing.assert_array_equal(np.asarray(ranks), ahead.sum(1) + 1)


def test_clear_errors(data):
    queries, items, _ = data
    with pytest.raises(JaxrecError, match="dimensions differ"):
        topk(queries[:, :8], items, 5)
    with pytest.raises(JaxrecError, match=r"k must be an integer in \[1, 2500\]"):
        topk(queries, items, N + 1)
    with pytest.raises(JaxrecError, match="unknown metric"):
        topk(queries, items, 5, "manhattan")
    with pytest.raises(JaxrecError, match="item_bias must have shape"):
        topk(queries, items, 5, item_bias=np.zeros(3))
    with pytest.raises(JaxrecError, match="tile must be a positive"):
        topk(queries, items, 5, tile=0)
    with pytest.raises(JaxrecError, match="targets must be item ids"):
        target_ranks(queries, items, np.full(Q, N))
    bad = items.copy()
    bad[2222, 3] = np.nan
    with pytest.raises(JaxrecError, match="NaN"):
        topk(queries, bad, 1, "dot", tile=4096)
    nan_query = np.where(np.arange(Q)[:, None] == 2, np.nan, queries).astype(np.float32)
    with pytest.raises(JaxrecError, match="NaN"):
        target_ranks(nan_query, items, RANK_TARGETS, "l2", np.zeros(N, np.float32), exclude=RANK_EXCLUDE, tile=300)


def test_sparse_hot_block_merge_equals_full_merge():
    """merge_tile's sparse path (few hot blocks) and full path agree, ties included."""
    from jaxrec.ground.topk import merge_tile

    best_s = np.array([[10.0, 9.0, 8.0, 7.0]] * 3, np.float32)
    best_i = np.array([[0, 1, 2, 3]] * 3, np.int32)
    scores = np.zeros((3, 64), np.float32)
    scores[0, [5, 6, 40]] = [8.0, 9.5, 8.0]  # two hot blocks (1 and 10); 8.0 ties go to the running id 2
    scores[1, 17] = 7.0  # equal to the k-th score: loses the tie, no hot block
    scores[2, [1, 20, 50]] = 11.0  # three hot blocks > budget 2: this row needs the full merge
    ids = np.arange(100, 164, dtype=np.int32)
    full = merge_tile(best_s, best_i, scores, ids, 4, block=4, budget=16)  # 16 blocks <= budget: full merge
    np.testing.assert_array_equal(full[1], [[0, 106, 1, 2], [0, 1, 2, 3], [101, 120, 150, 0]])
    for rows in (slice(0, 2), slice(0, 3)):  # rows 0-1: sparse path; with row 2: falls back to full
        sparse = merge_tile(best_s[rows], best_i[rows], scores[rows], ids, 4, block=4, budget=2)
        np.testing.assert_array_equal(sparse[0], full[0][rows])
        np.testing.assert_array_equal(sparse[1], full[1][rows])


@pytest.mark.parametrize("peer", ["torch", "none"])
def test_bench_ground_prints_json_with_the_peer_side_by_side(peer, capsys):
    """`jaxrec bench ground` on a tiny catalog: JSON on stdout, the peer measured beside ours."""
    import json

    from jaxrec.cli import main

    assert main(["bench", "ground", "--queries", "8", "--items", "3000", "--dim", "16", "--k", "5",
                 "--peer", peer]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["queries_per_s"] > 0 and "indices" not in result
    if peer == "torch":
        assert result["peer_queries_per_s"] > 0 and result["topk_agreement"] == 1.0 and result["speedup_vs_peer"] > 0
    else:
        assert "peer_queries_per_s" not in result
