"""The item trie: every valid item's token sequence (+ EOS) as a prefix tree, built in NumPy.

Built once, vectorized (no Python loop over items): the sequences are padded into an [N, L] matrix,
sorted lexicographically, and a node is opened wherever a sorted row first differs from the row above
it. Nodes are numbered breadth first (root = 0, then all depth-1 nodes, ...), so the children of a node
are contiguous and sorted by token, and the trie is stored in compressed sparse rows:

    children of node n = edges row_ptr[n] : row_ptr[n + 1]; edge e leads to node e + 1 via edge_token[e]

Memory is O(#nodes). A leaf is the node reached by an item's EOS; ``item_of_node`` maps it to the item.

Duplicates: items whose token sequences are identical share one leaf. ``item_of_node`` (and so
``beam_search``'s ``item_ids``) gives the lowest item index of the group; :meth:`ItemTrie.duplicates`
gives the whole group.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path

import numpy as np

from jaxrec.atomic import atomic_file
from jaxrec.errors import DataError
from jaxrec.models.prompts import encode

PAD = -1  # fills the item matrix after each item's EOS
TRIE_FILE = "item_trie.npz"  # a run directory's constraint index
TRIE_KEY_FILE = "item_trie.key"  # what it encodes (content_key)


def _item_matrix(seqs: Sequence[Sequence[int]] | np.ndarray, eos_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(matrix [N, L+1] int64: each row = item tokens, EOS, then PAD; lengths [N] without EOS)."""
    if isinstance(seqs, np.ndarray):
        if seqs.ndim != 2:
            raise DataError(f"item sequences: expected a 2-D [items, length] array, got shape {seqs.shape}")
        tokens = seqs.astype(np.int64)
        lengths = np.full(len(tokens), tokens.shape[1], np.int64)
        matrix = np.concatenate([tokens, np.full((len(tokens), 1), eos_id, np.int64)], axis=1)
        return matrix, lengths
    lengths = np.fromiter((len(s) for s in seqs), np.int64, count=len(seqs))
    flat = np.fromiter((t for s in seqs for t in s), np.int64, count=int(lengths.sum()))
    matrix = np.full((len(seqs), int(lengths.max(initial=0)) + 1), PAD, np.int64)
    rows = np.repeat(np.arange(len(seqs)), lengths)
    cols = np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    matrix[rows, cols] = flat
    matrix[np.arange(len(seqs)), lengths] = eos_id
    return matrix, lengths


def _lexicographic_order(matrix: np.ndarray) -> np.ndarray:
    """Stable lexicographic row order (identical rows keep item order). Rows are packed into one
    int64 key when they fit (one argsort instead of a sort per column)."""
    bits = int(matrix.max() + 2).bit_length()  # tokens + 1 (PAD -> 0)
    if bits * matrix.shape[1] > 63:
        return np.lexsort(matrix.T[::-1])
    key = np.zeros(len(matrix), np.int64)
    for column in matrix.T:
        key = (key << bits) | (column + 1)
    return np.argsort(key, kind="stable")


