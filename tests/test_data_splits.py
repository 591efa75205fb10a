"""Invariants of the leave-one-out and temporal splits."""

import numpy as np
import pytest

from jaxrec.data.dataset import Dataset
from jaxrec.data.splits import leave_one_out, temporal_split
from jaxrec.errors import DataError


def _toy(timestamps=True) -> Dataset:
    seqs = [[0, 1, 2, 3], [4, 5], [6, 7, 8], [9, 0, 1, 2, 3]]
    ts = [[1, 5, 9, 10], [2, 3], [4, 6, 8], [1, 2, 3, 11, 12]] if timestamps else None
    return Dataset.from_sequences(seqs, [{"raw_id": str(i)} for i in range(10)], timestamps=ts)


def test_leave_one_out_targets_and_histories():
    ds = _toy()
    s = leave_one_out(ds)
    # user 1 has 2 interactions: not evaluated, whole sequence is training data
    np.testing.assert_array_equal(s.valid_users, [0, 2, 3])
    np.testing.assert_array_equal(s.test_users, s.valid_users)
    np.testing.assert_array_equal(s.train[1], [4, 5])
    np.testing.assert_array_equal(s.valid_target, [2, 7, 2])
    np.testing.assert_array_equal(s.test_target, [3, 8, 3])
    for k, u in enumerate(s.test_users):
        seq = ds.sequence(u)
        np.testing.assert_array_equal(s.train[u], seq[:-2])
        np.testing.assert_array_equal(s.valid_history[k], seq[:-2])
        np.testing.assert_array_equal(s.test_history[k], seq[:-1])
        assert s.test_history[k].dtype == np.int32
    assert s.valid_target.dtype == s.test_target.dtype == np.int32
    assert sum(len(t) for t in s.train) + 2 * len(s.test_users) == ds.num_interactions


def test_temporal_split_periods_and_histories():
    ds = _toy()
    s = temporal_split(ds, ratios=(0.8, 0.1, 0.1), history=2)
    # 14 interactions, 4 users: 10 examples (a first interaction has no history): 8 / 1 / 1
    assert (len(s.train), len(s.valid), len(s.test)) == (8, 1, 1)
    assert s.train.timestamp.max() <= s.valid.timestamp.min() <= s.test.timestamp.min()
    assert s.cut_timestamps == (11, 12)
    for part in (s.train, s.valid, s.test):
        for u, h, t, ts in zip(part.users, part.history, part.target, part.timestamp):
            seq, times = ds.sequence(u), ds.user_timestamps(u)
            pos = int(np.flatnonzero((seq == t) & (times == ts))[0])
            np.testing.assert_array_equal(h, seq[max(0, pos - 2):pos])
    np.testing.assert_array_equal(s.test.target, [3])
    np.testing.assert_array_equal(s.test.history[0], [1, 2])
    full = temporal_split(ds, history=3, min_history=3)  # BIGRec-style: only full histories
    assert len(full.train) + len(full.valid) + len(full.test) == 1 + 2


def test_temporal_split_errors():
    with pytest.raises(DataError, match="no timestamps"):
        temporal_split(_toy(timestamps=False))
    with pytest.raises(DataError, match="ratios"):
        temporal_split(_toy(), ratios=(0.5, 0.1, 0.1))
