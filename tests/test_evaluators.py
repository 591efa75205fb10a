"""The evaluator kinds of jaxrec.eval.evaluators against brute force."""

import numpy as np
import pytest

from jaxrec.eval import evaluators


def brute_l2_rank(query, items, target, excluded=()):
    """1-based rank of ``target`` by L2 distance (closest first, ties to the lower id) without ``excluded``."""
    dist = ((items - query) ** 2).sum(axis=1)
    kept = [i for i in range(len(items)) if i == target or i not in set(excluded)]
    return sorted(kept, key=lambda i: (dist[i], i)).index(target) + 1


def test_grounding_ranks_every_item_and_leaves_out_the_excluded_ones():
    rng = np.random.default_rng(0)
    items = rng.integers(-3, 4, size=(40, 4)).astype(np.float32)  # small integers: exact distances, many ties
    queries = {"test": rng.integers(-3, 4, size=(12, 4)).astype(np.float32)}
    targets = {"test": rng.integers(0, 40, size=12)}
    histories = [rng.choice(40, size=int(rng.integers(0, 6)), replace=False).tolist() for _ in range(12)]
    histories[0] = [int(targets["test"][0])] + histories[0]  # a target in its own history stays ranked
    ks = (1, 5, 10)
    plain = evaluators.grounding(queries, items, targets, ks)["test"]
    kept = evaluators.grounding(queries, items, targets, ks, {"test": evaluators.padded_ids(histories)})["test"]
    for got, excluded in ((plain, [()] * 12), (kept, histories)):
        ranks = np.asarray([brute_l2_rank(q, items, t, h)
                            for q, t, h in zip(queries["test"], targets["test"], excluded)])
        assert got["MRR"] == pytest.approx(np.mean(1 / ranks))
        assert got["HR@5"] == pytest.approx(np.mean(ranks <= 5))
    assert kept["MRR"] > plain["MRR"]  # these histories do hold items closer than some targets


def test_padded_ids_and_protocol_labels():
    np.testing.assert_array_equal(evaluators.padded_ids([[3, 1], [], [2]]), [[3, 1], [-1, -1], [2, -1]])
    assert evaluators.padded_ids([[], []]).shape == (2, 1)
    assert evaluators.protocol("scores", 10).endswith("history items kept in the ranking")
    assert evaluators.protocol("grounding", 10, exclude_history=True).endswith("history items excluded")
    assert "20 beams" in evaluators.protocol("constrained", 10, num_beams=20)
