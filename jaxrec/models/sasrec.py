"""SASRec (Kang & McAuley, 2018): causal self-attention over a user's item sequence, in Flax NNX.

Token convention: token 0 is padding and item id ``i`` is token ``i + 1``, so the item embedding
table has ``num_items + 1`` rows. Sequences are **left-padded** to the static length ``max_len`` so
the newest item is always at the last position. Positions are learned absolute positions
``0..max_len-1`` (as in the paper, counted over the padded window).

Architecture (pre-LayerNorm Transformer blocks, as in the paper's released code):

    x = (E[tokens] * sqrt(d) + P) * not_pad        dropout
    for each block: x = x + Dropout(Attn(LN(x)));  x = x + Dropout(FFN(LN(x)));  x *= not_pad
    h = LN(x)                                        [B, T, d]
    score(item i at step t) = <h[:, t], E[i + 1]>    (item embeddings shared with the input)

Attention is causal and ignores padded keys; a padded query attends to itself only, so no row of
the softmax is empty (those positions carry no loss and are never read).

The model carries one RNG stream for training (``train_rngs.dropout``, seeded by ``dropout_seed``): a
training loss draws one key per step from it, so the stream's counter is the step and a checkpoint of
the model's RNG state resumes the same keys.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy
from flax import nnx, traverse_util

from jaxrec.atomic import atomic_file
from jaxrec.errors import DataError

PAD = 0


@dataclasses.dataclass(frozen=True)
class SASRecConfig:
    """Architecture. ``num_items`` is the catalog size N (item ids 0..N-1)."""

    num_items: int
    max_len: int = 50
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 1
    dropout: float = 0.2

    def __post_init__(self):
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} must be divisible by num_heads {self.num_heads}")
        if min(self.num_items, self.max_len, self.hidden_size, self.num_layers, self.num_heads) < 1:
            raise ValueError("num_items, max_len, hidden_size, num_layers and num_heads must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class SelfAttention(nnx.Module):
    """Multi-head attention with separate q/k/v/o projections (kernels [d, d])."""

    def __init__(self, cfg: SASRecConfig, rngs: nnx.Rngs):
        d = cfg.hidden_size
        self.num_heads = cfg.num_heads
        self.q_proj = nnx.Linear(d, d, rngs=rngs)
        self.k_proj = nnx.Linear(d, d, rngs=rngs)
        self.v_proj = nnx.Linear(d, d, rngs=rngs)
        self.o_proj = nnx.Linear(d, d, rngs=rngs)

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        """x [B, T, d], mask bool [B, 1, T, T] (query, key) -> [B, T, d]."""
        b, t, d = x.shape
        heads = lambda y: y.reshape(b, t, self.num_heads, d // self.num_heads)  # noqa: E731
        out = jax.nn.dot_product_attention(heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x)),
                                           mask=mask)
        return self.o_proj(out.reshape(b, t, d))


class Block(nnx.Module):
    """Pre-LN attention + position-wise feed-forward (ReLU), each with a residual connection."""

    def __init__(self, cfg: SASRecConfig, rngs: nnx.Rngs):
        d = cfg.hidden_size
        self.attn_norm = nnx.LayerNorm(d, epsilon=1e-8, rngs=rngs)
        self.attn = SelfAttention(cfg, rngs)
        self.ffn_norm = nnx.LayerNorm(d, epsilon=1e-8, rngs=rngs)
        self.up_proj = nnx.Linear(d, d, rngs=rngs)
        self.down_proj = nnx.Linear(d, d, rngs=rngs)
        self.dropout = nnx.Dropout(cfg.dropout)

    def __call__(self, x: jax.Array, mask: jax.Array, rngs: nnx.Rngs | None) -> jax.Array:
        drop = lambda y: self.dropout(y, deterministic=rngs is None, rngs=rngs)  # noqa: E731
        x = x + drop(self.attn(self.attn_norm(x), mask))
        h = drop(jax.nn.relu(self.up_proj(self.ffn_norm(x))))
        return x + drop(self.down_proj(h))


class SASRec(nnx.Module):
    """Sequence encoder + dot-product scorer over the item catalog."""

    def __init__(self, cfg: SASRecConfig, rngs: nnx.Rngs, *, dropout_seed: int = 0):
        self.config = cfg
        self.train_rngs = nnx.Rngs(dropout=dropout_seed)  # one key per training step (module docstring)
        init = nnx.initializers.normal(stddev=0.02)
        self.item_embed = nnx.Embed(cfg.num_items + 1, cfg.hidden_size, embedding_init=init, rngs=rngs)
        self.pos_embed = nnx.Embed(cfg.max_len, cfg.hidden_size, embedding_init=init, rngs=rngs)
        self.blocks = nnx.List([Block(cfg, rngs) for _ in range(cfg.num_layers)])
        self.final_norm = nnx.LayerNorm(cfg.hidden_size, epsilon=1e-8, rngs=rngs)
        self.dropout = nnx.Dropout(cfg.dropout)

    def __call__(self, tokens: jax.Array, rngs: nnx.Rngs | None = None) -> jax.Array:
        """Hidden states h [B, T, d] for left-padded tokens int [B, T] (T <= max_len).

        ``rngs`` (with a ``dropout`` stream) enables dropout; ``None`` runs deterministically.
        """
        _, t = tokens.shape
        valid = tokens != PAD
        x = self.item_embed(tokens) * jnp.sqrt(float(self.config.hidden_size))
        x = x + self.pos_embed(jnp.arange(self.config.max_len - t, self.config.max_len))[None]
        x = self.dropout(x, deterministic=rngs is None, rngs=rngs) * valid[..., None]
        causal = jnp.tril(jnp.ones((t, t), dtype=bool))
        mask = (causal[None] & valid[:, None, :]) | jnp.eye(t, dtype=bool)[None]  # [B, Tq, Tk]
        for block in self.blocks:
            x = block(x, mask[:, None], rngs) * valid[..., None]
        return self.final_norm(x)

    def item_embeddings(self) -> jax.Array:
        """float [N, d]: the embedding of every item (padding row dropped), used for scoring/export."""
        return self.item_embed.embedding[...][1:]

    def score_all(self, hidden: jax.Array) -> jax.Array:
        """Scores over the full catalog: hidden [..., d] -> [..., N] (index = item id)."""
        return hidden @ self.item_embeddings().T


def to_tokens(item_ids: jax.Array) -> jax.Array:
    """Item ids (negative = padding) -> tokens (0 = padding)."""
    return jnp.where(item_ids >= 0, item_ids + 1, PAD)


def save_params(model: SASRec, path: str | os.PathLike) -> None:
    """Write every parameter to a safetensors file (keys like ``blocks.0.attn.q_proj.kernel``), atomically."""
    flat = traverse_util.flatten_dict(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    tensors = {_key(p): np.asarray(v) for p, v in flat.items()}
    with atomic_file(path, "wb") as f:
        f.write(safetensors.numpy.save(tensors))


def load_params(model: SASRec, path: str | os.PathLike) -> None:
    """Load :func:`save_params` output into ``model`` in place; names and shapes must match."""
    state = nnx.state(model, nnx.Param)
    flat = traverse_util.flatten_dict(nnx.to_pure_dict(state))
    if not os.path.isfile(path):
        raise DataError(f"{path}: no SASRec checkpoint here (train first with `jaxrec train`)")
    tensors = safetensors.numpy.load_file(path)
    loaded = {}
    for p, current in flat.items():
        key = _key(p)
        if key not in tensors or tensors[key].shape != current.shape:
            found = tensors[key].shape if key in tensors else "missing"
            raise DataError(f"{path}: parameter '{key}' expected shape {tuple(current.shape)}, found {found} "
                            f"(was the checkpoint trained with another model config or dataset?)")
        loaded[p] = jnp.asarray(tensors[key])
    nnx.replace_by_pure_dict(state, traverse_util.unflatten_dict(loaded))
    nnx.update(model, state)


def _key(path: tuple) -> str:
    return ".".join(str(part) for part in path)
