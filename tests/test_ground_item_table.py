"""Item embedding tables on disk (tensorstore zarr3): round trip, host shards, streamed top-k."""

import json
import os
import socket
import subprocess
import sys
import textwrap

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


MULTIHOST_WORKER = textwrap.dedent("""
    import json, sys
    import jax
    import numpy as np
    from jaxrec.parallel.distributed import DistributedConfig, initialize
    initialize(DistributedConfig(coordinator_address="localhost:{port}", num_processes=2, process_id={pid}))
    from jaxrec.ground import ItemTable, host_rows, multihost_topk
    table = ItemTable({table!r})
    queries = np.load({queries!r})
    out = {{"rows": list(host_rows(table.shape[0]))}}
    for metric in ("l2", "dot"):
        s, i = multihost_topk(queries, table, 10, metric, block_rows=200, tile=64)
        out[metric] = [np.asarray(s).tolist(), np.asarray(i).tolist()]
    json.dump(out, open({out!r}.format(jax.process_index()), "w"))
""")


def test_two_hosts_merge_their_own_rows_into_the_global_topk(tmp_path):
    """Two processes (gloo), each streaming its half of a 1,001-row table; item 501 (host 1's first
    row) duplicates item 0, so the cross-host tie must go to the lower id."""
    rng = np.random.default_rng(5)
    items = rng.normal(size=(1001, 8)).astype(np.float32)
    items[501] = items[0]
    queries = np.concatenate([items[:1], rng.normal(size=(5, 8)).astype(np.float32)])
    write_item_table(tmp_path / "items", [items], 1001, 8, chunk_rows=128)
    np.save(tmp_path / "queries.npy", queries)
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    procs = [subprocess.Popen([sys.executable, "-c", MULTIHOST_WORKER.format(
        port=port, pid=pid, table=str(tmp_path / "items"), queries=str(tmp_path / "queries.npy"),
        out=str(tmp_path / "out{}.json"))], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for pid in range(2)]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), logs[0][-3000:] + logs[1][-3000:]
    results = [json.loads((tmp_path / f"out{h}.json").read_text()) for h in range(2)]
    assert [r["rows"] for r in results] == [[0, 501], [501, 1001]]
    for metric in ("l2", "dot"):
        scores = -((queries[:, None] - items[None]) ** 2).sum(-1) if metric == "l2" else queries @ items.T
        expected = np.lexsort((np.broadcast_to(np.arange(1001), scores.shape), -scores), axis=-1)[:, :10]
        for r in results:  # every host holds the same merged answer
            s, i = np.asarray(r[metric][0]), np.asarray(r[metric][1])
            np.testing.assert_array_equal(i, expected)
            np.testing.assert_allclose(s, np.take_along_axis(scores, expected, -1), rtol=1e-4, atol=1e-4)
    assert results[0]["l2"][1][0][:2] == [0, 501]  # the tie across hosts: lower id first
