"""LC-Rec index files: round trip, errors, and the released Beauty index."""

import json

import numpy as np
import pytest

from jaxrec.errors import DataError
from jaxrec.index.collisions import collision_rate
from jaxrec.index.index_io import codes_to_tokens, index_vocabulary, read_index, write_index
from jaxrec.index.item_embeddings import load_item_embeddings


def test_round_trip(tmp_path):
    codes = np.array([[3, 0, 255], [1, 7, 2], [3, 0, 1]], np.int32)
    write_index(tmp_path / "x.index.json", codes)
    data = json.loads((tmp_path / "x.index.json").read_text())
    assert data["0"] == ["<a_3>", "<b_0>", "<c_255>"]
    np.testing.assert_array_equal(read_index(tmp_path / "x.index.json"), codes)
    assert codes_to_tokens(codes[1:2]) == [["<a_1>", "<b_7>", "<c_2>"]]
    assert index_vocabulary(codes)[:2] == ["<a_1>", "<a_3>"]


@pytest.mark.parametrize("content, message", [
    ('{"0": ["<a_1>", "<c_2>"]}', "token 1"),
    ('{"0": ["<a_1>"], "1": ["<a_1>", "<b_2>"]}', "item 1 has 2 tokens"),
    ('{"0": ["<a_1>"], "2": ["<a_1>"]}', "is not an integer in 0..1"),
    ("[1, 2]", "expected a non-empty JSON object"),
])
def test_bad_files_name_the_problem(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        read_index(path)


def test_reads_the_released_beauty_index(shared_data):
    codes = read_index(shared_data / "amazon-beauty-lcrec" / "Beauty.index.json", num_items=12101)
    assert codes.shape == (12101, 4) and codes.max() < 256
    assert float(collision_rate(codes)) == 0


def test_item_embeddings_sources(tmp_path):
    table = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.save(tmp_path / "t.npy", table)
    np.testing.assert_array_equal(load_item_embeddings(tmp_path / "t.npy", "sasrec", num_items=3), table[1:])
    with pytest.raises(DataError, match="use source 'sasrec'"):
        load_item_embeddings(tmp_path / "t.npy", "npy", num_items=3)
