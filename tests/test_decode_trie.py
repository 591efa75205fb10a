"""ItemTrie (NumPy build) and the device constraint automata."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec.decode import ItemTrie, per_level_constraint, trie_constraint
from jaxrec.errors import JaxrecError

EOS = 1
ITEMS = [[5, 6], [5, 7, 8], [4], [5, 6], [5, 7], [9, 9, 9, 9]]


def _dict_trie_children(seqs, prefix):
    return sorted({tuple(s + [EOS])[len(prefix)] for s in seqs
                   if tuple(s + [EOS])[:len(prefix)] == tuple(prefix) and len(s) + 1 > len(prefix)})


def test_csr_matches_a_python_trie_and_maps_leaves_to_items():
    trie = ItemTrie.from_sequences(ITEMS, eos_id=EOS)
    prefixes = {tuple(s + [EOS])[:n] for s in ITEMS for n in range(len(s) + 1)}
    for prefix in prefixes:
        tokens, _ = trie.children(trie.walk(prefix))
        assert list(tokens) == _dict_trie_children(ITEMS, prefix), prefix
    for i, s in enumerate(ITEMS):
        assert trie.item_id(s + [EOS]) == (0 if i == 3 else i)  # duplicate maps to the first
    assert list(trie.duplicates(3)) == [0, 3] and list(trie.duplicates(2)) == [2]
    assert trie.walk([5, 8]) == -1 and trie.item_id([5, EOS]) == -1
    assert trie.widths[:3] == (3, 2, 2) and trie.max_length == 4
    assert list(trie.sequence(1)) == [5, 7, 8, EOS]


def test_array_input_equals_list_input_and_large_build_is_vectorized():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 8, (500, 3)) + 2
    a = ItemTrie.from_sequences(codes, eos_id=EOS)
    b = ItemTrie.from_sequences(codes.tolist(), eos_id=EOS)
    np.testing.assert_array_equal(a.row_ptr, b.row_ptr)
    np.testing.assert_array_equal(a.edge_token, b.edge_token)
    np.testing.assert_array_equal(a.item_of_node, b.item_of_node)
    big = ItemTrie.from_sequences(rng.integers(2, 258, (200_000, 4)), eos_id=EOS)
    assert big.num_nodes < 5 * 200_000 and big.widths[0] == 256


def _check_children(con, trie, nodes, depth):
    tokens, nxt, valid = map(np.asarray, con.children(jnp.asarray(nodes, jnp.int32), depth))
    for row, node in enumerate(nodes):
        want = trie.children(node) if node < trie.num_nodes else ([], [])
        assert list(tokens[row][valid[row]]) == list(want[0])
        assert list(nxt[row][valid[row]]) == list(want[1])


def test_device_children_dense_and_csr_agree_with_host():
    trie = ItemTrie.from_sequences(ITEMS, eos_id=EOS)
    csr = trie_constraint(trie, vocab_size=12, dense_depths=0)
    _check_children(csr, trie, np.arange(trie.num_nodes + 1), None)  # + a padding node
    dense = trie_constraint(trie, vocab_size=12, dense_depths=2)
    for d in range(2):
        _check_children(dense, trie, np.arange(trie.node_depth_start[d], trie.node_depth_start[d + 1]), d)
    assert int(dense.step(jnp.int32(0), jnp.int32(5), 0)) == trie.walk([5])
    assert int(csr.step(jnp.int32(0), jnp.int32(3), None)) == csr.dead


def test_per_level_sets_follow_lcrec():
    trie = ItemTrie.from_sequences(ITEMS, eos_id=EOS)
    assert [list(x) for x in trie.level_tokens] == [[4, 5, 9], [6, 7, 9], [8, 9], [9], [EOS]]
    con = per_level_constraint(trie, vocab_size=12)
    tokens, nxt, valid = map(np.asarray, con.children(jnp.asarray([1, 4], jnp.int32), None))
    assert list(tokens[0][valid[0]]) == [6, 7, 9] and list(nxt[0][valid[0]]) == [2, 2, 2]
    assert list(tokens[1][valid[1]]) == [EOS]


@pytest.mark.parametrize("seqs, message", [
    ([], "at least one item"),
    ([[3, -2]], "negative token id"),
    ([[3, EOS, 4]], "EOS token"),
    ([[3, 40]], "outside the vocabulary"),
])
def test_bad_items_raise_one_clear_error(seqs, message):
    with pytest.raises(JaxrecError, match=message):
        ItemTrie.from_sequences(seqs, eos_id=EOS, vocab_size=32)


def test_a_run_saves_its_trie_and_evaluation_reads_it_back(tmp_path):
    """run_trie(rebuild=True) writes the index and its content key; a later call with the same key reads it
    without building (same CSR); another key (another catalog or tokenizer), or a trie without its key, is built
    again and replaces the saved one."""
    from jaxrec.decode.trie import TRIE_FILE, TRIE_KEY_FILE, content_key, run_trie

    class Vocab:
        def __init__(self, n):
            self.n = n

        def get_vocab(self):
            return {f"t{i}": i for i in range(self.n)}

    key = content_key(Vocab(12), ["a", "b"])
    assert key == content_key(Vocab(12), ["a", "b"]) != content_key(Vocab(13), ["a", "b"])
    assert key != content_key(Vocab(12), ["a", "c"]) and content_key(Vocab(12), np.zeros((2, 3), int)) != \
        content_key(Vocab(12), np.zeros((3, 2), int))
    built = run_trie(tmp_path, lambda: ItemTrie.from_sequences(ITEMS, eos_id=EOS), key, rebuild=True)
    assert (tmp_path / TRIE_FILE).is_file() and (tmp_path / TRIE_KEY_FILE).read_text().strip() == key

    def must_not_build():
        raise AssertionError("the saved trie should have been read")

    loaded = run_trie(tmp_path, must_not_build, key)
    for name in ("row_ptr", "edge_token", "item_of_node", "node_depth_start"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(built, name))
    assert loaded.widths == built.widths and loaded.max_length == built.max_length
    assert [loaded.item_id(loaded.sequence(i).tolist()) for i in range(len(ITEMS))] == \
        [built.item_id(built.sequence(i).tolist()) for i in range(len(ITEMS))]
    other = run_trie(tmp_path, lambda: ItemTrie.from_sequences(ITEMS[:2], eos_id=EOS), "another catalog")
    assert other.num_items == 2 and run_trie(tmp_path, must_not_build, "another catalog").num_items == 2
    (tmp_path / TRIE_KEY_FILE).unlink()
    assert run_trie(tmp_path, lambda: ItemTrie.from_sequences(ITEMS, eos_id=EOS), key).num_items == len(ITEMS)
