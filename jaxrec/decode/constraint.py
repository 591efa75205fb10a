"""Constraint automata on device: which tokens each beam may emit next, and where that leads.

A constraint is a deterministic automaton over token ids whose states are integers (trie nodes).
``children(node, depth)`` returns, for every beam, a fixed number C of candidate (token, next node)
pairs plus a validity mask; beam search gathers the log-probs of those candidates only (the STATIC
design: no [beams, vocab] mask is materialised and no host callback runs). Two storage forms:

* CSR (compressed sparse rows) for any depth: a beam's children are edges row_ptr[n] : row_ptr[n+1];
  C = the most children of any node at that depth (static, from the trie), read as one gather of C
  consecutive edges per beam.
* dense tables for the first ``dense_depths`` depths: a [nodes at depth d, V] table of next nodes
  (-1 = forbidden), used where a depth's branching is close to the vocabulary (C = V, no token gather).

Three constraints, one interface:
* :func:`trie_constraint` — exact: every finished output is an item (default).
* :func:`per_level_constraint` — LC-Rec's ``prefix_allowed_tokens_fn``: at step t any token found at
  position t of any item, regardless of the prefix; EOS only at step ``max_length`` (LC-Rec adds
  ``allowed_tokens[len(allowed_tokens)] = {eos}``), so outputs need not be items.
* :func:`unconstrained` — all V tokens at every step.

Node and edge arrays are padded to power-of-two sizes and CSR widths rounded up to powers of two, so
catalogues of similar size reuse one compiled search. The last padding node, ``dead``, has no
children: beams that leave the automaton, and empty candidate slots, are parked there.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxrec.decode.trie import ItemTrie

DENSE_TABLE_BUDGET = 64 << 20  # bytes allowed for the dense first-depth tables (auto mode)


@struct.dataclass
class Constraint:
    """Device arrays of one automaton (see module docstring). Static fields key the compiled program.

    row_ptr [dead + 2] int32; edge_token [E] int32; edge_child [E] int32 (padded sizes);
    dense_tables: tuple of [nodes of depth d, V] int32 for d < len(dense_tables);
    widths[d]: candidates per beam at depth d (static); dense_starts[d]: first node id of depth d.
    """

    row_ptr: jax.Array
    edge_token: jax.Array
    edge_child: jax.Array
    dense_tables: tuple
    widths: tuple = struct.field(pytree_node=False)
    dense_starts: tuple = struct.field(pytree_node=False)
    dead: int = struct.field(pytree_node=False)
    vocab_size: int = struct.field(pytree_node=False)
    full_vocab: bool = struct.field(pytree_node=False, default=False)

    def is_full(self, depth: int | None) -> bool:
        """True when the candidates at ``depth`` are the whole vocabulary in token order."""
        return self.full_vocab or (depth is not None and depth < len(self.dense_tables))

    def width(self, depth: int | None) -> int:
        """Candidates per beam at ``depth``; None = any depth (the widest), for a traced loop."""
        if self.is_full(depth):
            return self.vocab_size
        widths = self.widths if depth is None else self.widths[depth:depth + 1]
        return max(1, max(widths, default=1))

    def children(self, node: jax.Array, depth: int | None):
        """Candidates of every beam. node [...] int32 at ``depth`` (static int, or None if traced).

        Returns (tokens [..., C] int32, next_node [..., C] int32, valid [..., C] bool), C = width(depth).
        With C = V, tokens[..., v] = v, so a caller can use log-probs as they are.
        """
        vocab = jnp.arange(self.vocab_size, dtype=jnp.int32)
        if self.full_vocab:
            tokens = jnp.broadcast_to(vocab, node.shape + vocab.shape)
            return tokens, jnp.broadcast_to(node[..., None], tokens.shape), tokens >= 0
        if self.is_full(depth):
            table = self.dense_tables[depth]
            row = node - self.dense_starts[depth]
            inside = (row >= 0) & (row < table.shape[0])
            nxt = jnp.where(inside[..., None], table[jnp.clip(row, 0, table.shape[0] - 1)], -1)
            valid = nxt >= 0
            tokens = jnp.broadcast_to(vocab, nxt.shape)
            return tokens, jnp.where(valid, nxt, self.dead), valid
        width = self.width(depth)
        start = self.row_ptr[node]
        count = self.row_ptr[node + 1] - start
        offset = jnp.arange(width, dtype=jnp.int32)
        edge = jnp.clip(start[..., None] + offset, 0, self.edge_token.shape[0] - 1)
        valid = offset < count[..., None]
        tokens = jnp.where(valid, self.edge_token[edge], 0)
        return tokens, jnp.where(valid, self.edge_child[edge], self.dead), valid

    def step(self, node: jax.Array, token: jax.Array, depth: int | None) -> jax.Array:
        """Next node after emitting ``token`` [...] from ``node`` [...]; ``dead`` when not allowed."""
        tokens, nxt, valid = self.children(node, depth)
        hit = valid & (tokens == token[..., None])
        return jnp.where(hit.any(-1), jnp.sum(jnp.where(hit, nxt, 0), -1), self.dead).astype(jnp.int32)


def bucket(n: int) -> int:
    """Round a size up to a power of two (>= 8): tries of similar size share one compiled search."""
    return max(8, 1 << (max(n, 1) - 1).bit_length())


def _bucket_widths(widths, vocab_size: int) -> tuple[int, ...]:
    return tuple(min(bucket(int(w)), vocab_size) if w else 0 for w in widths)


def _csr_arrays(row_ptr: np.ndarray, edge_token: np.ndarray, edge_child: np.ndarray):
    """Pad nodes and edges to bucket sizes (padding nodes have no children; the last one is the
    dead node) and move to device. Returns (row_ptr, edge_token, edge_child, dead)."""
    nodes = bucket(len(row_ptr))  # >= real nodes + 1, so at least one padding node
    edges = bucket(len(edge_token))
    row_ptr = np.pad(row_ptr, (0, nodes + 1 - len(row_ptr)), mode="edge")
    edge_token = np.pad(edge_token, (0, edges - len(edge_token)))
    edge_child = np.pad(edge_child, (0, edges - len(edge_child)), constant_values=nodes - 1)
    return (jnp.asarray(row_ptr, jnp.int32), jnp.asarray(edge_token, jnp.int32),
            jnp.asarray(edge_child, jnp.int32), nodes - 1)


def _auto_dense_depths(trie: ItemTrie, vocab_size: int) -> int:
    """Leading depths whose branching is >= V/4 (a gather saves little) and whose tables fit the budget."""
    used, depths = 0, 0
    for d, width in enumerate(trie.widths):
        nodes = int(trie.node_depth_start[d + 1] - trie.node_depth_start[d])
        used += nodes * vocab_size * 4
        if width * 4 < vocab_size or used > DENSE_TABLE_BUDGET:
            break
        depths = d + 1
    return depths


def trie_constraint(trie: ItemTrie, vocab_size: int, dense_depths: int | None = None) -> Constraint:
    """The exact item trie; ``dense_depths`` None = automatic (see :func:`_auto_dense_depths`)."""
    if dense_depths is None:
        dense_depths = _auto_dense_depths(trie, vocab_size)
    tables, starts = [], []
    for d in range(min(dense_depths, len(trie.widths))):
        lo, hi = int(trie.node_depth_start[d]), int(trie.node_depth_start[d + 1])
        table = np.full((hi - lo, vocab_size), -1, np.int32)
        edges = np.arange(trie.row_ptr[lo], trie.row_ptr[hi])
        owner = np.searchsorted(trie.row_ptr[lo:hi + 1], edges, side="right") - 1
        table[owner, trie.edge_token[edges]] = edges + 1
        tables.append(jnp.asarray(table))
        starts.append(lo)
    row_ptr, edge_token, edge_child, dead = _csr_arrays(
        trie.row_ptr, trie.edge_token, np.arange(1, trie.num_nodes, dtype=np.int32))
    return Constraint(row_ptr, edge_token, edge_child, tuple(tables), dense_starts=tuple(starts),
                      widths=_bucket_widths(trie.widths, vocab_size),
                      dead=dead, vocab_size=vocab_size)


def per_level_constraint(trie: ItemTrie, vocab_size: int) -> Constraint:
    """LC-Rec's per-position token sets as a chain automaton: node t -> node t + 1 by any token of
    level t; node max_length has only EOS, leading to node max_length + 1 (no children)."""
    levels = trie.level_tokens
    counts = np.array([len(x) for x in levels] + [0])
    row_ptr = np.concatenate([[0], np.cumsum(counts)])
    edge_token = np.concatenate(levels)
    edge_child = np.repeat(np.arange(1, len(levels) + 1), counts[:-1])
    row_ptr, edge_token, edge_child, dead = _csr_arrays(row_ptr, edge_token, edge_child)
    return Constraint(row_ptr, edge_token, edge_child, (), dense_starts=(), dead=dead,
                      widths=_bucket_widths(counts, vocab_size), vocab_size=vocab_size)


def unconstrained(vocab_size: int) -> Constraint:
    """Every token allowed at every step (node stays 0)."""
    empty = jnp.zeros((1,), jnp.int32)
    return Constraint(jnp.zeros((3,), jnp.int32), empty, empty, (), widths=(), dense_starts=(),
                      dead=1, vocab_size=vocab_size, full_vocab=True)
