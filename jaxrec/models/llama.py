"""Decoder-only Llama family (Llama 2/3 incl. llama3 rope scaling, Qwen2 qkv bias, Mistral) in Flax NNX.

Grouped-query attention, tied or untied embeddings, RMSNorm eps and rope from the HF config,
optional sliding window (Mistral). Module and projection names follow HF (q_proj ... down_proj),
each projection a :class:`~jaxrec.models.layers.Linear` with a ``kernel`` [in, out] (LoRA target).

Shapes: B batch, T length, d hidden_size, V vocab, K beams, G max_new_tokens.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Collection

import jax
import jax.numpy as jnp
from flax import nnx

from jaxrec.errors import JaxrecError
from jaxrec.models.attention import CausalMask, attend_causal, attend_prefix_and_generated
from jaxrec.models.decoding import (DecodeState, empty_generated_cache, heads_major, reorder_beams,
                                    write_generated)
from jaxrec.models.layer_stack import hidden_states, run_layers
from jaxrec.models.layers import Embed, Linear, RMSNorm, ResidualDropout, activation, as_dtype
from jaxrec.models.rope import ROPE_TYPES, apply_rope, inverse_frequencies
from jaxrec.parallel.rules import tensor_share

MODEL_TYPES = ("llama", "qwen2", "mistral")
HF_ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
                    "mistral": "MistralForCausalLM"}


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    """Architecture of a Llama-family model (field names follow HF where they exist)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    model_type: str = "llama"
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_type: str = "default"
    rope_factor: float = 1.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_max_positions: int = 8192
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    hidden_act: str = "silu"
    sliding_window: int | None = None
    initializer_range: float = 0.02
    bos_token_id: int | None = 1
    eos_token_id: int | tuple[int, ...] | None = 2
    pad_token_id: int | None = None
    dtype: str = "float32"
    param_dtype: str = "float32"

    def __post_init__(self):
        if self.model_type not in MODEL_TYPES:
            raise JaxrecError(f"unsupported Llama-family model_type {self.model_type!r}: "
                              f"expected one of {MODEL_TYPES}")
        if self.rope_type not in ROPE_TYPES:
            raise JaxrecError(f"unsupported rope type {self.rope_type!r}: expected one of "
                              f"{ROPE_TYPES}")
        if self.model_type == "qwen2" and self.sliding_window is not None:
            raise JaxrecError("sliding_window is supported for llama/mistral, not qwen2")
        if self.num_heads % self.num_kv_heads:
            raise JaxrecError(f"num_heads={self.num_heads} is not a multiple of "
                              f"num_kv_heads={self.num_kv_heads}")

    @classmethod
    def from_hf(cls, hf: dict[str, Any], weight_names: Collection[str] = (), **overrides) -> "LlamaConfig":
        """Map an HF config.json dict (transformers 4.x or 5.x rope fields) to a LlamaConfig (the checkpoint's
        ``weight_names`` are not needed: the config alone decides)."""
        model_type = hf.get("model_type")
        rope = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
        heads = hf["num_attention_heads"]
        sliding = hf.get("sliding_window")
        if model_type == "qwen2":
            if hf.get("use_sliding_window", False):
                raise JaxrecError("qwen2 with use_sliding_window=true (per-layer windows) is not "
                                  "supported")
            sliding = None
        eos = hf.get("eos_token_id", 2)
        fields = dict(
            vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
            intermediate_size=hf["intermediate_size"], num_layers=hf["num_hidden_layers"],
            num_heads=heads, num_kv_heads=hf.get("num_key_value_heads") or heads,
            head_dim=hf.get("head_dim") or hf["hidden_size"] // heads, model_type=model_type,
            rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
            rope_theta=rope.get("rope_theta", hf.get("rope_theta", 10000.0)),
            rope_type=rope.get("rope_type", rope.get("type", "default")),
            rope_factor=rope.get("factor", 1.0),
            rope_low_freq_factor=rope.get("low_freq_factor", 1.0),
            rope_high_freq_factor=rope.get("high_freq_factor", 4.0),
            rope_original_max_positions=rope.get("original_max_position_embeddings",
                                                 hf.get("max_position_embeddings", 8192)),
            max_position_embeddings=hf.get("max_position_embeddings", 2048),
            tie_word_embeddings=hf.get("tie_word_embeddings", False),
            qkv_bias=model_type == "qwen2" or hf.get("attention_bias", False),
            o_bias=model_type == "llama" and hf.get("attention_bias", False),
            mlp_bias=hf.get("mlp_bias", False), hidden_act=hf.get("hidden_act", "silu"),
            sliding_window=sliding, initializer_range=hf.get("initializer_range", 0.02),
            bos_token_id=hf.get("bos_token_id"),
            eos_token_id=tuple(eos) if isinstance(eos, list) else eos,
            pad_token_id=hf.get("pad_token_id"),
        )
        fields.update(overrides)
        return cls(**fields)

    def to_hf(self) -> dict[str, Any]:
        """The HF config.json dict that ``transformers`` loads into the same architecture."""
        rope = {"rope_type": self.rope_type, "rope_theta": self.rope_theta}
        if self.rope_type != "default":
            rope["factor"] = self.rope_factor
        if self.rope_type == "llama3":
            rope.update(low_freq_factor=self.rope_low_freq_factor,
                        high_freq_factor=self.rope_high_freq_factor,
                        original_max_position_embeddings=self.rope_original_max_positions)
        eos = list(self.eos_token_id) if isinstance(self.eos_token_id, tuple) else self.eos_token_id
        hf = {
            "architectures": [HF_ARCHITECTURES[self.model_type]], "model_type": self.model_type,
            "vocab_size": self.vocab_size, "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size, "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads, "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim, "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta, "rope_parameters": rope,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings, "hidden_act": self.hidden_act,
            "initializer_range": self.initializer_range, "bos_token_id": self.bos_token_id,
            "eos_token_id": eos, "pad_token_id": self.pad_token_id,
            "torch_dtype": self.param_dtype,
        }
        if self.model_type == "llama":
            hf.update(attention_bias=self.qkv_bias, mlp_bias=self.mlp_bias)
        if self.model_type == "qwen2":
            hf.update(use_sliding_window=False, sliding_window=None)
        if self.model_type == "mistral":
            hf["sliding_window"] = self.sliding_window
        return hf


