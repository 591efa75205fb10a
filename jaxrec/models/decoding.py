"""The decoding state shared by Llama and T5 (protocol: prefill / decode_step / reorder_beams).

The prefix part (Llama: the prompt's self-attention K/V; T5: the decoder-start token's K/V plus the
encoder's cross-attention K/V) is stored ONCE PER USER [B, ...] and shared by the K beams. Only the
generated tokens' self-attention K/V are per beam: [B, K, Nkv, G, H] per layer, G = max_new_tokens.
Self-attention caches are head-major (key positions next to the head dim), the layout the score and
value contractions read, so no decoding step transposes a cache.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class DecodeState:
    """Per-layer tuples of caches; see the module docstring for which part is per beam.

    prefix_k/prefix_v: per layer [B,Nkv,P,H]; prefix_mask bool [B,P];
    prefix_positions int32 [B,P] (positions of the prefix tokens; Llama sliding window);
    next_position int32 [B] (position of generated token 0);
    gen_k/gen_v: per layer [B,K,Nkv,G,H];
    cross_k/cross_v: per layer [B,Te,N,H] (T5 only, else empty); cross_mask bool [B,Te] or None.
    """

    prefix_k: tuple
    prefix_v: tuple
    prefix_mask: jax.Array
    prefix_positions: jax.Array
    next_position: jax.Array
    gen_k: tuple
    gen_v: tuple
    cross_k: tuple = ()
    cross_v: tuple = ()
    cross_mask: jax.Array | None = None

    @property
    def num_beams(self) -> int:
        return self.gen_k[0].shape[1]

    @property
    def max_new_tokens(self) -> int:
        return self.gen_k[0].shape[3]


def heads_major(x: jax.Array) -> jax.Array:
    """A prefix cache in the stored layout: [B,P,Nkv,H] -> [B,Nkv,P,H]."""
    return jnp.swapaxes(x, 1, 2)


def empty_generated_cache(batch: int, num_beams: int, max_new_tokens: int, kv_heads: int,
                          head_dim: int, num_layers: int, dtype) -> tuple[tuple, tuple]:
    """Zero per-beam caches: (gen_k, gen_v), each a tuple of num_layers [B,K,Nkv,G,H] arrays."""
    shape = (batch, num_beams, kv_heads, max_new_tokens, head_dim)
    zeros = tuple(jnp.zeros(shape, dtype) for _ in range(num_layers))
    return zeros, tuple(jnp.zeros(shape, dtype) for _ in range(num_layers))


def write_generated(cache: jax.Array, new: jax.Array, step: jax.Array) -> jax.Array:
    """cache [B,K,Nkv,G,H] with slot ``step`` set to new [B,K,Nkv,H]."""
    return jax.lax.dynamic_update_slice_in_dim(cache, new[:, :, :, None].astype(cache.dtype), step,
                                               axis=3)


def reorder_beams(state: DecodeState, parent: jax.Array) -> DecodeState:
    """Make beam k continue beam parent[b,k]: gathers the per-beam caches only. parent [B,K] int."""
    index = parent[:, :, None, None, None]

    def gather(cache):
        return jnp.take_along_axis(cache, index, axis=1)

    return state.replace(gen_k=tuple(gather(c) for c in state.gen_k),
                         gen_v=tuple(gather(c) for c in state.gen_v))
