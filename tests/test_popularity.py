"""Popularity baseline on a hand-made dataset, through the library and `jaxrec baseline popularity`."""

import json

import numpy as np
import pytest

from jaxrec.cli import main
from jaxrec.data.dataset import Dataset
from jaxrec.data.splits import leave_one_out
from jaxrec.eval.ranking import item_counts, static_ranks
from jaxrec.methods.popularity import evaluate_split


@pytest.fixture(scope="module")
def toy() -> Dataset:
    # training parts (all but the last two items): [0, 2], [2, 1], [1, 2, 3], [4], and [1, 0] (too short)
    sequences = [[0, 2, 1, 3], [2, 1, 0, 4], [1, 2, 3, 2, 1], [4, 2, 3], [1, 0]]
    return Dataset.from_sequences(sequences, items=[{"raw_id": f"i{i}"} for i in range(5)], name="toy")


def test_counts_exclude_the_last_two_items(toy):
    split = leave_one_out(toy)
    np.testing.assert_array_equal(item_counts(split.train, toy.num_items), [2, 3, 3, 1, 1])
    # user 4 ([1, 0]) is too short to evaluate, so its whole sequence is training data (counts 0 and 1)


def test_static_ranks_break_ties_by_lower_id():
    np.testing.assert_array_equal(static_ranks(np.array([2, 3, 3, 1, 1])), [3, 1, 2, 4, 5])


def test_hand_computed_metrics(toy):
    split = leave_one_out(toy)
    # ranks: 1:1  2:2  0:3  3:4  4:5. test targets (last items): 3, 4, 1, 3 -> ranks 4, 5, 1, 4
    m = evaluate_split(split, toy.num_items, "test", ks=(1, 5))
    assert m["users"] == 4
    assert m["HR@1"] == pytest.approx(0.25)
    assert m["HR@5"] == pytest.approx(1.0)
    assert m["NDCG@5"] == pytest.approx((2 / np.log2(5) + 1 / np.log2(6) + 1) / 4)
    # valid targets (second-to-last): 1, 0, 2, 2 -> ranks 1, 3, 2, 2
    v = evaluate_split(split, toy.num_items, "valid", ks=(1, 2))
    assert v["HR@1"] == pytest.approx(0.25) and v["HR@2"] == pytest.approx(0.75)


def test_cli_prints_json(toy, tmp_path, capsys):
    toy.save(tmp_path / "toy")
    assert main(["baseline", "popularity", "--data", str(tmp_path / "toy"), "--split", "test"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {f"{m}@{k}" for m in ("HR", "NDCG") for k in (1, 5, 10, 20)} <= set(out)
    assert out["HR@1"] == pytest.approx(0.25) and out["users"] == 4


def test_cli_bad_inputs_are_one_line_errors(tmp_path, capsys):
    assert main(["baseline", "popularity", "--data", str(tmp_path / "missing")]) == 2
    assert "not a jaxrec dataset directory" in capsys.readouterr().err
    assert main(["baseline", "popularity", "--data", str(tmp_path), "--ks", "1,x"]) == 2
    assert "--ks" in capsys.readouterr().err


def test_excluding_history_matches_a_hand_count_and_a_brute_force_sort(toy):
    """Test histories: [0,2,1], [2,1,0], [1,2,3,2], [4,2]; ranks 1:1 2:2 0:3 3:4 4:5. Without its history
    items (the target stays) user 0's target 3 moves from 4 to 1, user 1's 4 from 5 to 2, user 2's 1 stays 1,
    user 3's 3 from 4 to 2 (only item 2 of its history, [4, 2], ranks ahead of it)."""
    split = leave_one_out(toy)
    m = evaluate_split(split, toy.num_items, "test", ks=(1, 2), exclude_history=True)
    assert m["HR@1"] == pytest.approx(0.5) and m["HR@2"] == pytest.approx(0.75)
    assert m["MRR"] == pytest.approx((1 + 1 / 2 + 1 + 1 / 3) / 4)
    counts = item_counts(split.train, toy.num_items)
    brute = []
    for history, target in zip(split.test_history, split.test_target):
        kept = [i for i in range(toy.num_items) if i == target or i not in set(history.tolist())]
        brute.append(sorted(kept, key=lambda i: (-counts[i], i)).index(target) + 1)
    assert m["MRR"] == pytest.approx(np.mean(1 / np.asarray(brute)))
