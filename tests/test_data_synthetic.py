"""The embedded synthetic dataset: deterministic, text derived from topics, sequential signal."""

import numpy as np
import pytest

from jaxrec.data.splits import leave_one_out
from jaxrec.data.synthetic import TINY, make_preset, make_synthetic
from jaxrec.errors import DataError


@pytest.fixture(scope="module")
def tiny():
    return make_preset("tiny")


def test_deterministic_by_seed(tiny):
    again = make_synthetic(seed=0, **TINY)
    np.testing.assert_array_equal(tiny.item_ids, again.item_ids)
    np.testing.assert_array_equal(tiny.timestamps, again.timestamps)
    assert tiny.items == again.items
    other = make_synthetic(seed=1, **TINY)
    assert not np.array_equal(tiny.item_ids[:50], other.item_ids[:50])


def test_shape_text_and_ranges(tiny):
    assert (tiny.num_users, tiny.num_items) == (300, 200)
    assert tiny.lengths().min() >= 5
    titles = tiny.titles()
    assert len(set(titles)) == len(titles)
    for it in tiny.items:
        assert it["title"] and it["description"] and it["brand"] and len(it["categories"]) == 3
    assert set(np.unique(tiny.ratings)) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    for u in range(tiny.num_users):
        seq, ts = tiny.sequence(u), tiny.user_timestamps(u)
        assert len(set(seq.tolist())) == len(seq)
        assert np.all(np.diff(ts) > 0)


def test_last_item_predicts_next_better_than_popularity(tiny):
    """A first-order transition model (what sequence models can learn) beats popularity."""
    split = leave_one_out(tiny)
    n = tiny.num_items
    counts = np.bincount(np.concatenate(split.train), minlength=n).astype(float)
    transitions = np.zeros((n, n))
    for seq in split.train:
        np.add.at(transitions, (seq[:-1], seq[1:]), 1.0)

    def hit_rate(scores_for):
        hits = [np.sum(scores_for(h) > scores_for(h)[t]) < 10 for h, t in zip(split.test_history, split.test_target)]
        return float(np.mean(hits))

    pop = hit_rate(lambda h: counts)
    markov = hit_rate(lambda h: transitions[h[-1]] + 1e-3 * counts / counts.max())
    assert markov > pop + 0.15


def test_bad_arguments():
    with pytest.raises(DataError, match="num_topics"):
        make_synthetic(num_topics=99)
    with pytest.raises(DataError, match="preset"):
        make_preset("huge")
