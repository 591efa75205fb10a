"""Each raw-format reader on small fixtures written here, through `jaxrec data prepare`."""

import gzip
import json

import numpy as np
import pytest

from jaxrec.cli import main
from jaxrec.data.dataset import Dataset
from jaxrec.errors import DataError
from jaxrec.data.commands import prepare


def _write(path, text, compress=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _titles(ds, user):
    return [ds.items[i].get("title") for i in ds.sequence(user)]


def test_amazon_2014_reviews_and_python_literal_meta(tmp_path):
    reviews = [
        {"reviewerID": "A", "asin": "p2", "overall": 5.0, "unixReviewTime": 300},
        {"reviewerID": "A", "asin": "p1", "overall": 4.0, "unixReviewTime": 100},
        {"reviewerID": "B", "asin": "p1", "overall": 2.0, "unixReviewTime": 50},
        {"reviewerID": "A", "asin": "p1", "overall": 1.0, "unixReviewTime": 400},  # repeat: keep earliest
        {"reviewerID": "B", "asin": "p3", "overall": 5.0, "unixReviewTime": 60},
    ]
    _write(tmp_path / "reviews_Toys_5.json.gz", "\n".join(json.dumps(r) for r in reviews) + "\n", compress=True)
    meta = ("{'asin': 'p1', 'title': 'Red &amp; Blue Ball', 'categories': [['Toys', 'Balls']], 'price': 3.5}\n"
            "{'asin': 'p2', 'title': 'Kite', 'description': 'Flies high', 'brand': 'Sky'}\n")
    _write(tmp_path / "meta_Toys.json.gz", meta, compress=True)
    ds = prepare("amazon", str(tmp_path / "reviews_Toys_5.json.gz"), tmp_path / "out")
    assert (ds.num_users, ds.num_items, ds.num_interactions) == (2, 3, 4)
    assert ds.user_raw_ids == ["A", "B"]
    assert _titles(ds, 0) == ["Red & Blue Ball", "Kite"]
    np.testing.assert_array_equal(ds.user_timestamps(0), [100, 300])
    np.testing.assert_array_equal(ds.user_ratings(0), [4.0, 5.0])
    assert ds.items[0]["categories"] == ["Toys", "Balls"]
    assert ds.items[1] == {"raw_id": "p2", "title": "Kite", "description": "Flies high", "brand": "Sky"}
    loaded = Dataset.load(tmp_path / "out")
    assert loaded.items == ds.items and loaded.info["processing"]["steps"][-1]["interactions"] == 4
    dropped = prepare("amazon", str(tmp_path / "reviews_Toys_5.json.gz"), tmp_path / "out2",
                      drop_items_without_meta=True, min_rating=3)
    assert [it["raw_id"] for it in dropped.items] == ["p1", "p2"] and dropped.num_interactions == 2


def test_amazon_2018_csv_with_column_order(tmp_path):
    _write(tmp_path / "Beauty.csv", "i1,u1,5.0,10\ni2,u1,3.0,5\ni1,u2,4.0,7\n")
    _write(tmp_path / "meta_Beauty.json", json.dumps({"asin": "i1", "title": "Soap", "category": ["Beauty", "Bath"],
                                                      "description": ["Mild", "soap"]}) + "\n")
    ds = prepare("amazon", str(tmp_path / "Beauty.csv"), tmp_path / "out", csv_columns="item,user,rating,timestamp")
    assert ds.user_raw_ids == ["u1", "u2"]
    assert [ds.items[i]["raw_id"] for i in ds.sequence(0)] == ["i2", "i1"]
    assert ds.items[1] == {"raw_id": "i1", "title": "Soap", "categories": ["Beauty", "Bath"], "description": "Mild soap"}


def test_movielens_100k_1m_20m(tmp_path):
    genres = "|".join(["0"] * 19)
    ml100 = tmp_path / "ml-100k"
    _write(ml100 / "u.data", "1\t10\t4\t200\n1\t20\t5\t100\n2\t10\t3\t50\n")
    (ml100 / "u.item").write_bytes(f"10|Caf\xe9 (1990)|01-Jan-1990||url|{'0|' * 5}1|{'0|' * 12}0\n"
                                   f"20|Heat (1995)|01-Jan-1995||url|{genres}\n".encode("latin-1"))
    ds = prepare("movielens", str(ml100), tmp_path / "o100")
    assert _titles(ds, 0) == ["Heat (1995)", "Café (1990)"]
    assert ds.items[1]["categories"] == ["Comedy"]
    ml1m = tmp_path / "ml-1m"
    _write(ml1m / "ratings.dat", "1::5::4::978300760\n2::5::3::978300000\n2::6::5::978300001\n")
    _write(ml1m / "movies.dat", "5::Father of the Bride (1995)::Comedy\n6::Heat (1995)::Action|Crime|Thriller\n")
    ds = prepare("movielens", str(ml1m / "ratings.dat"), tmp_path / "o1m")
    assert ds.items[1]["categories"] == ["Action", "Crime", "Thriller"] and ds.num_interactions == 3
    ml20 = tmp_path / "ml-20m"
    _write(ml20 / "ratings.csv", "userId,movieId,rating,timestamp\n1,2,3.5,1112486027\n1,3,4.0,1112484676\n")
    _write(ml20 / "movies.csv", 'movieId,title,genres\n2,"Jumanji, The (1995)",(no genres listed)\n3,Heat (1995),Action\n')
    ds = prepare("movielens", str(ml20), tmp_path / "o20")
    assert _titles(ds, 0) == ["Heat (1995)", "Jumanji, The (1995)"]
    assert "categories" not in ds.items[1]


def test_s3rec_keeps_line_and_first_appearance_order(tmp_path):
    _write(tmp_path / "Toys.txt", "1 5 3 9\n2 3 7\n")
    _write(tmp_path / "Toys_item2attributes.json", json.dumps({"3": [1, 2], "9": []}))
    ds = prepare("s3rec", str(tmp_path / "Toys.txt"), tmp_path / "out")
    assert [it["raw_id"] for it in ds.items] == ["5", "3", "9", "7"]
    np.testing.assert_array_equal(ds.sequence(1), [1, 3])
    assert ds.items[1]["attributes"] == ["1", "2"] and "attributes" not in ds.items[2]
    assert ds.timestamps is None


def test_lcrec_with_items_and_index(tmp_path):
    _write(tmp_path / "Toys.inter.json", json.dumps({"0": [2, 0, 1], "1": [1, 2]}))
    _write(tmp_path / "Toys.item.json", json.dumps({"0": {"title": "Ball", "description": "Round"},
                                                    "2": {"title": "Kite", "categories": "Toys, Outdoor"}}))
    _write(tmp_path / "Toys.index.json", json.dumps({str(i): [f"<a_{i}>", f"<b_{i}>"] for i in range(3)}))
    ds = prepare("lcrec", str(tmp_path), tmp_path / "out", remap="random", seed=3)
    kite = next(it for it in ds.items if it["raw_id"] == "2")
    assert kite["title"] == "Kite" and kite["lcrec_index"] == ["<a_2>", "<b_2>"]
    assert ds.info["lcrec_index"]["levels"] == [2]
    raw_seq = [[ds.items[i]["raw_id"] for i in ds.sequence(u)] for u in range(2)]
    assert sorted(raw_seq) == [["1", "2"], ["2", "0", "1"]]


def test_bigrec_csv_and_prompt_json(tmp_path):
    _write(tmp_path / "id2name.txt", "Toy Story (1995)\t0\nHeat (1995)\t1\nCasino (1995)\t2\nJumanji (1995)\t3\n")
    header = "user_id,history_movie_id,history_rating,movie_id,rating,timestamp\n"
    _write(tmp_path / "train.csv", header + '7,"[0, 1]","[1, 0]",2,1,100\n7,"[1, 2]","[0, 1]",3,1,200\n')
    _write(tmp_path / "test.csv", header + '8,"[3]","[1]",0,1,300\n')
    ds = prepare("bigrec", str(tmp_path), tmp_path / "out")
    assert _titles(ds, 0) == ["Toy Story (1995)", "Heat (1995)", "Casino (1995)", "Jumanji (1995)"]
    np.testing.assert_array_equal(ds.user_timestamps(0), [100, 100, 100, 200])
    assert ds.info["bigrec"]["examples"] == {"train": 2, "test": 1}
    prompts = tmp_path / "prompts"
    _write(prompts / "id2name.txt", "0\tToy Story (1995)\n1\tHeat (1995)\n")
    _write(prompts / "train.json", json.dumps([{"instruction": "Recommend.", "output": '"Heat (1995)"\n',
                                                "input": 'The user has watched:"Toy Story (1995)"\n '}]))
    ds = prepare("bigrec", str(prompts), tmp_path / "out2")
    assert _titles(ds, 0) == ["Toy Story (1995)", "Heat (1995)"] and ds.user_raw_ids == ["train:0"]


@pytest.mark.parametrize("fmt, name, text, expected", [
    ("s3rec", "Toys.txt", "1 2 3\n2\n", r"Toys.txt:2: expected 'user item"),
    ("amazon", "reviews_Toys_5.json", '{"reviewerID": "A", "asin": "p", "overall": 5, "unixReviewTime": 1}\n{"asin": 1\n',
     r"reviews_Toys_5.json:2: expected a JSON object"),
    ("amazon", "ratings_Toys.csv", "u,i,5,100\nu,j,five,101\n", r"ratings_Toys.csv:2: rating must be a number"),
    ("amazon2023", "Toys.jsonl", '{"user_id": "u", "parent_asin": "p", "rating": 5, "timestamp": 1}\n{"user_id": "u", "rating": 5, "timestamp": 2}\n',
     r"Toys.jsonl:2: review is missing parent_asin"),
    ("movielens", "u.data", "1\t2\t3\t4\n1\t2\t3\n", r"u.data:2: expected 4 fields"),
    ("lcrec", "Toys.inter.json", '{"0": [1, 2],\n "1": 3}', r"Toys.inter.json: user '1': expected a list"),
    # the columnar path: the line loop finds the first bad line (blank lines counted)
    ("movielens", "ratings.csv", "userId,movieId,rating,timestamp\n1,2,3.5,10\n\n1,x2,4,11\n1,3,4,y\n",
     r"ratings.csv:4: item id must be an integer id, got 'x2'"),
    ("movielens", "ratings.dat", "1::2::3::4\n1::2::3\n", r"ratings.dat:2: expected 4 fields"),
    ("movielens", "ratings.dat", "1::2::3::4\n1:9:2::3::4\n", r"ratings.dat:2: expected 4 fields"),
    ("movielens", "u.data", "1\t2\t3\t4\n1\t2\t3\t4.5\n", r"u.data:2: timestamp must be an integer, got '4.5'"),
    ("amazon2023", "Toys.jsonl", ('{"user_id": "u", "parent_asin": "p", "rating": 5, "timestamp": 1}\n\n'
                                  '{"user_id": "u", "parent_asin": "p", "rating": "five", "timestamp": 2}\n'),
     r"Toys.jsonl:3: rating must be a number"),
    ("amazon", "ratings_Toys.csv", 'u,i,5,100\nu,"j,6,101\n', r"ratings_Toys.csv:2: expected 4 comma-separated"),
])
def test_malformed_input_names_file_and_line_and_writes_nothing(tmp_path, capsys, fmt, name, text, expected):
    _write(tmp_path / "in" / name, text)
    out = tmp_path / "out"
    with pytest.raises(DataError, match=expected):
        prepare(fmt, str(tmp_path / "in" / name), out)
    assert main(["data", "prepare", "--format", fmt, "--input", str(tmp_path / "in" / name), "--out", str(out)]) == 2
    assert "error" in capsys.readouterr().err
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["in"]


def test_cli_prepare_synthetic_and_stats(tmp_path, capsys):
    assert main(["data", "prepare", "--format", "synthetic", "--input", "tiny", "--out", str(tmp_path / "s"),
                 "--kcore", "5"]) == 0
    capsys.readouterr()
    assert main(["data", "stats", str(tmp_path / "s")]) == 0
    stats = json.loads(capsys.readouterr().out)
    ds = Dataset.load(tmp_path / "s")
    assert stats["users"] == ds.num_users and stats["interactions"] == ds.num_interactions
    assert ds.lengths().min() >= 5 and np.bincount(ds.item_ids).min() >= 5
    assert main(["data", "stats", str(tmp_path / "missing")]) == 2


def test_amazon_2023_jsonl_reviews_and_meta_with_millisecond_timestamps(tmp_path):
    reviews = [
        {"rating": 5.0, "title": "ok", "text": "nice", "asin": "v2", "parent_asin": "P2", "user_id": "U1",
         "timestamp": 1588615855070, "helpful_vote": 0, "verified_purchase": True},
        {"rating": 4.0, "asin": "v1", "parent_asin": "P1", "user_id": "U1", "timestamp": 1588615000999},
        {"rating": 3.0, "asin": "v1b", "parent_asin": "P1", "user_id": "U2", "timestamp": 1500000000000},
    ]
    _write(tmp_path / "All_Beauty.jsonl.gz", "\n".join(json.dumps(r) for r in reviews) + "\n", compress=True)
    meta = [{"parent_asin": "P1", "title": "Soap", "store": "Acme", "features": ["lavender", "100 g"],
             "description": ["Gentle.", "For hands."], "categories": ["Beauty", "Bath"], "price": None},
            {"parent_asin": "P2", "title": "Comb", "categories": []}]
    _write(tmp_path / "meta_All_Beauty.jsonl", "\n".join(json.dumps(m) for m in meta) + "\n")
    ds = prepare("amazon2023", str(tmp_path / "All_Beauty.jsonl.gz"), tmp_path / "out")
    assert (ds.num_users, ds.num_items, ds.num_interactions) == (2, 2, 3) and ds.name == "All_Beauty"
    assert [it["raw_id"] for it in ds.items] == ["P1", "P2"]  # the product, not its variant
    assert _titles(ds, 0) == ["Soap", "Comb"]  # in time order
    np.testing.assert_array_equal(ds.user_timestamps(0), [1588615000, 1588615855])  # ms // 1000
    assert ds.items[0] == {"raw_id": "P1", "title": "Soap", "brand": "Acme", "attributes": ["lavender", "100 g"],
                           "description": "Gentle. For hands.", "categories": ["Beauty", "Bath"]}
    # the benchmark CSVs of the same release also count milliseconds
    (tmp_path / "All_Beauty.train.csv").write_text("user_id,parent_asin,rating,timestamp\nU1,P1,4.0,1588615000999\n")
    csv_ds = prepare("amazon", str(tmp_path / "All_Beauty.train.csv"), tmp_path / "csv")
    np.testing.assert_array_equal(csv_ds.user_timestamps(0), [1588615000])


def test_values_only_the_line_loop_takes_give_the_same_dataset(tmp_path):
    """Padded fields, ``12.0`` timestamps, JSON numbers as ids, a row with an extra field: the columnar parse
    declines them and the line loop reads the file, as before."""
    _write(tmp_path / "clean" / "ratings.csv", "userId,movieId,rating,timestamp\n1,2,3.5,100\n1,3,4,90\n2,2,5,80\n")
    _write(tmp_path / "odd" / "ratings.csv", "userId,movieId,rating,timestamp\n 1 ,2,3.5,100.0\n1,3, 4,90\n2,2,5,80\n")
    clean, odd = (prepare("movielens", str(tmp_path / d), tmp_path / f"o-{d}") for d in ("clean", "odd"))
    assert odd.user_raw_ids == clean.user_raw_ids == ["1", "2"] and odd.items == clean.items
    np.testing.assert_array_equal(odd.item_ids, clean.item_ids)
    np.testing.assert_array_equal(odd.timestamps, clean.timestamps)
    _write(tmp_path / "Toys.jsonl", '{"user_id": 7, "parent_asin": "p", "rating": 5, "timestamp": 1000}\n'
                                    '{"user_id": "7", "parent_asin": "q", "rating": "4", "timestamp": 2000.0}\n')
    ds = prepare("amazon2023", str(tmp_path / "Toys.jsonl"), tmp_path / "o-json")
    assert ds.user_raw_ids == ["7"] and [it["raw_id"] for it in ds.items] == ["p", "q"]
    np.testing.assert_array_equal(ds.user_ratings(0), [5.0, 4.0])
    _write(tmp_path / "ratings_Toys.csv", "u,i,5,100\nu,j,4,101,extra\n")
    ds = prepare("amazon", str(tmp_path / "ratings_Toys.csv"), tmp_path / "o-csv")
    assert [it["raw_id"] for it in ds.items] == ["i", "j"]
    _write(tmp_path / "ratings_Pets.csv", "u\x1c,i,5,100\n\u3000v,i,4,101\n")  # str.strip() whitespace
    ds = prepare("amazon", str(tmp_path / "ratings_Pets.csv"), tmp_path / "o-strip")
    assert ds.user_raw_ids == ["u", "v"]


def test_meta_is_read_only_for_reviewed_products_and_a_bad_meta_line_is_named(tmp_path):
    _write(tmp_path / "Toys.jsonl", '{"user_id": "u", "parent_asin": "P1", "rating": 5, "timestamp": 1000}\n')
    meta = [{"parent_asin": "P9", "title": "Unreviewed"}, {"parent_asin": "P1", "title": "First"},
            {"parent_asin": "P1", "title": "Repeated id: the first line wins"}]
    _write(tmp_path / "meta_Toys.jsonl", "\n".join(json.dumps(m) for m in meta) + "\n")
    from jaxrec.data.readers import get_reader

    raw = get_reader("amazon2023").read(tmp_path / "Toys.jsonl")
    assert raw.item_meta == {"P1": {"title": "First"}}
    _write(tmp_path / "meta_Toys.jsonl", json.dumps(meta[1]) + '\n{"title": "no id"}\n')
    with pytest.raises(DataError, match=r"meta_Toys.jsonl:2: product is missing 'asin'"):
        prepare("amazon2023", str(tmp_path / "Toys.jsonl"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_parquet_round_trip_and_memory_mapped_arrays(tmp_path):
    items = [{"raw_id": "a", "title": "Caf\u00e9 \u2615", "categories": ["x", "y"], "lcrec_index": ["<a_1>", "<b_2>"]},
             {"raw_id": "b", "description": "", "attributes": [], "brand": "B"},
             {"raw_id": "c"}]
    ds = Dataset.from_sequences([[0, 2], [1]], items, user_raw_ids=["u1", "u2"], timestamps=[[5, 6], [7]],
                                ratings=[[1.5, 2.0], [3.0]], name="toy", info={"format": "test"})
    ds.save(tmp_path / "d")
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == [
        "item_ids.npy", "items.parquet", "meta.json", "offsets.npy", "ratings.npy", "timestamps.npy", "users.parquet"]
    assert json.loads((tmp_path / "d" / "meta.json").read_text())["version"] == 2
    loaded = Dataset.load(tmp_path / "d")
    assert loaded.items == items and loaded.user_raw_ids == ["u1", "u2"] and loaded.titles() == ["Caf\u00e9 \u2615", "item b", "item c"]
    for name in ("offsets", "item_ids", "timestamps", "ratings"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(ds, name))
        assert not getattr(loaded, name).flags.writeable  # memory-mapped read-only, not read into memory
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "d" / "items.parquet")
    assert table.column_names == ["raw_id", "title", "categories", "lcrec_index", "description", "attributes", "brand"]
    assert table["categories"].to_pylist() == [["x", "y"], None, None]


def test_a_version_1_directory_still_loads(tmp_path):
    d = tmp_path / "v1"
    d.mkdir()
    (d / "meta.json").write_text(json.dumps({"format": "jaxrec-dataset", "version": 1, "name": "old", "users": 2,
                                             "items": 2, "interactions": 3, "has_timestamps": True,
                                             "has_ratings": False, "info": {"format": "s3rec"}}))
    (d / "items.jsonl").write_text('{"raw_id": "5", "title": "Kite", "categories": ["Toys"]}\n{"raw_id": "3"}\n')
    (d / "users.jsonl").write_text('{"raw_id": "1"}\n{"raw_id": "2"}\n')
    np.save(d / "offsets.npy", np.array([0, 2, 3], np.int64))
    np.save(d / "item_ids.npy", np.array([0, 1, 1], np.int32))
    np.save(d / "timestamps.npy", np.array([1, 2, 3], np.int64))
    ds = Dataset.load(d)
    assert ds.items == [{"raw_id": "5", "title": "Kite", "categories": ["Toys"]}, {"raw_id": "3"}]
    assert ds.user_raw_ids == ["1", "2"] and ds.name == "old" and ds.ratings is None
    np.testing.assert_array_equal(ds.sequence(0), [0, 1])
    (d / "items.jsonl").write_text('{"raw_id": "5"}\n{"title": "no id"}\n')
    with pytest.raises(DataError, match=r"items.jsonl:2: missing 'raw_id'"):
        Dataset.load(d)
    ds.save(tmp_path / "v2")  # saving writes the current version
    assert Dataset.load(tmp_path / "v2").user_raw_ids == ["1", "2"]
