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


def _golden_inputs(root):
    """Small raw files of every columnar format with repeated pairs, time ties and blank lines (seeded)."""
    rng = np.random.default_rng(7)
    n = 60
    u, i, t, r = rng.integers(1, 9, n), rng.integers(1, 12, n), rng.integers(100, 110, n), rng.integers(1, 6, n)
    rows = list(zip(u.tolist(), i.tolist(), r.tolist(), t.tolist()))
    ml = root / "ml"
    ml.mkdir(parents=True)
    lines = ["userId,movieId,rating,timestamp"] + [f"{a},{b},{c}.0,{d}" for a, b, c, d in rows]
    lines.insert(20, "")
    (ml / "ratings.csv").write_text("\n".join(lines) + "\n")
    (ml / "movies.csv").write_text("movieId,title,genres\n" + "".join(
        f'{k},"Movie, {k} (199{k % 10})",A|B\n' for k in range(1, 12) if k != 4))
    (root / "reviews_Toys_5.json").write_text("".join(
        json.dumps({"reviewerID": f"U{a}", "asin": f"P{b}", "overall": float(c), "unixReviewTime": d}) + "\n"
        + ("\n" if k == 7 else "") for k, (a, b, c, d) in enumerate(rows)))
    (root / "meta_Toys.json").write_text("".join(
        repr({"asin": f"P{k}", "title": f"Toy &amp; {k}", "categories": [["Toys", f"C{k % 3}"]]}) + "\n"
        for k in range(1, 12, 2)))
    (root / "Toys.jsonl").write_text("".join(json.dumps(
        {"user_id": f"U{a}", "parent_asin": f"P{b}", "rating": float(c), "timestamp": d * 1000 + 999, "text": "x"})
        + "\n" for a, b, c, d in rows))
    (root / "meta_Toys.jsonl").write_text("".join(json.dumps(
        {"parent_asin": f"P{k}", "title": f"Toy {k}", "store": "S", "features": ["f", f"g{k}"],
         "description": ["d", "e"]}) + "\n" for k in range(1, 12)))
    (root / "ratings_Toys.csv").write_text("".join(f"P{b},U{a},{c},{d}\n" for a, b, c, d in rows))
    return [("ml", "movielens", ml, {}), ("ml_k2_random", "movielens", ml, dict(kcore=2, remap="random", seed=3)),
            ("amazon_k2", "amazon", root / "reviews_Toys_5.json", dict(kcore=2)),
            ("amazon_min3_drop", "amazon", root / "reviews_Toys_5.json", dict(min_rating=3, drop_items_without_meta=True)),
            ("a23_k3", "amazon2023", root / "Toys.jsonl", dict(kcore=3)),
            ("csv_random", "amazon", root / "ratings_Toys.csv", dict(remap="random", seed=1,
                                                                      csv_columns="item,user,rating,timestamp"))]


def test_prepare_reproduces_the_line_loop_readers_outputs_exactly(tmp_path):
    """Expected outputs recorded with the pure-Python line-loop readers and processing (revision 9e25de2) before
    the columnar readers: users, items with their text, CSR arrays, timestamps, ratings and per-step counts."""
    from pathlib import Path

    from jaxrec.data.commands import prepare

    expected = json.loads((Path(__file__).parent / "data_golden" / "prepare_before_columnar.json").read_text())
    cases = _golden_inputs(tmp_path / "in")
    assert sorted(name for name, *_ in cases) == sorted(expected)
    for name, fmt, path, options in cases:
        ds = prepare(fmt, str(path), tmp_path / "out" / name, **options)
        for got in (ds, Dataset.load(tmp_path / "out" / name)):
            assert {"users": got.user_raw_ids, "items": got.items, "offsets": got.offsets.tolist(),
                    "item_ids": got.item_ids.tolist(), "timestamps": got.timestamps.tolist(),
                    "ratings": got.ratings.tolist(), "steps": got.info["processing"]["steps"]} == expected[name], name


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 6), st.integers(0, 3)), min_size=1, max_size=60),
       st.booleans(), st.sampled_from(["as drawn", "pair order", "pair order, no repeats"]))