class ItemTrie:
    """Prefix tree over items' token sequences, each terminated by ``eos_id``.

    Attributes (NumPy, host):
      row_ptr [num_nodes + 1] int32, edge_token [num_nodes - 1] int32: the CSR described above;
      node_depth_start [max_length + 3] int32: nodes of depth d are node_depth_start[d] : [d + 1]
        (depth = number of tokens on the path from the root);
      item_of_node [num_nodes] int32: lowest item index whose sequence ends at that leaf, else -1;
      widths tuple[int]: widths[d] = most children of any depth-d node (max branching per step).
    """

    def __init__(self, matrix: np.ndarray, lengths: np.ndarray, eos_id: int):
        self.eos_id = int(eos_id)
        self.num_items = len(matrix)
        self.max_length = int(lengths.max())  # longest item, without EOS
        self.max_token = int(matrix.max())
        order = _lexicographic_order(matrix)
        rows = matrix[order]
        present = rows != PAD
        differs = np.ones(rows.shape, bool)
        differs[1:] = np.logical_or.accumulate(rows[1:] != rows[:-1], axis=1)
        opens = differs & present  # row i opens a new node at depth d + 1
        per_level = opens.sum(axis=0)
        level_start = 1 + np.concatenate([[0], np.cumsum(per_level)])  # first node id of depth d + 1
        node_at = level_start[None, :-1] + np.cumsum(opens, axis=0) - 1  # [N, L]: node of row at col
        num_nodes = int(level_start[-1])
        parent = np.zeros(num_nodes, np.int64)
        token = np.zeros(num_nodes, np.int64)
        r, c = np.nonzero(opens.T)  # column-major = breadth-first node order
        ids = node_at[c, r]
        token[ids] = rows[c, r]
        parent[ids] = np.where(r > 0, node_at[c, np.maximum(r - 1, 0)], 0)
        self.num_nodes = num_nodes
        self.edge_token = token[1:].astype(np.int32)
        self.row_ptr = np.searchsorted(parent[1:], np.arange(num_nodes + 1)).astype(np.int32)
        self.node_depth_start = np.concatenate([[0], level_start]).astype(np.int32)
        leaf = node_at[np.arange(len(rows)), lengths[order]]
        self.item_of_node = np.full(num_nodes, -1, np.int32)
        first_of_group = np.ones(len(rows), bool)
        first_of_group[1:] = leaf[1:] != leaf[:-1]
        self.item_of_node[leaf[first_of_group]] = order[first_of_group]
        self._leaf_sorted = leaf  # leaf of each sorted row (non-decreasing)
        self._order = order.astype(np.int32)
        self._item_leaf = np.empty(len(rows), np.int64)
        self._item_leaf[order] = leaf
        self._matrix = matrix.astype(np.int32)
        counts = np.diff(self.row_ptr)
        self.widths = tuple(
            int(counts[self.node_depth_start[d]:self.node_depth_start[d + 1]].max(initial=0))
            for d in range(len(self.node_depth_start) - 1))

    @classmethod
    def from_sequences(cls, seqs: Sequence[Sequence[int]] | np.ndarray, eos_id: int,
                       vocab_size: int | None = None) -> "ItemTrie":
        """Build from item token sequences (without EOS): a list of int lists, or an [N, L] int array.

        Raises DataError for no items, a non-integer, negative or out-of-vocabulary token id, an EOS
        outside the vocabulary, or an EOS inside an item.
        """
        if len(seqs) == 0:
            raise DataError("item sequences: need at least one item, got none")
        if not (isinstance(eos_id, (int, np.integer)) and 0 <= eos_id < (vocab_size or np.iinfo(np.int64).max)):
            raise DataError(f"item sequences: eos_id must be a token id in the vocabulary, got {eos_id!r}")
        values = seqs if isinstance(seqs, np.ndarray) else np.asarray([t for s in seqs for t in s])
        if values.size and not np.issubdtype(values.dtype, np.integer):
            raise DataError(f"item sequences: token ids must be integers, got {values.dtype} values")
        matrix, lengths = _item_matrix(seqs, eos_id)
        body = np.arange(matrix.shape[1])[None, :] < lengths[:, None]
        for bad, what in ((body & (matrix < 0), "a negative token id"),
                          (body & (matrix == eos_id), f"the EOS token {eos_id} inside the sequence"),
                          (body & (matrix >= (vocab_size or np.iinfo(np.int64).max)),
                           f"a token id outside the vocabulary (vocab_size={vocab_size})")):
            if bad.any():
                item, pos = np.argwhere(bad)[0]
                raise DataError(f"item sequences: item {item} has {what}: token {matrix[item, pos]} at "
                                f"position {pos}")
        return cls(matrix, lengths, eos_id)

    # ------------------------------------------------------------------ host-side queries
    def children(self, node: int) -> tuple[np.ndarray, np.ndarray]:
        """(tokens, child node ids) of ``node``, tokens ascending."""
        lo, hi = self.row_ptr[node], self.row_ptr[node + 1]
        return self.edge_token[lo:hi], np.arange(lo + 1, hi + 1, dtype=np.int32)

    def walk(self, tokens: Sequence[int]) -> int:
        """Node reached from the root by ``tokens``, or -1 when they leave the trie."""
        node = 0
        for t in tokens:
            kids, ids = self.children(node)
            i = np.searchsorted(kids, t)
            if i == len(kids) or kids[i] != t:
                return -1
            node = int(ids[i])
        return node

    def item_id(self, tokens: Sequence[int]) -> int:
        """Lowest item index whose sequence + EOS equals ``tokens`` (which must end with EOS), else -1."""
        node = self.walk(tokens)
        return -1 if node < 0 else int(self.item_of_node[node])

    def duplicates(self, item_id: int) -> np.ndarray:
        """All item indices (ascending) whose token sequence is identical to item ``item_id``'s."""
        leaf = self._item_leaf[item_id]
        lo, hi = np.searchsorted(self._leaf_sorted, [leaf, leaf + 1])
        return np.sort(self._order[lo:hi])

    def sequence(self, item_id: int) -> np.ndarray:
        """Item ``item_id``'s tokens followed by EOS."""
        row = self._matrix[item_id]
        return row[row != PAD]

    @cached_property
    def level_tokens(self) -> tuple[np.ndarray, ...]:
        """LC-Rec's per-position sets: level_tokens[t] = sorted tokens found at position t of any item
        (EOS excluded), for t < max_length; level_tokens[max_length] = [EOS]."""
        body = self._matrix[:, :self.max_length]
        levels = [np.unique(col[(col != PAD) & (col != self.eos_id)]) for col in body.T]
        return tuple(np.asarray(x, np.int32) for x in levels) + (np.array([self.eos_id], np.int32),)

    @property
    def nbytes(self) -> int:
        """Bytes of the CSR index (row_ptr + edge_token + item_of_node)."""
        return self.row_ptr.nbytes + self.edge_token.nbytes + self.item_of_node.nbytes

    def save(self, path: str | Path) -> None:
        """Write the item token matrix the trie is built from (``.npz``, atomically)."""
        lengths = np.argmax(self._matrix == self.eos_id, axis=1) if self.num_items else np.zeros(0, np.int64)
        with atomic_file(path, "wb") as f:
            np.savez(f, matrix=self._matrix, lengths=lengths, eos_id=self.eos_id)

    @classmethod
    def load(cls, path: str | Path) -> "ItemTrie":
        """The trie :meth:`save` wrote (rebuilt from its matrix, no tokenizer needed)."""
        with np.load(path) as f:
            return cls(f["matrix"].astype(np.int64), f["lengths"].astype(np.int64), int(f["eos_id"]))


