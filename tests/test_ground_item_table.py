"""Item embedding tables on disk (tensorstore zarr3): round trip, host shards, streamed top-k."""

import numpy as np
import pytest

from jaxrec.errors import DataError, JaxrecError
from jaxrec.ground import ItemTable, host_rows, stream_topk, topk, write_item_table


@pytest.fixture(scope="module")
def items():
    return np.random.default_rng(2).normal(size=(1000, 8)).astype(np.float32)


@pytest.fixture(scope="module")
def table(items, tmp_path_factory):
    path = tmp_path_factory.mktemp("tables") / "items"
    blocks = (items[i:i + 300] for i in range(0, 1000, 300))  # blocks unaligned with the 128-row chunks
    return write_item_table(path, blocks, 1000, 8, chunk_rows=128)


def test_round_trip_and_row_ranges(table, items):
    reopened = ItemTable(table.path)
    assert reopened.shape == (1000, 8) and reopened.dtype == np.float32
    np.testing.assert_array_equal(reopened.rows(0, 1000), items)
    np.testing.assert_array_equal(reopened.rows(250, 390), items[250:390])
    with pytest.raises(JaxrecError, match="outside the item table"):
        reopened.rows(900, 1001)


def test_host_rows_cover_the_catalog_once():
    ranges = [host_rows(1000, i, 3) for i in range(3)]
    assert ranges == [(0, 334), (334, 668), (668, 1000)]


def test_stream_topk_equals_in_memory_topk(table, items):
    queries = np.random.default_rng(3).normal(size=(4, 8)).astype(np.float32)
    s, i = stream_topk(queries, table, 5, block_rows=256, tile=64)  # 4 blocks, the last one padded
    s_ref, i_ref = topk(queries, items, 5, tile=64)
    np.testing.assert_array_equal(i, i_ref)
    np.testing.assert_allclose(s, s_ref, rtol=1e-6)
    _, i_host = stream_topk(queries, table, 5, rows=(334, 668), block_rows=256, tile=64)  # one host's shard
    _, i_ref = topk(queries, items[334:668], 5, tile=64)
    np.testing.assert_array_equal(i_host, np.asarray(i_ref) + 334)


def test_failed_write_leaves_nothing(tmp_path, items):
    with pytest.raises(JaxrecError, match="got 10 rows, expected 20"):
        write_item_table(tmp_path / "short", [items[:10]], 20, 8)
    with pytest.raises(JaxrecError, match="does not fit"):
        write_item_table(tmp_path / "wide", [items[:10, :4]], 10, 8)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DataError, match="not a jaxrec item table"):
        ItemTable(tmp_path / "missing")