def tiny_llama_config(vocab_size: int, **overrides) -> LlamaConfig:
    """A small from-scratch Llama (2 layers, hidden 64, GQA 4/2 heads) for demos and tests."""
    fields = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_layers=2,
                  num_heads=4, num_kv_heads=2, head_dim=16, max_position_embeddings=512,
                  bos_token_id=None, eos_token_id=None)
    fields.update(overrides)
    return LlamaConfig(**fields)


def scratch_config(section, tokenizer) -> LlamaConfig:
    """The from-scratch model of a recipe's ``model:`` section (``arch: llama``) for ``tokenizer``'s vocabulary."""
    s = section
    return tiny_llama_config(len(tokenizer), hidden_size=s.hidden_size, intermediate_size=s.intermediate_size,
                             num_layers=s.num_layers, num_heads=s.num_heads, num_kv_heads=s.num_kv_heads,
                             head_dim=s.hidden_size // s.num_heads, max_position_embeddings=s.max_position_embeddings,
                             bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id, dtype=s.dtype, param_dtype=s.dtype)


def activation_bytes(c: LlamaConfig, rows: int, seq_len: int, target_len: int, p: int, t: int, remat: str,
                     trained: set[str]) -> float:
    """Memory planner: bytes one device keeps for the backward pass of ``rows`` x ``seq_len`` tokens
    (``target_len`` unused: decoder-only). Per token and layer (d hidden, q = heads*head_dim, kv =
    kv_heads*head_dim, f = intermediate, h = heads, each split over ``t`` tensor shards where it divides;
    ``p`` bytes of the compute dtype; ``trained``: names in the trained parameters' paths), by ``remat``:

    * ``none``: p*(4d + 2q + 2kv + 3f) + 4*s*(2h + 1) (layer input and normed inputs of both blocks,
      q/k/v and the attention output, gate/up/product of the MLP; fp32 scores and probabilities per head
      plus the mask as a float bias); + p*q when o_proj and + p*f when down_proj is trained (their inputs
      are kept for the weight gradient);
    * ``dots_with_no_batch_dims``: p*(3d + q + 2kv + 2f) (the projections' outputs);
    * ``dots``: that plus the attention score (fp32) and value products, 4*h*s + p*q;
    * ``full``: p*d (the layer input only).

    Under remat one layer's ``none`` set is added (the layer being recomputed)."""
    d, h = c.hidden_size, tensor_share(c.num_heads, t)
    q, kv, f = h * c.head_dim, tensor_share(c.num_kv_heads, t) * c.head_dim, tensor_share(c.intermediate_size, t)
    s = seq_len
    weight_inputs = q * ("o_proj" in trained) + f * ("down_proj" in trained)
    layer = p * (4 * d + 2 * q + 2 * kv + 3 * f + weight_inputs) + 4 * s * (2 * h + 1)
    projections = p * (3 * d + q + 2 * kv + 2 * f)
    saved = {"none": layer, "dots_with_no_batch_dims": projections, "dots": projections + 4 * h * s + p * q,
             "full": p * d}[remat]
    return rows * s * (c.num_layers * saved + (layer if remat != "none" else 0))


