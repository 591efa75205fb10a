"""Building blocks shared by the transformer models: Linear, Embed, RMSNorm, LayerNorm, dtype policy.

Sharding metadata: every parameter is an ``nnx.Param`` whose logical axis names live in the
flax 0.12.8 variable metadata key ``out_sharding`` (e.g. ``("embed", "mlp")``), created with
``eager_sharding=False`` so building a model never needs a mesh. Read them with
``nnx.get_partition_spec(nnx.state(model, nnx.Param))`` or ``variable.get_metadata("out_sharding")``
and map them to mesh axes with a rules table. Logical names used: ``vocab``, ``embed``, ``mlp``,
``heads``, ``kv_heads``, ``rel_buckets`` (T5). Fused projection outputs (``heads * head_dim``)
carry the name ``heads`` / ``kv_heads``.

Dtype policy: parameters are stored in ``param_dtype``; every matmul runs in the compute
``dtype`` (weights and activations are cast on use); norms and softmax run in float32; logits
are returned in float32.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxrec.errors import JaxrecError

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def as_dtype(name: str | jnp.dtype) -> jnp.dtype:
    """'float32' / 'bfloat16' / 'float16' (or a dtype) -> jnp dtype; anything else is a JaxrecError."""
    if not isinstance(name, str):
        return jnp.dtype(name)
    if name not in DTYPES:
        raise JaxrecError(f"unknown dtype {name!r}: expected one of {sorted(DTYPES)}")
    return jnp.dtype(DTYPES[name])


def param(rngs: nnx.Rngs | None, shape: Sequence[int], axes: Sequence[str | None], dtype,
          std: float | None) -> nnx.Param:
    """An ``nnx.Param`` of ``shape`` ~ N(0, std) (ones when ``std`` is None) with logical ``axes``."""
    if std is None:
        value = jnp.ones(shape, dtype)
    else:
        value = (std * jax.random.normal(rngs.params(), shape, jnp.float32)).astype(dtype)
    return nnx.Param(value, out_sharding=tuple(axes), eager_sharding=False)


class Linear(nnx.Module):
    """y = x @ kernel (+ bias). ``kernel`` is [in, out] (HF's Linear weight transposed)."""

    def __init__(self, in_features: int, out_features: int, *, axes: tuple[str, str],
                 use_bias: bool = False, std: float = 0.02, dtype=jnp.float32,
                 param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.kernel = param(rngs, (in_features, out_features), axes, param_dtype, std)
        self.bias = (nnx.Param(jnp.zeros((out_features,), param_dtype), out_sharding=(axes[1],),
                               eager_sharding=False) if use_bias else None)
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        y = jnp.dot(x.astype(self.dtype), self.kernel[...].astype(self.dtype))
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        return y


class Embed(nnx.Module):
    """Token embedding table [vocab, embed]; ``attend`` is the tied output projection."""

    def __init__(self, num_embeddings: int, features: int, *, std: float, dtype=jnp.float32,
                 param_dtype=jnp.float32, axes: tuple[str, str] = ("vocab", "embed"),
                 rngs: nnx.Rngs):
        self.embedding = param(rngs, (num_embeddings, features), axes, param_dtype, std)
        self.dtype = dtype

    def __call__(self, ids: jax.Array) -> jax.Array:
        """ids [...] int -> [..., embed] in the compute dtype."""
        return jnp.take(self.embedding[...], ids, axis=0).astype(self.dtype)

    def attend(self, x: jax.Array) -> jax.Array:
        """x [..., embed] -> [..., vocab] = x @ embedding.T."""
        return jnp.dot(x.astype(self.dtype), self.embedding[...].astype(self.dtype).T)


class RMSNorm(nnx.Module):
    """x / rms(x) * scale, normalised in float32 (Llama RMSNorm == T5 LayerNorm)."""

    def __init__(self, features: int, *, eps: float, dtype=jnp.float32,
                 param_dtype=jnp.float32):
        self.scale = param(None, (features,), ("embed",), param_dtype, None)
        self.eps = eps
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return normed.astype(self.dtype) * self.scale[...].astype(self.dtype)


class LayerNorm(nnx.Module):
    """(x - mean(x)) / std(x) * scale + bias over the last axis, in float32 (BERT's LayerNorm)."""

    def __init__(self, features: int, *, eps: float, dtype=jnp.float32,
                 param_dtype=jnp.float32):
        self.scale = param(None, (features,), ("embed",), param_dtype, None)
        self.bias = nnx.Param(jnp.zeros((features,), param_dtype), out_sharding=("embed",),
                              eager_sharding=False)
        self.eps = eps
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        centred = x32 - jnp.mean(x32, axis=-1, keepdims=True)
        normed = centred * jax.lax.rsqrt(jnp.mean(centred * centred, axis=-1, keepdims=True)
                                         + self.eps)
        out = normed * self.scale[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)
        return out.astype(self.dtype)


class ResidualDropout(nnx.Module):
    """Base of a transformer block whose residual branches may be dropped out while training.

    ``drop`` is the identity until :func:`jaxrec.models.layer_stack.set_dropout` gives the block an
    ``nnx.Dropout`` (its own RNG stream; ``model.eval()`` turns it off).
    """

    def __init__(self):
        self.dropout = nnx.data(None)

    def drop(self, x: jax.Array) -> jax.Array:
        return x if self.dropout is None else self.dropout(x)


ACTIVATIONS = {
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "relu": jax.nn.relu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
}


def activation(name: str):
    """HF activation name -> function; unknown names are a JaxrecError."""
    if name not in ACTIVATIONS:
        raise JaxrecError(f"unsupported activation {name!r}: expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]