def test_dedup_matches_a_brute_force_earliest_pair(rows, timed, order):
    if order != "as drawn":  # the sources already sorted by user then item (MovieLens)
        rows = sorted(rows, key=lambda r: r[:2])
        if order == "pair order, no repeats":
            rows = [r for k, r in enumerate(rows) if k == 0 or r[:2] != rows[k - 1][:2]]
    users, items, times = (np.array(x) for x in zip(*rows))
    keep = dedup_mask(users, items, times if timed else None)
    best = {}
    for k, (u, i, t) in enumerate(rows):
        key = (t if timed else 0, k)
        if (u, i) not in best or key < best[(u, i)][0]:
            best[(u, i)] = (key, k)
    np.testing.assert_array_equal(np.flatnonzero(keep), sorted(k for _, k in best.values()))


def test_the_columnar_path_alone_in_many_small_blocks_gives_the_same_outputs(tmp_path, monkeypatch):
    """Ids parsed into per-block dictionaries keep first-appearance order once unified; no line-loop fallback."""
    from pathlib import Path

    from jaxrec.data.commands import prepare
    from jaxrec.data.readers import columnar

    def columnar_only(read_columns, lines):
        return read_columns()

    expected = json.loads((Path(__file__).parent / "data_golden" / "prepare_before_columnar.json").read_text())
    monkeypatch.setattr(columnar, "BLOCK_BYTES", 256)
    monkeypatch.setattr(columnar, "columnar_or_lines", columnar_only)
    for name, fmt, path, options in _golden_inputs(tmp_path / "in"):
        if options.get("drop_items_without_meta"):
            continue
        # the 2014 meta (Python literals) is read line by line: the 2023 meta of the same products instead
        meta = None if fmt == "movielens" else str(tmp_path / "in" / "meta_Toys.jsonl")
        ds = prepare(fmt, str(path), tmp_path / "out" / name, meta=meta, **options)
        assert ds.user_raw_ids == expected[name]["users"], name
        assert [it["raw_id"] for it in ds.items] == [it["raw_id"] for it in expected[name]["items"]], name
        if meta is None:
            assert ds.items == expected[name]["items"]
        assert ds.item_ids.tolist() == expected[name]["item_ids"] and ds.timestamps.tolist() == expected[name]["timestamps"]


def _digest(ds):
    """16 hex digits of sha256 over users, items with text, step counts and the arrays."""
    import hashlib

    h = hashlib.sha256(json.dumps([ds.user_raw_ids, ds.items, ds.info["processing"]["steps"]], sort_keys=True).encode())
    for name in ("offsets", "item_ids", "timestamps", "ratings"):
        array = getattr(ds, name)
        h.update(b"-" if array is None else np.ascontiguousarray(array).tobytes())
    return h.hexdigest()[:16]


@pytest.mark.parametrize("fmt, folder, options, expected", [
    ("s3rec", "amazon-beauty/Beauty.txt", {}, "0eda634538958c83"),
    ("movielens", "ml-100k", {"kcore": 5}, "3f295d1c2d6d58ef"),
    ("movielens", "ml-100k", {"remap": "random", "min_rating": 4}, "fedb9303d88ce24a"),
    ("lcrec", "amazon-beauty-lcrec", {}, "2d2ba231a59ce25f"),
])
def test_shared_data_is_prepared_as_the_line_loop_readers_did(shared_data, tmp_path, fmt, folder, options, expected):
    """Digests of the datasets the line-loop readers (revision 9e25de2) prepared from ../shared/data."""
    from jaxrec.data.commands import prepare

    assert _digest(prepare(fmt, str(shared_data / folder), tmp_path / "out", **options)) == expected
