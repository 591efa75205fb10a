"""Attention math shared by Llama and T5: full-sequence attention and one-token beam decoding.

Shapes: B batch (users), T query length, S key length, N query heads, Nkv key/value heads
(N % Nkv == 0, grouped-query attention), H head dim, K beams, P shared prefix length, G generated
slots (max_new_tokens).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

MASKED = float(jnp.finfo(jnp.float32).min)

#: ``model.attention``: which kernel runs causal self-attention over a full sequence (see :func:`attend_causal`)
IMPLEMENTATIONS = ("auto", "xla", "cudnn", "splash")


def attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None, *,
           scale: float, bias: jax.Array | None = None) -> jax.Array:
    """Softmax attention through ``jax.nn.dot_product_attention``.

    q [B,T,N,H]; k, v [B,S,Nkv,H]; mask bool broadcastable to [B,N,T,S] (True = attend);
    bias float broadcastable to [B,N,T,S] (T5 relative position bias). Returns [B,T,N,H].
    """
    return jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask, scale=scale)


@dataclasses.dataclass(frozen=True)
class CausalMask:
    """What each query of a causal full-sequence attention may see, without a [T,S] array where possible:
    earlier keys that are real tokens (``key_mask`` [B,S] bool, True = token; None: all) of its own packed
    segment (``segment_ids`` [B,T] int, None: one sequence); ``window`` (keys within that many positions,
    ``positions`` [B,T]) forces the dense mask. ``implementation``: one of :data:`IMPLEMENTATIONS`."""

    key_mask: jax.Array | None = None
    segment_ids: jax.Array | None = None
    positions: jax.Array | None = None
    window: int | None = None
    implementation: str = "auto"

    def dense(self, length: int) -> jax.Array:
        """The same mask as one bool array [B,1,T,T] (today's XLA path)."""
        batch = next(x.shape[0] for x in (self.key_mask, self.segment_ids, self.positions) if x is not None)
        mask = jnp.broadcast_to(causal_mask(length), (batch, length, length))
        if self.key_mask is not None:
            mask = mask & self.key_mask.astype(bool)[:, None, :]
        if self.segment_ids is not None:
            mask = mask & (self.segment_ids[:, :, None] == self.segment_ids[:, None, :])
        if self.window is not None:
            mask = mask & ((self.positions[:, :, None] - self.positions[:, None, :]) < self.window)
        return mask[:, None]


def use_attention(model, name: str) -> None:
    """Set the full-sequence attention kernel of a Llama-family ``model`` (``model.attention`` in configs);
    other models (T5's relative position bias, BERT) run XLA attention and accept only ``auto``/``xla``."""
    resolve_implementation(name, jnp.float32)  # a bad name is one clear error
    if hasattr(model, "attention"):
        model.attention = name
    elif name not in ("auto", "xla"):
        from jaxrec.errors import ConfigError

        raise ConfigError(f"model.attention: {name!r} is for Llama-family models; {type(model).__name__} runs "
                          f"XLA attention (auto or xla)")


def resolve_implementation(name: str, dtype) -> str:
    """``auto``: cuDNN flash attention on GPUs (half-precision compute), the Pallas splash kernel on TPUs,
    XLA elsewhere; an explicit name is checked."""
    if name not in IMPLEMENTATIONS:
        from jaxrec.errors import ConfigError

        raise ConfigError(f"model.attention: {name!r}; expected one of {', '.join(IMPLEMENTATIONS)}")
    if name != "auto":
        return name
    backend = jax.default_backend()
    if backend == "gpu" and jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
        return "cudnn"
    return "splash" if backend == "tpu" else "xla"


def attend_causal(q: jax.Array, k: jax.Array, v: jax.Array, mask: CausalMask, *, scale: float) -> jax.Array:
    """Causal self-attention, q [B,T,N,H]; k, v [B,T,Nkv,H] -> [B,T,N,H], by ``mask.implementation``:

    - ``xla``: ``jax.nn.dot_product_attention(is_causal=True)`` with the key padding as a [B,1,1,S] mask;
      packed segments or a sliding window fall back to the dense [B,1,T,T] mask;
    - ``cudnn``: the same call with ``implementation="cudnn"`` (flash attention; GPUs, half precision);
      packed segments and windows are not supported there (use ``xla`` or ``splash``);
    - ``splash``: the Pallas TPU splash kernel (causal mask, padding and packing as segment ids, kv heads
      repeated for grouped queries), run in interpret mode off TPU; a window falls back to dense XLA.
    """
    impl = resolve_implementation(mask.implementation, q.dtype)
    length = q.shape[1]
    if mask.window is not None or (impl == "xla" and mask.segment_ids is not None):
        return attend(q, k, v, mask.dense(length), scale=scale)
    if impl == "splash":
        return _splash(q, k, v, mask, scale)
    if mask.segment_ids is not None:
        from jaxrec.errors import ConfigError

        raise ConfigError("model.attention: cudnn does not take packed rows (train.data.packing); use xla or splash")
    key_mask = None if mask.key_mask is None else mask.key_mask.astype(bool)[:, None, None, :]
    return jax.nn.dot_product_attention(q, k, v, mask=key_mask, is_causal=True, scale=scale, implementation=impl)


SPLASH_BLOCK = 128  # the splash kernel's sequence block: rows are padded up to a multiple of it


def _splash(q, k, v, mask: CausalMask, scale: float) -> jax.Array:
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as masks

    batch, length, heads, _ = q.shape
    padded = -(-length // SPLASH_BLOCK) * SPLASH_BLOCK
    if mask.segment_ids is not None:
        segments = mask.segment_ids.astype(jnp.int32)
    elif mask.key_mask is not None:
        segments = mask.key_mask.astype(jnp.int32)  # padding is segment 0: no real token attends it
    else:
        segments = jnp.ones((batch, length), jnp.int32)
    pad = ((0, 0), (0, padded - length))
    segments = jnp.pad(segments, pad)
    group = heads // k.shape[2]

    def heads_first(x, repeat=1):  # [B,T,n,H] -> [B, n*repeat, padded, H]
        x = jnp.repeat(x, repeat, axis=2) if repeat > 1 else x
        return jnp.pad(x, pad + ((0, 0), (0, 0))).transpose(0, 2, 1, 3)

    kernel = splash.make_splash_mha(masks.MultiHeadMask([masks.CausalMask((padded, padded))] * heads),
                                    head_shards=1, q_seq_shards=1, interpret=jax.default_backend() != "tpu")
    out = jax.vmap(lambda q1, k1, v1, s1: kernel(q1, k1, v1, segment_ids=splash.SegmentIds(q=s1, kv=s1)))(
        heads_first(q * jnp.asarray(scale, q.dtype)), heads_first(k, group), heads_first(v, group), segments)
    return out.transpose(0, 2, 1, 3)[:, :length]


def causal_mask(query_len: int, key_len: int | None = None) -> jax.Array:
    """[T,S] bool, True where key index <= query index."""
    key_len = query_len if key_len is None else key_len
    return jnp.arange(query_len)[:, None] >= jnp.arange(key_len)[None, :]


def attend_prefix_and_generated(q: jax.Array, prefix_k: jax.Array, prefix_v: jax.Array,
                                prefix_mask: jax.Array, gen_k: jax.Array, gen_v: jax.Array,
                                gen_mask: jax.Array, *, scale: float,
                                prefix_bias: jax.Array | None = None,
                                gen_bias: jax.Array | None = None) -> jax.Array:
    """One decoding step of K beams over [shared prefix ; per-beam generated tokens], one softmax.

    q [B,K,N,H] (one new token per beam); prefix_k/v [B,Nkv,P,H] shared by the K beams of a user;
    prefix_mask bool [B,P]; gen_k/v [B,K,Nkv,G,H]; gen_mask bool broadcastable to [B,K,G];
    prefix_bias [N,P] / gen_bias [N,G] optional additive biases. Returns [B,K,N,H].

    Scores are [B,Nkv,K,R,*] (R = N // Nkv query heads per K/V head): the K beams' R heads of a
    K/V head form one [K*R, P] block against the prefix, a plain batched matmul over (B, Nkv).
    """
    batch, beams, heads, head_dim = q.shape
    kv_heads, prefix_len = prefix_k.shape[1], prefix_k.shape[2]
    group = heads // kv_heads
    qg = q.reshape(batch, beams, kv_heads, group, head_dim).transpose(0, 2, 1, 3, 4)  # [B,Nkv,K,R,H]
    s_prefix = jnp.einsum("bnqh,bnph->bnqp", qg.reshape(batch, kv_heads, beams * group, head_dim), prefix_k,
                          preferred_element_type=jnp.float32).reshape(batch, kv_heads, beams, group, prefix_len)
    s_gen = jnp.einsum("bnkrh,bknsh->bnkrs", qg, gen_k, preferred_element_type=jnp.float32)
    s_prefix, s_gen = s_prefix * scale, s_gen * scale
    if prefix_bias is not None:
        s_prefix = s_prefix + prefix_bias.reshape(kv_heads, 1, group, -1)
    if gen_bias is not None:
        s_gen = s_gen + gen_bias.reshape(kv_heads, 1, group, -1)
    s_prefix = jnp.where(prefix_mask[:, None, None, None, :], s_prefix, MASKED)
    gen_mask = jnp.broadcast_to(gen_mask, (batch, beams, gen_k.shape[3]))
    s_gen = jnp.where(gen_mask[:, None, :, None, :], s_gen, MASKED)
    weights = jax.nn.softmax(jnp.concatenate([s_prefix, s_gen], axis=-1), axis=-1)
    w_prefix, w_gen = jnp.split(weights.astype(q.dtype), [prefix_len], axis=-1)
    out = (jnp.einsum("bnqp,bnph->bnqh", w_prefix.reshape(batch, kv_heads, beams * group, prefix_len),
                      prefix_v).reshape(batch, kv_heads, beams, group, head_dim)
           + jnp.einsum("bnkrs,bknsh->bnkrh", w_gen, gen_v))
    return out.transpose(0, 2, 1, 3, 4).reshape(batch, beams, heads, head_dim)
