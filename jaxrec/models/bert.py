"""BERT-family encoder (BERT, sentence-transformers MiniLM) in Flax NNX, for text embeddings.

Post-norm encoder layers with biased projections and a padding mask; absolute learned positions
0..T-1 and token types. ``embed`` gives sentence-transformers' mean pooling (optionally L2
normalised, as all-MiniLM-L6-v2's Normalize module). The pooler is not built (its weights, if
stored, are ignored on load).

Shapes: B batch, T length, d hidden_size, N heads, H head dim (d / N).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Collection

import jax
import jax.numpy as jnp
from flax import nnx

from jaxrec.errors import JaxrecError
from jaxrec.models.attention import attend
from jaxrec.models.layers import ACTIVATIONS, Embed, LayerNorm, Linear, activation, as_dtype

# our layer submodule -> its HF name under encoder.layer.<i>
_HF_LAYER_NAMES = {
    "query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
    "attention_output": "attention.output.dense", "attention_norm": "attention.output.LayerNorm",
    "intermediate": "intermediate.dense", "output": "output.dense", "output_norm": "output.LayerNorm",
}
_HF_PARAM_NAMES = {"kernel": "weight", "embedding": "weight", "scale": "weight", "bias": "bias"}


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """Architecture of a BERT encoder (names follow ours; :meth:`from_hf` maps HF's)."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    pad_token_id: int | None = 0
    initializer_range: float = 0.02
    dtype: str = "float32"
    param_dtype: str = "float32"
    model_type: str = "bert"

    def __post_init__(self):
        if self.model_type != "bert":
            raise JaxrecError(f"BertConfig: unsupported model_type {self.model_type!r}")
        if self.hidden_size % self.num_heads:
            raise JaxrecError(f"hidden_size={self.hidden_size} is not a multiple of "
                              f"num_heads={self.num_heads}")
        if self.hidden_act not in ACTIVATIONS:
            raise JaxrecError(f"unsupported activation {self.hidden_act!r}: expected one of "
                              f"{sorted(ACTIVATIONS)}")

    @classmethod
    def from_hf(cls, hf: dict[str, Any], weight_names: Collection[str] = (), **overrides) -> "BertConfig":
        """Map an HF BERT config.json dict to a BertConfig (absolute positions only; the checkpoint's
        ``weight_names`` are not needed)."""
        position_type = hf.get("position_embedding_type", "absolute")
        if position_type != "absolute":
            raise JaxrecError(f"BERT position_embedding_type {position_type!r} is not supported "
                              f"(only 'absolute')")
        fields = dict(
            vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
            num_layers=hf["num_hidden_layers"], num_heads=hf["num_attention_heads"],
            intermediate_size=hf["intermediate_size"],
            max_position_embeddings=hf.get("max_position_embeddings", 512),
            type_vocab_size=hf.get("type_vocab_size", 2),
            layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
            hidden_act=hf.get("hidden_act", "gelu"), pad_token_id=hf.get("pad_token_id", 0),
            initializer_range=hf.get("initializer_range", 0.02),
        )
        fields.update(overrides)
        return cls(**fields)

    def to_hf(self) -> dict[str, Any]:
        """The HF config.json dict that ``transformers.BertModel`` loads."""
        return {
            "architectures": ["BertModel"], "model_type": "bert", "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size, "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads, "intermediate_size": self.intermediate_size,
            "max_position_embeddings": self.max_position_embeddings,
            "type_vocab_size": self.type_vocab_size, "layer_norm_eps": self.layer_norm_eps,
            "hidden_act": self.hidden_act, "pad_token_id": self.pad_token_id,
            "initializer_range": self.initializer_range,
            "position_embedding_type": "absolute", "torch_dtype": self.param_dtype,
        }


def _kw(config: BertConfig, rngs: nnx.Rngs | None = None) -> dict[str, Any]:
    kw = dict(dtype=as_dtype(config.dtype), param_dtype=as_dtype(config.param_dtype))
    return kw if rngs is None else dict(kw, std=config.initializer_range, rngs=rngs)


class BertEmbeddings(nnx.Module):
    """LayerNorm(word + position + token type embeddings)."""

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
        d = config.hidden_size
        self.word_embeddings = Embed(config.vocab_size, d, **_kw(config, rngs))
        self.position_embeddings = Embed(config.max_position_embeddings, d, axes=(None, "embed"),
                                         **_kw(config, rngs))
        self.token_type_embeddings = Embed(config.type_vocab_size, d, axes=(None, "embed"),
                                           **_kw(config, rngs))
        self.layer_norm = LayerNorm(d, eps=config.layer_norm_eps, **_kw(config))

    def __call__(self, input_ids: jax.Array, token_type_ids: jax.Array) -> jax.Array:
        """input_ids, token_type_ids [B,T] int -> [B,T,d] (positions 0..T-1)."""
        positions = jnp.arange(input_ids.shape[1])
        x = (self.word_embeddings(input_ids) + self.position_embeddings(positions)[None]
             + self.token_type_embeddings(token_type_ids))
        return self.layer_norm(x)


class BertLayer(nnx.Module):
    """x = norm(x + attn(x)); x = norm(x + output(act(intermediate(x))))."""

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
        d, f = config.hidden_size, config.intermediate_size
        kw = dict(use_bias=True, **_kw(config, rngs))
        self.query = Linear(d, d, axes=("embed", "heads"), **kw)
        self.key = Linear(d, d, axes=("embed", "heads"), **kw)
        self.value = Linear(d, d, axes=("embed", "heads"), **kw)
        self.attention_output = Linear(d, d, axes=("heads", "embed"), **kw)
        self.attention_norm = LayerNorm(d, eps=config.layer_norm_eps, **_kw(config))
        self.intermediate = Linear(d, f, axes=("embed", "mlp"), **kw)
        self.output = Linear(f, d, axes=("mlp", "embed"), **kw)
        self.output_norm = LayerNorm(d, eps=config.layer_norm_eps, **_kw(config))
        self.act = activation(config.hidden_act)
        self.num_heads, self.head_dim = config.num_heads, d // config.num_heads

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        """x [B,T,d], mask bool [B,1,1,T] (True = real key token) -> [B,T,d]."""
        b, t, d = x.shape
        q, k, v = (proj(x).reshape(b, t, self.num_heads, self.head_dim)
                   for proj in (self.query, self.key, self.value))
        attn = attend(q, k, v, mask, scale=self.head_dim ** -0.5).reshape(b, t, d)
        x = self.attention_norm(x + self.attention_output(attn))
        return self.output_norm(x + self.output(self.act(self.intermediate(x))))


class BertModel(nnx.Module):
    """BERT encoder. ``model(input_ids, attention_mask)`` -> last hidden state [B,T,d];
    ``model.embed(input_ids, attention_mask)`` -> mean-pooled float32 [B,d]."""

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.embeddings = BertEmbeddings(config, rngs=rngs)
        self.layers = nnx.List([BertLayer(config, rngs=rngs) for _ in range(config.num_layers)])

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None) -> jax.Array:
        """input_ids [B,T] int; attention_mask [B,T] (1 = token, 0 = pad; default all tokens);
        token_type_ids [B,T] (default 0). Returns the last hidden state [B,T,d] (compute dtype)."""
        input_ids = jnp.asarray(input_ids)
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        x = self.embeddings(input_ids, jnp.asarray(token_type_ids))
        mask = None
        if attention_mask is not None:
            mask = jnp.asarray(attention_mask).astype(bool)[:, None, None, :]
        for layer in self.layers:
            x = layer(x, mask)
        return x

    def embed(self, input_ids, attention_mask=None, normalize: bool = False,
              token_type_ids=None) -> jax.Array:
        """Mean of the last hidden state over real tokens: float32 [B,d] (unit L2 norm with
        ``normalize``), as sentence-transformers' Pooling(mean) (+ Normalize)."""
        hidden = self(input_ids, attention_mask, token_type_ids).astype(jnp.float32)
        weights = (jnp.ones(hidden.shape[:2], jnp.float32) if attention_mask is None else
                   jnp.asarray(attention_mask).astype(jnp.float32))[..., None]
        pooled = jnp.sum(hidden * weights, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1e-9)
        if normalize:
            pooled = pooled / jnp.maximum(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
        return pooled

    @staticmethod
    def hf_name(path: tuple) -> str:
        """Our parameter path -> HF safetensors name, without the ``bert.`` prefix that BertFor*
        checkpoints add (the loader accepts both)."""
        *module, leaf = path
        if module[0] == "layers":
            prefix = f"encoder.layer.{module[1]}.{_HF_LAYER_NAMES[module[2]]}"
        else:
            prefix = "embeddings." + ("LayerNorm" if module[1] == "layer_norm" else module[1])
        return f"{prefix}.{_HF_PARAM_NAMES[leaf]}"
