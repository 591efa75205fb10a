"""Full-catalog metrics against hand-computed values, including the canonical tie rule."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxrec.errors import JaxrecError
from jaxrec.eval.ranking import ranks_from_scores
from jaxrec.eval.metrics import (list_metrics, metrics_from_ranks, ranks_from_topk,
                                 recall_at_k)
from jaxrec.eval.ranking import batched_ranks


def test_metrics_from_ranks_hand_computed():
    m = metrics_from_ranks(np.array([1, 3, 12]), ks=(1, 5, 10))
    assert m["users"] == 3
    assert m["HR@1"] == pytest.approx(1 / 3)
    assert m["HR@5"] == pytest.approx(2 / 3)
    assert m["HR@10"] == pytest.approx(2 / 3)
    assert m["NDCG@1"] == pytest.approx(1 / 3)
    assert m["NDCG@5"] == pytest.approx((1.0 + 1.0 / math.log2(4)) / 3)  # rank 3 -> 1/log2(4) = 0.5
    assert m["NDCG@10"] == pytest.approx(0.5)
    assert m["MRR"] == pytest.approx((1 + 1 / 3 + 1 / 12) / 3)


def test_ties_go_to_the_lower_item_id():
    scores = jnp.array([[0.5, 0.9, 0.5, 0.5, 0.1]] * 3)
    # item 1 beats everyone; items 0, 2, 3 tie: 0 first, then 2, then 3; item 4 last.
    ranks = ranks_from_scores(scores, jnp.array([0, 2, 3]))
    np.testing.assert_array_equal(ranks, [2, 3, 4])
    np.testing.assert_array_equal(ranks_from_scores(scores[:2], jnp.array([1, 4])), [1, 5])


def test_all_equal_scores_rank_equals_item_id_plus_one():
    scores = jnp.zeros((4, 6))
    np.testing.assert_array_equal(ranks_from_scores(scores, jnp.array([0, 1, 4, 5])), [1, 2, 5, 6])


def test_exclude_removes_items_but_never_the_target():
    scores = jnp.array([[5.0, 4.0, 3.0, 2.0, 1.0]] * 2)
    exclude = jnp.array([[0, 1, -1], [3, 0, 3]])  # -1 is padding; row 1 lists its own target (3)
    ranks = ranks_from_scores(scores, jnp.array([2, 3]), exclude)
    np.testing.assert_array_equal(ranks, [1, 3])  # row 1: items 0 removed, 1 and 2 still ahead


RANKS = jax.jit(ranks_from_scores)  # one compilation for the fixed shapes below


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 4))
def test_ranks_equal_stable_sort_position(seed, distinct_scores):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, distinct_scores, (6, 9)).astype(np.float32)  # few values: many ties
    targets = rng.integers(0, 9, 6)
    exclude = np.where(rng.random((6, 3)) < 0.5, rng.integers(0, 9, (6, 3)), -1)
    ranks = np.asarray(RANKS(scores, targets, exclude))
    for b in range(6):
        kept = [i for i in range(9) if i == targets[b] or i not in exclude[b]]
        order = sorted(kept, key=lambda i: (-scores[b, i], i))
        assert ranks[b] == order.index(targets[b]) + 1


def test_topk_lists():
    topk = np.array([[3, 1, 2], [0, 4, 5], [7, 8, 9]])
    targets = np.array([1, 0, 6])
    np.testing.assert_array_equal(ranks_from_topk(topk, targets), [2, 1, 4])
    m = list_metrics(topk, targets, ks=(1, 3))
    assert m["HR@1"] == pytest.approx(1 / 3) and m["HR@3"] == pytest.approx(2 / 3)
    assert m["NDCG@3"] == pytest.approx((1 / math.log2(3) + 1) / 3)
    assert m["Recall@3"] == pytest.approx(m["HR@3"])
    assert m["MRR@3"] == pytest.approx((1 / 2 + 1) / 3)  # the miss counts 0, not 1/4
    assert "MRR" not in m


def test_recall_with_several_targets():
    topk = np.array([[1, 2, 3, 4], [9, 8, 7, 6]])
    m = recall_at_k(topk, [[2, 4, 5], [6]], ks=(1, 2, 4))
    assert m["Recall@1"] == pytest.approx(0.0)
    assert m["Recall@2"] == pytest.approx((1 / 3 + 0) / 2)
    assert m["Recall@4"] == pytest.approx((2 / 3 + 1) / 2)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(JaxrecError, match="1-based"):
        metrics_from_ranks(np.array([0, 2]))
    with pytest.raises(JaxrecError, match="expected topk"):
        list_metrics(np.zeros((2, 10), int), np.zeros(3, int))
    with pytest.raises(JaxrecError, match="no relevant item"):
        recall_at_k(np.zeros((1, 20), int), [[]])


def test_batched_ranks_pads_the_last_batch():
    seen = []

    def rank_batch(x):
        seen.append(x.shape)
        return x * 10

    out = batched_ranks(rank_batch, {"x": np.arange(5)}, batch_size=2)
    np.testing.assert_array_equal(out, [0, 10, 20, 30, 40])
    assert seen == [(2,)] * 3


def test_list_metrics_count_a_target_outside_the_list_as_a_miss_at_every_k():
    """4-item lists scored at K up to 10: a target absent from its list never becomes a hit at K > 4."""
    lists = np.array([[5, 3, 9, 1], [2, 7, -1, -1], [4, 4, 4, 4]])
    targets = np.array([9, 8, 4])  # rank 3, absent, rank 1
    m = list_metrics(lists, targets, [1, 3, 10])
    assert m["HR@1"] == pytest.approx(1 / 3) and m["HR@3"] == pytest.approx(2 / 3)
    assert m["HR@10"] == pytest.approx(2 / 3)  # not 1: the absent target stays a miss
    assert m["NDCG@10"] == pytest.approx((1 / np.log2(4) + 1) / 3)
    assert m["MRR@4"] == pytest.approx((1 / 3 + 0 + 1) / 3) and "MRR" not in m and m["users"] == 3
    assert m["Recall@3"] == m["HR@3"] and "Recall@10" not in m  # recall only where the lists reach K
