"""Processing invariants (dedup, k-core fixed point, remapping) and the shared-data contracts."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxrec.cli import main
from jaxrec.data.dataset import Dataset
from jaxrec.data.processing import dedup_mask, kcore_mask, process
from jaxrec.data.readers.common import RawInteractions
from jaxrec.errors import DataError


def _raw(users, items, timestamps=None, ratings=None, meta=None):
    users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
    return RawInteractions(users=users, items=items, user_raw_ids=[f"u{u}" for u in range(users.max() + 1)],
                           item_raw_ids=[f"i{i}" for i in range(items.max() + 1)],
                           timestamps=None if timestamps is None else np.asarray(timestamps, np.int64),
                           ratings=None if ratings is None else np.asarray(ratings, np.float32),
                           item_meta=meta or {}, name="toy", info={"format": "test"})


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 7), st.integers(0, 7)), min_size=1, max_size=80), st.integers(1, 4))
def test_kcore_is_a_fixed_point(pairs, k):
    users, items = (np.array(x) for x in zip(*pairs))
    keep = kcore_mask(users, items, k)
    if keep.any():
        assert all(np.sum(users[keep] == u) >= k for u in np.unique(users[keep]))
        assert all(np.sum(items[keep] == i) >= k for i in np.unique(items[keep]))
    # a fixed point: filtering the core again drops nothing; the full data is kept when it is a k-core
    if all(np.sum(users == u) >= k for u in users) and all(np.sum(items == i) >= k for i in items):
        assert keep.all()
    again = kcore_mask(users[keep], items[keep], k)
    assert again.all()


def test_dedup_keeps_earliest_by_time_then_source_order():
    keep = dedup_mask(np.array([0, 0, 0, 1, 0]), np.array([5, 5, 6, 5, 6]), np.array([9, 3, 1, 1, 1]))
    np.testing.assert_array_equal(keep, [False, True, True, True, False])


def test_process_sorts_chronologically_and_remaps():
    raw = _raw(users=[1, 0, 1, 0, 1], items=[0, 1, 2, 0, 1], timestamps=[5, 4, 5, 1, 2])
    ds = process(raw)
    assert ds.user_raw_ids == ["u0", "u1"]  # users by first appearance in the source
    assert [ds.items[i]["raw_id"] for i in ds.sequence(0)] == ["i0", "i1"]
    assert [ds.items[i]["raw_id"] for i in ds.sequence(1)] == ["i1", "i0", "i2"]  # tie at t=5: source order
    np.testing.assert_array_equal(ds.item_ids, [0, 1, 1, 0, 2])
    shuffled = [process(raw, remap="random", seed=s) for s in (1, 1, 2)]
    assert shuffled[0].items == shuffled[1].items and shuffled[0].user_raw_ids == shuffled[1].user_raw_ids
    for other in shuffled:  # same sequences in raw ids whatever the numbering
        seqs = {other.user_raw_ids[u]: [other.items[i]["raw_id"] for i in s] for u, s in other.iter_users()}
        assert seqs == {"u0": ["i0", "i1"], "u1": ["i1", "i0", "i2"]}


def test_process_errors():
    raw = _raw(users=[0, 1], items=[0, 1])
    with pytest.raises(DataError, match="needs ratings"):
        process(raw, min_rating=4)
    with pytest.raises(DataError, match="no interactions left"):
        process(raw, kcore=2)


def test_shared_beauty_contract(shared_data, tmp_path, capsys):
    out = tmp_path / "beauty"
    assert main(["data", "prepare", "--format", "s3rec", "--input",
                 str(shared_data / "amazon-beauty" / "Beauty.txt"), "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["data", "stats", str(out)]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert (stats["users"], stats["items"], stats["interactions"]) == (22363, 12101, 198502)
    ds = Dataset.load(out)
    np.testing.assert_array_equal(ds.sequence(0), [0, 1, 2, 3, 4])  # "1 1 2 3 4 5": first-appearance ids


def test_shared_ml100k_and_lcrec_beauty(shared_data, tmp_path):
    from jaxrec.data.commands import prepare

    ml = prepare("movielens", str(shared_data / "ml-100k"), tmp_path / "ml")
    assert (ml.num_users, ml.num_items, ml.num_interactions) == (943, 1682, 100000)
    assert all(it.get("title") for it in ml.items)
    lc = prepare("lcrec", str(shared_data / "amazon-beauty-lcrec"), tmp_path / "lc")
    assert (lc.num_users, lc.num_items, lc.num_interactions) == (22363, 12101, 198502)
    assert all(len(it["lcrec_index"]) == 4 for it in lc.items)