def decode_cache(c: LlamaConfig, t: int) -> tuple[int, float, float]:
    """Memory planner, beam decoding on one of ``t`` tensor shards: (layers, kv width, query heads); each layer
    caches a key and a value of kv width (kv_heads*head_dim) elements per token."""
    return c.num_layers, tensor_share(c.num_kv_heads, t) * c.head_dim, tensor_share(c.num_heads, t)


class LlamaAttention(nnx.Module):
    """Grouped-query self-attention with rotary positions."""

    def __init__(self, config: LlamaConfig, *, rngs: nnx.Rngs):
        d, h, std = config.hidden_size, config.head_dim, config.initializer_range
        kw = dict(std=std, dtype=as_dtype(config.dtype), param_dtype=as_dtype(config.param_dtype),
                  rngs=rngs)
        self.q_proj = Linear(d, config.num_heads * h, axes=("embed", "heads"),
                             use_bias=config.qkv_bias, **kw)
        self.k_proj = Linear(d, config.num_kv_heads * h, axes=("embed", "kv_heads"),
                             use_bias=config.qkv_bias, **kw)
        self.v_proj = Linear(d, config.num_kv_heads * h, axes=("embed", "kv_heads"),
                             use_bias=config.qkv_bias, **kw)
        self.o_proj = Linear(config.num_heads * h, d, axes=("heads", "embed"),
                             use_bias=config.o_bias, **kw)
        self.num_heads, self.num_kv_heads, self.head_dim = (config.num_heads,
                                                            config.num_kv_heads, h)
        self.config = config

    def project(self, x: jax.Array, positions: jax.Array):
        """x [B,T,d], positions [B,T] -> q [B,T,N,H], k, v [B,T,Nkv,H] (rope applied to q, k)."""
        b, t, _ = x.shape
        q = self.q_proj(x).reshape(b, t, self.num_heads, self.head_dim)
        k = self.k_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim)
        c = self.config
        inv_freq = inverse_frequencies(c.head_dim, c.rope_theta, c.rope_type, c.rope_factor,
                                       c.rope_low_freq_factor, c.rope_high_freq_factor,
                                       c.rope_original_max_positions)
        return apply_rope(q, positions, inv_freq), apply_rope(k, positions, inv_freq), v

    def __call__(self, x, positions, mask: CausalMask):
        """Full-sequence causal attention. Returns (out [B,T,d], (k, v))."""
        q, k, v = self.project(x, positions)
        out = attend_causal(q, k, v, mask, scale=self.head_dim ** -0.5)
        return self.o_proj(out.reshape(*x.shape[:2], -1)), (k, v)

    def decode(self, x, positions, state: DecodeState, layer: int, step, window_mask):
        """One token per beam: x [B,K,d], positions [B,K]. Returns (out [B,K,d], gen_k, gen_v)."""
        q, k, v = self.project(x, positions)
        gen_k = write_generated(state.gen_k[layer], k, step)
        gen_v = write_generated(state.gen_v[layer], v, step)
        prefix_mask, gen_mask = window_mask
        out = attend_prefix_and_generated(
            q, state.prefix_k[layer], state.prefix_v[layer], prefix_mask, gen_k, gen_v, gen_mask,
            scale=self.head_dim ** -0.5)
        return self.o_proj(out.reshape(*x.shape[:2], -1)), gen_k, gen_v


