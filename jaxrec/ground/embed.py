"""Text embeddings for grounding and semantic indices, from a decoder-only LLM (jaxrec.models, Llama
family) or a sentence encoder (BERT family, e.g. ``minilm-l6``).

Pooling of one layer's hidden states [B,T,d] (``layer`` indexes HF's ``hidden_states``: 0 the
token embeddings, -1 / L the last layer after the final norm):

* ``"last"``: the state at the last real token (BIGRec: ``hidden_states[-1][:, -1]`` with left
  padding). Found from the attention mask, so left and right padding give the same vector.
* ``"mean"``: the mean over real tokens (LC-Rec's item text embeddings).

A sentence encoder (a model with ``embed``) always gives its own embedding: the mean over real tokens
of the last layer, L2-normalised (sentence-transformers' all-MiniLM), from right-padded batches.

The forward is jitted once per (batch shape, pooling, layer); :meth:`Embedder.embed_texts` pads
every batch to ``batch_size`` rows and a power-of-two length so a catalog needs few compilations,
and yields blocks that :func:`jaxrec.ground.write_item_table` can write as they come. With a mesh,
parameters are placed by their logical axes and each batch is split over the data axes.
"""

from __future__ import annotations

from functools import partial
from typing import Iterable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxrec.decode.driver import batched, padded_length
from jaxrec.errors import JaxrecError
from jaxrec.models.prompts import prompt_ids

POOLINGS = ("last", "mean")


@partial(jax.jit, static_argnums=(0, 4, 5))
def _embed_batch(graphdef, state, input_ids, attention_mask, pooling: str, layer: int):
    model = nnx.merge(graphdef, state)
    if hasattr(model, "embed"):  # a sentence encoder: its own pooling
        return model.embed(input_ids, attention_mask, normalize=True)
    hidden = model(input_ids, attention_mask=attention_mask, return_hidden="all")[layer].astype(jnp.float32)
    mask = attention_mask.astype(jnp.float32)
    if pooling == "mean":
        return jnp.einsum("btd,bt->bd", hidden, mask) / jnp.maximum(mask.sum(1), 1.0)[:, None]
    positions = jnp.arange(mask.shape[1])
    last = jnp.max(jnp.where(mask > 0, positions, 0), axis=1)
    return jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]


class Embedder:
    """Pooled hidden states [B,d] float32 of a decoder-only ``model`` (``return_hidden`` protocol), or
    a sentence encoder's embeddings (``pooling``/``layer`` must then be ``"mean"``/-1)."""

    def __init__(self, model: nnx.Module, *, pooling: str = "last", layer: int = -1, mesh=None):
        if pooling not in POOLINGS:
            raise JaxrecError(f"unknown pooling {pooling!r}; expected one of {', '.join(POOLINGS)}")
        num_layers = model.config.num_layers
        self.encoder = hasattr(model, "embed")
        if self.encoder and (pooling != "mean" or layer != -1):
            raise JaxrecError(f"a sentence encoder ({model.config.model_type}) embeds with its own mean pooling of "
                              f"the last layer; got pooling={pooling!r}, layer={layer}")
        if not -(num_layers + 1) <= layer <= num_layers:
            raise JaxrecError(f"layer must be in [{-(num_layers + 1)}, {num_layers}] (hidden_states of a "
                              f"{num_layers}-layer model: 0 = embeddings, -1 = last), got {layer}")
        self.pooling, self.layer, self.mesh = pooling, layer, mesh
        self.graphdef, state = nnx.split(model)
        if mesh is not None:
            from jaxrec.parallel.rules import place, state_shardings

            state = place(state, state_shardings(state, mesh))
        self.state = state

    def __call__(self, input_ids, attention_mask) -> jax.Array:
        """``input_ids``/``attention_mask`` [B,T] (left or right padded) → embeddings [B,d] float32."""
        input_ids, attention_mask = np.asarray(input_ids), np.asarray(attention_mask)
        if input_ids.ndim != 2 or input_ids.shape != attention_mask.shape:
            raise JaxrecError(f"input_ids and attention_mask must both be [B,T], got {input_ids.shape} "
                              f"and {attention_mask.shape}")
        if not attention_mask.any(axis=1).all():
            raise JaxrecError("every row needs at least one real token (attention_mask all zero in a row)")
        batch = (jnp.asarray(input_ids, jnp.int32), jnp.asarray(attention_mask, jnp.int32))
        if self.mesh is not None:
            from jaxrec.parallel.mesh import check_batch_size
            from jaxrec.parallel.rules import batch_sharding, place

            check_batch_size(input_ids.shape[0], self.mesh, "embedding batch size")
            batch = place(batch, batch_sharding(self.mesh, 2))
        return _embed_batch(self.graphdef, self.state, *batch, self.pooling, self.layer)

    def embed_texts(self, tokenizer, texts: Iterable[str], *, batch_size: int = 16, max_length: int = 64,
                    padding_side: str = "left", pad_id: int | None = None) -> Iterator[np.ndarray]:
        """Yield embedding blocks [b,d] (b = batch_size, fewer at the end) for ``texts`` in order.

        ``tokenizer(texts, truncation=True, max_length=...)`` must return ``{"input_ids": lists}``
        (a Hugging Face tokenizer does; special tokens as the tokenizer adds them).
        """
        if padding_side not in ("left", "right"):
            raise JaxrecError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        padding_side = "right" if self.encoder else padding_side  # absolute positions start at the first token
        pad_id = pad_id if pad_id is not None else (getattr(tokenizer, "pad_token_id", None) or 0)
        texts = list(texts)
        for start in range(0, len(texts), batch_size):
            chunk = texts[start:start + batch_size]
            rows = tokenizer(chunk, truncation=True, max_length=max_length)["input_ids"]
            if min(len(r) for r in rows) == 0:
                raise JaxrecError(f"a text in {chunk!r} tokenizes to no tokens")
            length = min(max_length, 1 << (max(len(r) for r in rows) - 1).bit_length())
            ids = np.full((batch_size, length), pad_id, np.int32)
            mask = np.zeros((batch_size, length), np.int32)
            mask[len(rows):, -1 if padding_side == "left" else 0] = 1  # filler rows: one pad token
            for i, row in enumerate(rows):
                span = slice(length - len(row), length) if padding_side == "left" else slice(0, len(row))
                ids[i, span], mask[i, span] = row, 1
            yield np.asarray(self(ids, mask))[:len(rows)]


