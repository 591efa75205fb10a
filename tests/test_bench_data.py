"""`jaxrec bench data` at a tiny size: the generated inputs, the measured prepare runs, and the peer (the line-loop
readers of an earlier revision) preparing the same slices into the same datasets."""

import hashlib
import json

import numpy as np
import pytest

from jaxrec.bench.data import make_amazon2023, make_movielens
from jaxrec.cli import main
from jaxrec.data.commands import prepare


def test_generated_inputs_are_seeded_and_shaped(tmp_path):
    shape = make_movielens(tmp_path / "a", 4000, seed=3)
    make_movielens(tmp_path / "b", 4000, seed=3)
    digest = [hashlib.sha256((tmp_path / d / "ratings.csv").read_bytes()).hexdigest() for d in "ab"]
    assert digest[0] == digest[1]
    lines = (tmp_path / "a" / "ratings.csv").read_text().splitlines()
    assert lines[0] == "userId,movieId,rating,timestamp" and len(lines) == 1 + shape["rows"]
    rows = np.array([[float(x) for x in line.split(",")] for line in lines[1:]])
    assert rows[:, 0].max() == shape["users"] and np.isin(rows[:, 2], np.arange(1, 11) / 2).all()
    key = rows[:, 0] * 1e6 + rows[:, 1]
    assert np.all(np.diff(key) > 0)  # by user, then movie id; no repeated (user, movie)
    make_amazon2023(tmp_path / "amz", 3000, 200, seed=0)
    reviews = [json.loads(line) for line in (tmp_path / "amz" / "Bench.jsonl").read_text().splitlines()]
    meta = [json.loads(line) for line in (tmp_path / "amz" / "meta_Bench.jsonl").read_text().splitlines()]
    assert len(reviews) == 3000 and len(meta) == 200 and len({m["parent_asin"] for m in meta}) == 200
    assert {r["parent_asin"] for r in reviews} <= {m["parent_asin"] for m in meta}
    assert all(len(r["user_id"]) == 28 and 946684800000 <= r["timestamp"] < 1694000000000 for r in reviews)
    ds = prepare("amazon2023", str(tmp_path / "amz" / "Bench.jsonl"), tmp_path / "out")
    assert ds.num_interactions == len({(r["user_id"], r["parent_asin"]) for r in reviews})
    assert all(it.get("title") and it.get("brand") and it.get("attributes") for it in ds.items)


def test_bench_data_tiny_measures_both_formats_against_the_line_loop_peer(tmp_path, capsys):
    assert main(["bench", "data", "--rows", "3000", "--reviews", "3000", "--items", "300", "--peer-rows", "1500",
                 "--kcore", "2", "--work-dir", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["benchmark"] == "data" and out["config"]["rows"] == 3000
    for name, path in (("movielens", tmp_path / "ml"), ("amazon2023", tmp_path / "amazon" / "Bench.jsonl")):
        run = out[name]
        ds = prepare(name, str(path), tmp_path / f"check-{name}", kcore=2)
        assert run["steps"] == ds.info["processing"]["steps"]  # the child ran the same prepare
        assert run["rows"] == ds.info["processing"]["steps"][0]["interactions"] > 1500 == run["slice"]["rows"]
        assert 0 < run["peak_rss_gib"] < 4  # wall_s is rounded to 0.01 s
        assert run["rows"] / (run["wall_s"] + 0.006) < run["rows_per_s"] < run["rows"] / (run["wall_s"] - 0.006)
    if "peer_unavailable" in out:
        pytest.skip(f"no peer: {out['peer_unavailable']}")
    for name in ("movielens", "amazon2023"):
        assert out[f"peer_{name}"]["rows"] == 1500
        assert out[name]["identical_on_slice"] is True  # the line-loop readers prepare the same dataset
        assert out[name]["ratio"] == round(out[name]["rows_per_s"] / out[f"peer_{name}"]["rows_per_s"], 1)
    assert out["summary"]["ratio"] == out["movielens"]["ratio"]


def test_a_work_dir_holding_other_files_is_refused_and_left_untouched(tmp_path, capsys):
    """The benchmark writes ml/ratings.csv and more into --work-dir: a folder it did not claim is refused with
    one line (a user's real MovieLens copy there would be replaced)."""
    mine = tmp_path / "ml" / "ratings.csv"
    mine.parent.mkdir()
    mine.write_text("userId,movieId,rating,timestamp\n1,2,5.0,3\n")
    assert main(["bench", "data", "--rows", "3000", "--reviews", "3000", "--items", "300", "--peer-rows", "1500",
                 "--work-dir", str(tmp_path)]) == 2
    assert "holds files jaxrec bench data did not write" in capsys.readouterr().err
    assert mine.read_text() == "userId,movieId,rating,timestamp\n1,2,5.0,3\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ml"]