class LlamaMLP(nnx.Module):
    """down_proj(act(gate_proj(x)) * up_proj(x))."""

    def __init__(self, config: LlamaConfig, *, rngs: nnx.Rngs):
        d, f = config.hidden_size, config.intermediate_size
        kw = dict(std=config.initializer_range, use_bias=config.mlp_bias,
                  dtype=as_dtype(config.dtype), param_dtype=as_dtype(config.param_dtype),
                  rngs=rngs)
        self.gate_proj = Linear(d, f, axes=("embed", "mlp"), **kw)
        self.up_proj = Linear(d, f, axes=("embed", "mlp"), **kw)
        self.down_proj = Linear(f, d, axes=("mlp", "embed"), **kw)
        self.act = activation(config.hidden_act)

    def __call__(self, x):
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class LlamaDecoderLayer(ResidualDropout):
    """Pre-norm block: x + drop(attn(norm(x))); x + drop(mlp(norm(x))) (dropout: training only)."""

    def __init__(self, config: LlamaConfig, *, rngs: nnx.Rngs):
        norm = dict(eps=config.rms_norm_eps, dtype=as_dtype(config.dtype),
                    param_dtype=as_dtype(config.param_dtype))
        self.input_layernorm = RMSNorm(config.hidden_size, **norm)
        self.self_attn = LlamaAttention(config, rngs=rngs)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, **norm)
        self.mlp = LlamaMLP(config, rngs=rngs)
        super().__init__()

    def __call__(self, x, positions, mask):
        attn, kv = self.self_attn(self.input_layernorm(x), positions, mask)
        x = x + self.drop(attn)
        return x + self.drop(self.mlp(self.post_attention_layernorm(x))), kv

    def decode(self, x, positions, state, layer, step, window_mask):
        attn, gen_k, gen_v = self.self_attn.decode(self.input_layernorm(x), positions, state,
                                                   layer, step, window_mask)
        x = x + attn
        return x + self.mlp(self.post_attention_layernorm(x)), gen_k, gen_v


def default_positions(attention_mask: jax.Array | None, segment_ids: jax.Array | None,
                      batch: int, length: int) -> jax.Array:
    """[B,T] int32 positions: restart per segment; else cumsum(mask)-1 (left padding); else arange."""
    index = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
    if segment_ids is not None:
        starts = jnp.concatenate([jnp.ones((batch, 1), bool),
                                  segment_ids[:, 1:] != segment_ids[:, :-1]], axis=1)
        return index - jax.lax.cummax(jnp.where(starts, index, 0), axis=1)
    if attention_mask is not None:
        return jnp.maximum(jnp.cumsum(attention_mask.astype(jnp.int32), axis=1) - 1, 0)
    return index


