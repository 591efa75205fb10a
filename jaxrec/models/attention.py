"""Attention math shared by Llama and T5: full-sequence attention and one-token beam decoding.

Shapes: B batch (users), T query length, S key length, N query heads, Nkv key/value heads
(N % Nkv == 0, grouped-query attention), H head dim, K beams, P shared prefix length, G generated
slots (max_new_tokens).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

MASKED = float(jnp.finfo(jnp.float32).min)


def attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None, *,
           scale: float, bias: jax.Array | None = None) -> jax.Array:
    """Softmax attention through ``jax.nn.dot_product_attention``.

    q [B,T,N,H]; k, v [B,S,Nkv,H]; mask bool broadcastable to [B,N,T,S] (True = attend);
    bias float broadcastable to [B,N,T,S] (T5 relative position bias). Returns [B,T,N,H].
    """
    return jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask, scale=scale)


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