def embed_prompt_texts(model, tokenizer, texts: dict[str, list[str]], batch_size: int) -> dict[str, np.ndarray]:
    """float32 [P,d] per group of texts: BIGRec's grounding embedding, the final hidden state at the
    last token of ``[BOS] + text`` (an empty text embeds its BOS, or EOS when the tokenizer has none).
    Texts of all groups are bucketed by length (multiples of 16 tokens: a few compilations, little
    padding) and returned in their groups' order."""
    embedder = Embedder(model, pooling="last")
    names = list(texts)
    seqs = [ids or [tokenizer.eos_token_id] for name in names for ids in prompt_ids(tokenizer, model, texts[name])]
    buckets = np.asarray([padded_length([s]) for s in seqs])
    out = np.empty((len(seqs), model.config.hidden_size), np.float32)
    for length in np.unique(buckets):
        rows = np.flatnonzero(buckets == length)
        out[rows] = batched(lambda ids, mask: (embedder(ids, mask),), [seqs[i] for i in rows], batch_size,
                            tokenizer.pad_token_id, int(length), f"embed {length}-token texts")[0]
    ends = np.cumsum([len(texts[name]) for name in names])
    return dict(zip(names, np.split(out, ends[:-1])))


def encode_texts(pretrained: str, texts: Sequence[str], *, batch_size: int = 64, max_length: int = 128,
                 pooling: str = "mean", dtype: str = "float32") -> np.ndarray:
    """float32 [N,d]: each text embedded by a pretrained model (a name such as ``minilm-l6`` or
    ``smollm2-135m``, a ``.gguf`` file or an HF directory): a sentence encoder's own embedding, or an
    LLM's ``pooling`` of its last layer. Texts are batched in length order (little padding, few
    compiled shapes) and returned in input order."""
    from jaxrec.models import load_pretrained
    from jaxrec.models.tokenizer import load_tokenizer

    texts = list(texts)
    if not texts:
        raise JaxrecError("encode_texts: no texts")
    model, tokenizer = load_pretrained(pretrained, dtype=dtype), load_tokenizer(pretrained)
    order = np.argsort([len(t) for t in texts], kind="stable")
    blocks = Embedder(model, pooling=pooling).embed_texts(tokenizer, [texts[i] for i in order], batch_size=batch_size,
                                                          max_length=max_length, pad_id=tokenizer.pad_token_id)
    out = np.empty((len(texts), model.config.hidden_size), np.float32)
    out[order] = np.concatenate(list(blocks))
    return out