class LlamaForCausalLM(nnx.Module):
    """Llama-family causal LM. ``model(input_ids, attention_mask)`` -> float32 logits [B,T,V].

    ``layers`` is an ``nnx.List`` (or, for training with ``train.scan_layers``, one stacked layer: see
    :mod:`jaxrec.models.layer_stack`); ``remat`` names the per-layer rematerialisation policy.
    """

    LAYER_LISTS = (("layers",),)

    def __init__(self, config: LlamaConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.remat = "none"
        self.attention = "auto"  # the full-sequence attention kernel (model.attention; see attend_causal)
        dtype, param_dtype = as_dtype(config.dtype), as_dtype(config.param_dtype)
        self.embed_tokens = Embed(config.vocab_size, config.hidden_size,
                                  std=config.initializer_range, dtype=dtype,
                                  param_dtype=param_dtype, rngs=rngs)
        self.layers = nnx.List([LlamaDecoderLayer(config, rngs=rngs)
                                for _ in range(config.num_layers)])
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps, dtype=dtype,
                            param_dtype=param_dtype)
        self.lm_head = (None if config.tie_word_embeddings else
                        Linear(config.hidden_size, config.vocab_size, axes=("embed", "vocab"),
                               std=config.initializer_range, dtype=dtype,
                               param_dtype=param_dtype, rngs=rngs))

    # ----------------------------------------------------------------------------- forward
    def logits(self, hidden: jax.Array) -> jax.Array:
        """Final-normed hidden [..., d] -> float32 logits [..., V]."""
        out = self.embed_tokens.attend(hidden) if self.lm_head is None else self.lm_head(hidden)
        return out.astype(jnp.float32)

    def _run(self, input_ids, attention_mask, positions, segment_ids, inputs_embeds,
             collect: str | None = None):
        """Full forward. Returns (embeddings [B,T,d], final-normed hidden [B,T,d], per-layer outputs,
        positions [B,T]); per-layer outputs (see :func:`run_layers`): each layer's output [B,T,d]
        (``collect="hidden"``), its (k, v) [B,T,Nkv,H] (``"kv"``) or None."""
        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds.astype(
            as_dtype(self.config.dtype))
        batch, length = x.shape[:2]
        if attention_mask is not None:
            attention_mask = jnp.asarray(attention_mask)
        if segment_ids is not None:
            segment_ids = jnp.asarray(segment_ids)
        if positions is None:
            positions = default_positions(attention_mask, segment_ids, batch, length)
        mask = CausalMask(key_mask=attention_mask, segment_ids=segment_ids, positions=positions,
                          window=self.config.sliding_window, implementation=self.attention)

        def layer_fn(layer, h):
            h, kv = layer(h, positions, mask)
            return h, {"hidden": h, "kv": kv}.get(collect)

        out, per_layer = run_layers(self.layers, x, layer_fn, self.remat)
        return x, self.norm(out), per_layer, positions

    def __call__(self, input_ids=None, attention_mask=None, *, positions=None, segment_ids=None,
                 inputs_embeds=None, return_hidden: bool | str = False):
        """Causal LM forward.

        input_ids [B,T] int (or inputs_embeds [B,T,d]); attention_mask [B,T] (1 = token, 0 = pad;
        left padding gets positions cumsum(mask)-1); segment_ids [B,T] packed sequences (tokens
        attend within their segment; positions restart per segment unless ``positions`` [B,T]).
        Returns float32 logits [B,T,V]; ``return_hidden=True``: final-normed hidden [B,T,d]
        instead; ``return_hidden="all"``: [L+1,B,T,d] (embeddings, each layer's output, the last
        one final-normed, as HF's ``hidden_states``).
        """
        if input_ids is not None:
            input_ids = jnp.asarray(input_ids)
        every = return_hidden == "all"
        embedded, final, per_layer, _ = self._run(input_ids, attention_mask, positions, segment_ids,
                                                  inputs_embeds, "hidden" if every else None)
        if every:
            return hidden_states(embedded, final, per_layer)
        if return_hidden:
            return final
        return self.logits(final)

    # ---------------------------------------------------------------------------- decoding
    def prefill(self, input_ids, attention_mask, num_beams: int, max_new_tokens: int):
        """Encode left-padded prompts [B,T] once per user.

        Returns (state, logits0 [B,V] float32 for the first generated token).
        """
        self._check_list_layout()
        input_ids, attention_mask = jnp.asarray(input_ids), jnp.asarray(attention_mask)
        _, final, kvs, positions = self._run(input_ids, attention_mask, None, None, None, "kv")
        c = self.config
        gen_k, gen_v = empty_generated_cache(
            input_ids.shape[0], num_beams, max_new_tokens, c.num_kv_heads, c.head_dim,
            c.num_layers, kvs[0][0].dtype)
        state = DecodeState(
            prefix_k=tuple(heads_major(k) for k, _ in kvs), prefix_v=tuple(heads_major(v) for _, v in kvs),
            prefix_mask=attention_mask.astype(bool), prefix_positions=positions,
            next_position=jnp.sum(attention_mask.astype(jnp.int32), axis=1),
            gen_k=gen_k, gen_v=gen_v)
        return state, self.logits(final[:, -1])

    def _check_list_layout(self) -> None:
        if not isinstance(self.layers, nnx.List):
            raise JaxrecError("decoding needs the layer-list layout; convert a scanned model with "
                              "jaxrec.models.layer_stack.unstack_layers(model)")

    def decode_step(self, tokens: jax.Array, state: DecodeState, step):
        """Feed generated token number ``step`` (0-based) of each beam: tokens [B,K].

        Returns (logits [B,K,V] float32 for the next token, the updated state).
        """
        self._check_list_layout()
        positions = state.next_position[:, None] + step + jnp.zeros(tokens.shape, jnp.int32)
        gen_slots = jnp.arange(state.max_new_tokens)
        prefix_mask, gen_mask = state.prefix_mask, (gen_slots <= step)[None, None, :]
        if self.config.sliding_window is not None:
            window = self.config.sliding_window
            query_pos = state.next_position + step  # [B]
            prefix_mask = prefix_mask & (query_pos[:, None] - state.prefix_positions < window)
            gen_mask = gen_mask & (step - gen_slots < window)[None, None, :]
        x = self.embed_tokens(tokens)
        new_k, new_v = [], []
        for i, layer in enumerate(self.layers):
            x, k, v = layer.decode(x, positions, state, i, step, (prefix_mask, gen_mask))
            new_k.append(k)
            new_v.append(v)
        logits = self.logits(self.norm(x))
        return logits, state.replace(gen_k=tuple(new_k), gen_v=tuple(new_v))

    def reorder_beams(self, state: DecodeState, parent: jax.Array) -> DecodeState:
        """Beam k continues beam parent[b,k] (per-beam caches gathered; prompt cache untouched)."""
        return reorder_beams(state, parent)

    # ----------------------------------------------------------------------------- HF interop
    def vocab_params(self) -> list[tuple[nnx.Param, int]]:
        """(parameter, vocab axis) pairs to grow when tokens are added."""
        params = [(self.embed_tokens.embedding, 0)]
        if self.lm_head is not None:
            params.append((self.lm_head.kernel, 1))
        return params

    @staticmethod
    def hf_name(path: tuple) -> str:
        """Our parameter path -> HF safetensors name."""
        if path[:1] == ("layers",) and not isinstance(path[1], int):
            raise JaxrecError("HF names need the layer-list layout; convert a scanned model with "
                              "jaxrec.models.layer_stack.unstack_layers(model)")
        name = ".".join(str(p) for p in path)
        name = re.sub(r"\.(kernel|embedding|scale)$", ".weight", name)
        return name if name.startswith("lm_head.") else "model." + name
