"""ID embeddings in an LLM's input space (RSLLM): a projector MLP and the embedding layer that injects it.

Item placeholders are written into the token stream as **negative ids**: ``-1 - item`` stands for
"the projected ID embedding of ``item``" (:func:`placeholder_id`). :class:`ItemInjectingEmbed`
replaces a decoder's token embedding layer (``model.embed_tokens``); it embeds ids >= 0 as usual and
ids < 0 as ``projector(item_table[item])``, a gather plus a ``where`` inside the jitted forward (static
shapes, no host loop). Because the injection lives in the embedding layer, every consumer of the
model works unchanged: the training forward, ``prefill`` / ``decode_step`` of beam search (generated
tokens are never negative) and embedding extraction. The vocabulary is never grown, so LoRA adapters
stay loadable on the unchanged base model.

``item_table`` [N, d_id] (a sequential recommender's item embeddings, e.g. SASRec) is an
:class:`ItemTable` variable (frozen: the trainer never selects it) or an ``nnx.Param`` when it should
be fine-tuned. :func:`inject` / :func:`detach` put the layer in and take it out (before saving the
LLM in Hugging Face format).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxrec.errors import JaxrecError
from jaxrec.models.layers import Linear

#: E[gelu(x)^2] for x ~ N(0, 1): scales the output layer so projections start at a target RMS.
GELU_SECOND_MOMENT = 0.4252


class ItemTable(nnx.Variable):
    """A frozen item embedding table [N, d_id] (not an ``nnx.Param``: never trained)."""


def placeholder_id(item: int) -> int:
    """The token id that stands for ``item``'s projected ID embedding (``-1 - item``)."""
    return -1 - item


class ItemProjector(nnx.Module):
    """Two-layer MLP ``fc2(gelu(fc1(e)))``: ID embedding [..., d_id] → LLM input embedding [..., d].

    ``fc1`` has std 1/sqrt(d_id) (inputs are expected at unit RMS); ``fc2`` is scaled so that at
    initialisation the outputs have RMS ``out_rms`` (e.g. the LLM's token-embedding RMS), so injected
    vectors start at the scale of ordinary tokens.
    """

    def __init__(self, in_features: int, hidden: int, out_features: int, *, out_rms: float, dtype=jnp.float32,
                 rngs: nnx.Rngs):
        self.fc1 = Linear(in_features, hidden, axes=(None, "mlp"), use_bias=True,
                          std=1.0 / math.sqrt(in_features), dtype=dtype, rngs=rngs)
        self.fc2 = Linear(hidden, out_features, axes=("mlp", "embed"), use_bias=True,
                          std=out_rms / math.sqrt(GELU_SECOND_MOMENT * hidden), dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(jax.nn.gelu(self.fc1(x), approximate=False))


class ItemInjectingEmbed(nnx.Module):
    """Token embedding with item placeholders: ids [...] → [..., d] (ids < 0: projected ID embeddings).

    ``base``: the LLM's own embedding layer (kept, and used for ``attend`` when the output layer is
    tied); ``projector``: :class:`ItemProjector`; ``item_table``: float [N, d_id].
    """

    def __init__(self, base: nnx.Module, projector: ItemProjector, item_table, *, trainable_table: bool = False):
        table = jnp.asarray(item_table, jnp.float32)
        if table.ndim != 2:
            raise JaxrecError(f"item_table must be [num_items, dim], got shape {table.shape}")
        self.base = base
        self.projector = projector
        kind = nnx.Param if trainable_table else ItemTable
        self.item_table = kind(table, out_sharding=("items", None), eager_sharding=False)
        self.dtype = base.dtype

    @property
    def num_items(self) -> int:
        return self.item_table.shape[0]

    def project(self, items: jax.Array) -> jax.Array:
        """items int [...] → projected ID embeddings [..., d] in the compute dtype."""
        rows = jnp.take(self.item_table[...], items, axis=0)
        return self.projector(rows).astype(self.dtype)

    def __call__(self, ids: jax.Array) -> jax.Array:
        is_item = (ids < 0)[..., None]
        tokens = self.base(jnp.maximum(ids, 0))
        items = self.project(jnp.clip(-1 - ids, 0, self.num_items - 1))
        return jnp.where(is_item, items, tokens)

    def attend(self, x: jax.Array) -> jax.Array:
        return self.base.attend(x)


def inject(model: nnx.Module, projector: ItemProjector, item_table, *, trainable_table: bool = False) -> nnx.Module:
    """Replace ``model.embed_tokens`` by an :class:`ItemInjectingEmbed` (in place); returns ``model``."""
    if isinstance(model.embed_tokens, ItemInjectingEmbed):
        raise JaxrecError("the model already injects item embeddings")
    model.embed_tokens = ItemInjectingEmbed(model.embed_tokens, projector, item_table, trainable_table=trainable_table)
    return model


def detach(model: nnx.Module) -> ItemInjectingEmbed:
    """Put the LLM's own embedding layer back (in place); returns the removed injecting layer."""
    layer = model.embed_tokens
    if not isinstance(layer, ItemInjectingEmbed):
        raise JaxrecError("the model has no item-injecting embedding layer")
    model.embed_tokens = layer.base
    return layer


def token_embedding_rms(model: nnx.Module) -> float:
    """Root mean square of the entries of ``model.embed_tokens``' table (the scale of ordinary tokens)."""
    table = model.embed_tokens.embedding[...]
    return float(jnp.sqrt(jnp.mean(jnp.square(table.astype(jnp.float32)))))


def unit_rms(table: np.ndarray) -> np.ndarray:
    """``table`` / its global RMS (float32): the projector's expected input scale."""
    table = np.asarray(table, np.float32)
    rms = float(np.sqrt(np.mean(np.square(table))))
    if not np.isfinite(rms) or rms == 0.0:
        raise JaxrecError(f"item embedding table has RMS {rms}: expected finite, non-zero embeddings")
    return table / rms