def text_trie(tokenizer, texts: Sequence[str], vocab_size: int) -> ItemTrie:
    """The trie over each item's text (``texts[i]`` = item i; token ids without special tokens)."""
    return ItemTrie.from_sequences(encode(tokenizer, texts), eos_id=tokenizer.eos_token_id, vocab_size=vocab_size)


def content_key(tokenizer, content: Sequence[str] | np.ndarray) -> str:
    """A fingerprint of what a trie encodes: the items' content (texts, or codes [N, L]) and the tokenizer's
    vocabulary that turns it into token ids."""
    digest = hashlib.sha256()
    digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    if isinstance(content, np.ndarray):
        digest.update(str(content.shape).encode() + np.ascontiguousarray(content, np.int64).tobytes())
    else:
        digest.update(json.dumps(list(content)).encode())
    return digest.hexdigest()


def run_trie(run_dir: str | Path, build: Callable[[], ItemTrie], key: str, *, rebuild: bool = False) -> ItemTrie:
    """A run's constraint index, saved with the run (``run_dir/item_trie.npz``): training builds and writes it
    (``rebuild``), evaluation reads it back. ``key`` (:func:`content_key`) is stored beside it: a saved trie of
    other content (another catalog, another tokenizer) is built again, never used."""
    path, key_path = Path(run_dir) / TRIE_FILE, Path(run_dir) / TRIE_KEY_FILE
    if not rebuild and path.is_file() and key_path.is_file() and key_path.read_text().strip() == key:
        return ItemTrie.load(path)
    trie = build()
    key_path.unlink(missing_ok=True)  # the key last: a trie without its key is never read
    trie.save(path)
    with atomic_file(key_path) as f:
        f.write(key + "\n")
    return trie
