"""T5 / FLAN-T5 encoder-decoder (v1.1 gated-GELU or original ReLU) in Flax NNX.

Relative position bias (first layer's table shared by every layer of a stack), unscaled dot-product
attention, RMS layer norm without bias, tied or untied lm_head (tied T5 rescales the decoder output
by d_model**-0.5 before the shared embedding). Projections are named like HF (q, k, v, o, wi_0, wi_1,
wo), each a :class:`~jaxrec.models.layers.Linear` with a ``kernel`` [in, out] (LoRA target).

Shapes: B batch, Te encoder length, Td decoder length, d d_model, N heads, H d_kv, V vocab,
K beams, G max_new_tokens.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Collection

import jax
import jax.numpy as jnp
from flax import nnx

from jaxrec.errors import JaxrecError
from jaxrec.models.attention import attend, attend_prefix_and_generated, causal_mask
from jaxrec.models.decoding import (DecodeState, empty_generated_cache, heads_major, reorder_beams,
                                    write_generated)
from jaxrec.models.layer_stack import hidden_states, run_layers
from jaxrec.models.layers import (Embed, Linear, RMSNorm, ResidualDropout, activation, as_dtype,
                                  param)
from jaxrec.parallel.rules import tensor_share


@dataclasses.dataclass(frozen=True)
class T5Config:
    """Architecture of a T5 model (field names follow HF's T5Config)."""

    vocab_size: int
    d_model: int
    d_kv: int
    d_ff: int
    num_layers: int
    num_decoder_layers: int
    num_heads: int
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6
    feed_forward_proj: str = "gated-gelu"
    tie_word_embeddings: bool = False
    scale_decoder_outputs: bool = False
    initializer_factor: float = 1.0
    pad_token_id: int = 0
    eos_token_id: int = 1
    decoder_start_token_id: int = 0
    dtype: str = "float32"
    param_dtype: str = "float32"
    model_type: str = "t5"

    def __post_init__(self):
        parts = self.feed_forward_proj.split("-")
        if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated"):
            raise JaxrecError(f"feed_forward_proj {self.feed_forward_proj!r}: expected "
                              f"'gated-ACT' or 'ACT' (e.g. 'gated-gelu', 'relu')")
        activation(self.activation)

    @property
    def is_gated(self) -> bool:
        return self.feed_forward_proj.startswith("gated-")

    @property
    def activation(self) -> str:
        """HF's dense_act_fn: 'gated-gelu' means the tanh approximation ('gelu_new')."""
        if self.feed_forward_proj == "gated-gelu":
            return "gelu_new"
        return self.feed_forward_proj.split("-")[-1]

    @classmethod
    def from_hf(cls, hf: dict[str, Any], weight_names: Collection[str] = (), **overrides) -> "T5Config":
        """HF config dict -> T5Config; ``weight_names``: the checkpoint's tensors (whether it stores lm_head.weight).

        Mirrors transformers 5: the head is separate iff stored; outputs are rescaled iff
        ``scale_decoder_outputs`` (or, in older configs, ``tie_word_embeddings`` is not false).
        """
        scale = hf.get("scale_decoder_outputs", hf.get("tie_word_embeddings", True) is not False)
        fields = dict(
            vocab_size=hf["vocab_size"], d_model=hf["d_model"], d_kv=hf["d_kv"], d_ff=hf["d_ff"],
            num_layers=hf["num_layers"],
            num_decoder_layers=hf.get("num_decoder_layers") or hf["num_layers"],
            num_heads=hf["num_heads"],
            relative_attention_num_buckets=hf.get("relative_attention_num_buckets", 32),
            relative_attention_max_distance=hf.get("relative_attention_max_distance", 128),
            layer_norm_epsilon=hf.get("layer_norm_epsilon", 1e-6),
            feed_forward_proj=hf.get("feed_forward_proj", "relu"),
            tie_word_embeddings="lm_head.weight" not in weight_names, scale_decoder_outputs=bool(scale),
            initializer_factor=hf.get("initializer_factor", 1.0),
            pad_token_id=hf.get("pad_token_id", 0), eos_token_id=hf.get("eos_token_id", 1),
            decoder_start_token_id=hf.get("decoder_start_token_id", hf.get("pad_token_id", 0)),
        )
        fields.update(overrides)
        return cls(**fields)

    def to_hf(self) -> dict[str, Any]:
        """The HF config.json dict that ``transformers`` loads into the same architecture."""
        return {
            "architectures": ["T5ForConditionalGeneration"], "model_type": "t5",
            "vocab_size": self.vocab_size, "d_model": self.d_model, "d_kv": self.d_kv,
            "d_ff": self.d_ff, "num_layers": self.num_layers,
            "num_decoder_layers": self.num_decoder_layers, "num_heads": self.num_heads,
            "relative_attention_num_buckets": self.relative_attention_num_buckets,
            "relative_attention_max_distance": self.relative_attention_max_distance,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "feed_forward_proj": self.feed_forward_proj,
            "tie_word_embeddings": self.tie_word_embeddings,
            "scale_decoder_outputs": self.scale_decoder_outputs,
            "initializer_factor": self.initializer_factor, "pad_token_id": self.pad_token_id,
            "eos_token_id": self.eos_token_id,
            "decoder_start_token_id": self.decoder_start_token_id,
            "is_encoder_decoder": True, "torch_dtype": self.param_dtype,
        }


def tiny_t5_config(vocab_size: int, **overrides) -> T5Config:
    """A small from-scratch FLAN-T5-style model (2+2 layers, d_model 64) for demos and tests."""
    fields = dict(vocab_size=vocab_size, d_model=64, d_kv=16, d_ff=128, num_layers=2,
                  num_decoder_layers=2, num_heads=4)
    fields.update(overrides)
    return T5Config(**fields)


def scratch_config(section, tokenizer) -> T5Config:
    """The from-scratch model of a recipe's ``model:`` section (``arch: t5``: as many encoder as decoder layers)
    for ``tokenizer``'s vocabulary."""
    s = section
    return tiny_t5_config(len(tokenizer), d_model=s.hidden_size, d_ff=s.intermediate_size,
                          d_kv=s.hidden_size // s.num_heads, num_layers=s.num_layers, num_decoder_layers=s.num_layers,
                          num_heads=s.num_heads, pad_token_id=tokenizer.pad_token_id,
                          eos_token_id=tokenizer.eos_token_id, dtype=s.dtype, param_dtype=s.dtype)


def activation_bytes(c: T5Config, rows: int, seq_len: int, target_len: int, p: int, t: int, remat: str,
                     trained: set[str]) -> float:
    """Memory planner: bytes one device keeps for the backward pass of ``rows`` rows of ``seq_len`` encoder
    (Te) and ``target_len`` decoder (Td) tokens. Per token and layer (d = d_model, q = heads*d_kv, f = d_ff,
    h = heads, each split over ``t`` tensor shards where it divides; F = 3f gated, 2f plain; ``p`` bytes of the
    compute dtype; ``trained``: names in the trained parameters' paths), by ``remat``:

    * ``none``: encoder p*(4d + 4q + F) + 4*Te*(2h+1) per encoder token; decoder p*(6d + 6q + F) +
      4*(Td+Te)*(2h+1) per decoder token (+ p*q / p*2q for a trained ``o``, p*f for a trained ``wo``), plus
      the cross-attention keys/values p*2q per encoder token;
    * ``dots_with_no_batch_dims``: p*(3d + 3q + F') encoder / p*(4d + 4q + F') decoder (F' = 2f gated, f plain;
      the projections' outputs);
    * ``dots``: that plus the attention score (fp32) and value products (4*h*Te + p*q encoder,
      4*h*(Td+Te) + 2p*q decoder);
    * ``full``: p*d.

    Under remat the larger of one encoder and one decoder layer's ``none`` set is added."""
    d, h = c.d_model, tensor_share(c.num_heads, t)
    q, f = h * c.d_kv, tensor_share(c.d_ff, t)
    te, td = seq_len, target_len
    ff, ff_dots = (3 * f, 2 * f) if c.is_gated else (2 * f, f)
    out_in, ff_in = q * ("o" in trained), f * ("wo" in trained)
    enc = p * (4 * d + 4 * q + ff + out_in + ff_in) + 4 * te * (2 * h + 1)
    dec = p * (6 * d + 6 * q + ff + 2 * out_in + ff_in) + 4 * (td + te) * (2 * h + 1)
    cross = p * 2 * q  # per encoder token, per decoder layer
    enc_dots, dec_dots = p * (3 * d + 3 * q + ff_dots), p * (4 * d + 4 * q + ff_dots)
    enc_saved = {"none": enc, "dots_with_no_batch_dims": enc_dots, "dots": enc_dots + 4 * h * te + p * q,
                 "full": p * d}[remat]
    dec_saved = {"none": dec, "dots_with_no_batch_dims": dec_dots, "dots": dec_dots + 4 * h * (td + te) + 2 * p * q,
                 "full": p * d}[remat]
    cross_saved = 0 if remat == "full" else cross
    enc_tokens, dec_tokens = rows * te, rows * td
    total = (c.num_layers * enc_tokens * enc_saved
             + c.num_decoder_layers * (dec_tokens * dec_saved + enc_tokens * cross_saved))
    if remat != "none":
        total += max(enc_tokens * enc, dec_tokens * dec + enc_tokens * cross)
    return total


def decode_cache(c: T5Config, t: int) -> tuple[int, float, float]:
    """Memory planner, beam decoding on one of ``t`` tensor shards: (decoder layers, kv width, query heads);
    each decoder layer caches a key and a value of kv width (heads*d_kv) elements per prompt token
    (cross-attention) and per generated token."""
    h = tensor_share(c.num_heads, t)
    return c.num_decoder_layers, h * c.d_kv, h


def relative_position_bucket(relative: jax.Array, bidirectional: bool, num_buckets: int,
                             max_distance: int) -> jax.Array:
    """T5 bucket of relative position (key - query): exact for small, log-spaced for large."""
    bucket = jnp.zeros_like(relative)
    if bidirectional:
        num_buckets //= 2
        bucket = bucket + (relative > 0).astype(relative.dtype) * num_buckets
        distance = jnp.abs(relative)
    else:
        distance = -jnp.minimum(relative, 0)
    max_exact = num_buckets // 2
    log_ratio = (jnp.log(jnp.maximum(distance, 1).astype(jnp.float32) / max_exact)
                 / math.log(max_distance / max_exact) * (num_buckets - max_exact))
    large = jnp.minimum(max_exact + log_ratio.astype(relative.dtype), num_buckets - 1)
    return bucket + jnp.where(distance < max_exact, distance, large)


class T5Attention(nnx.Module):
    """Multi-head attention without score scaling (T5 folds it into the init)."""

    def __init__(self, config: T5Config, *, rngs: nnx.Rngs):
        d, inner, f = config.d_model, config.num_heads * config.d_kv, config.initializer_factor
        kw = dict(dtype=as_dtype(config.dtype), param_dtype=as_dtype(config.param_dtype),
                  rngs=rngs)
        self.q = Linear(d, inner, axes=("embed", "heads"), std=f * (d * config.d_kv) ** -0.5, **kw)
        self.k = Linear(d, inner, axes=("embed", "heads"), std=f * d ** -0.5, **kw)
        self.v = Linear(d, inner, axes=("embed", "heads"), std=f * d ** -0.5, **kw)
        self.o = Linear(inner, d, axes=("heads", "embed"), std=f * inner ** -0.5, **kw)
        self.num_heads, self.head_dim = config.num_heads, config.d_kv

    def heads(self, proj: Linear, x: jax.Array) -> jax.Array:
        """[B,T,d] -> [B,T,N,H] through projection ``proj``."""
        return proj(x).reshape(*x.shape[:2], self.num_heads, self.head_dim)

    def __call__(self, x, kv_input, mask, bias=None):
        """x [B,T,d] attends to kv_input [B,S,d]. Returns (out [B,T,d], (k, v) [B,S,N,H])."""
        k, v = self.heads(self.k, kv_input), self.heads(self.v, kv_input)
        out = attend(self.heads(self.q, x), k, v, mask, scale=1.0, bias=bias)
        return self.o(out.reshape(*x.shape[:2], -1)), (k, v)


class T5FeedForward(nnx.Module):
    """Gated: wo(act(wi_0 x) * wi_1 x); plain: wo(act(wi x))."""

    def __init__(self, config: T5Config, *, rngs: nnx.Rngs):
        d, f, factor = config.d_model, config.d_ff, config.initializer_factor
        kw = dict(dtype=as_dtype(config.dtype), param_dtype=as_dtype(config.param_dtype),
                  rngs=rngs)
        if config.is_gated:
            self.wi_0 = Linear(d, f, axes=("embed", "mlp"), std=factor * d ** -0.5, **kw)
            self.wi_1 = Linear(d, f, axes=("embed", "mlp"), std=factor * d ** -0.5, **kw)
        else:
            self.wi = Linear(d, f, axes=("embed", "mlp"), std=factor * d ** -0.5, **kw)
        self.wo = Linear(f, d, axes=("mlp", "embed"), std=factor * f ** -0.5, **kw)
        self.act = activation(config.activation)
        self.is_gated = config.is_gated

    def __call__(self, x):
        if self.is_gated:
            return self.wo(self.act(self.wi_0(x)) * self.wi_1(x))
        return self.wo(self.act(self.wi(x)))


class T5Block(ResidualDropout):
    """Self-attention (+ cross-attention in the decoder) + feed-forward, each pre-normed, each
    added back through residual dropout (training only)."""

    def __init__(self, config: T5Config, is_decoder: bool, *, rngs: nnx.Rngs):
        norm = dict(eps=config.layer_norm_epsilon, dtype=as_dtype(config.dtype),
                    param_dtype=as_dtype(config.param_dtype))
        self.self_attn_norm = RMSNorm(config.d_model, **norm)
        self.self_attn = T5Attention(config, rngs=rngs)
        if is_decoder:
            self.cross_attn_norm = RMSNorm(config.d_model, **norm)
            self.cross_attn = T5Attention(config, rngs=rngs)
        self.ff_norm = RMSNorm(config.d_model, **norm)
        self.ff = T5FeedForward(config, rngs=rngs)
        self.is_decoder = is_decoder
        super().__init__()

    def __call__(self, x, self_mask, bias, encoder_out=None, cross_mask=None):
        """x [B,T,d] -> (x, self (k, v), cross (k, v) or None) (k, v [B,S,N,H])."""
        h = self.self_attn_norm(x)
        out, self_kv = self.self_attn(h, h, self_mask, bias)
        x = x + self.drop(out)
        cross_kv = None
        if self.is_decoder:
            out, cross_kv = self.cross_attn(self.cross_attn_norm(x), encoder_out, cross_mask)
            x = x + self.drop(out)
        return x + self.drop(self.ff(self.ff_norm(x))), self_kv, cross_kv


class T5Stack(nnx.Module):
    """Encoder or decoder: blocks, one relative-bias table, final norm (embedding passed in).

    ``blocks`` is an ``nnx.List`` or one stacked block (see :mod:`jaxrec.models.layer_stack`);
    ``remat`` names the per-block rematerialisation policy.
    """

    def __init__(self, config: T5Config, is_decoder: bool, *, rngs: nnx.Rngs):
        self.config, self.is_decoder = config, is_decoder
        self.remat = "none"
        self.rel_bias = param(rngs, (config.relative_attention_num_buckets, config.num_heads),
                              ("rel_buckets", "heads"), as_dtype(config.param_dtype),
                              config.initializer_factor * config.d_model ** -0.5)
        count = config.num_decoder_layers if is_decoder else config.num_layers
        self.blocks = nnx.List([T5Block(config, is_decoder, rngs=rngs) for _ in range(count)])
        self.final_norm = RMSNorm(config.d_model, eps=config.layer_norm_epsilon,
                                  dtype=as_dtype(config.dtype),
                                  param_dtype=as_dtype(config.param_dtype))

    def position_bias(self, query_pos: jax.Array, key_pos: jax.Array) -> jax.Array:
        """[N, Tq, Tk] bias for query positions [Tq] and key positions [Tk]."""
        c = self.config
        buckets = relative_position_bucket(key_pos[None, :] - query_pos[:, None],
                                           not self.is_decoder,
                                           c.relative_attention_num_buckets,
                                           c.relative_attention_max_distance)
        bias = jnp.take(self.rel_bias[...], buckets, axis=0)  # [Tq,Tk,N]
        return jnp.moveaxis(bias, -1, 0).astype(as_dtype(c.dtype))

    def __call__(self, x, self_mask, encoder_out=None, cross_mask=None, collect: str | None = None):
        """Full-sequence stack. x [B,T,d]; masks bool [B,1,T,S].

        Returns (final-normed hidden [B,T,d], per-layer outputs): with ``collect="hidden"`` each
        block's output [B,T,d], with ``"kv"`` its (self (k, v), cross (k, v)), else None; a list
        per block, or stacked [L, ...] in the stacked layout (:func:`run_layers`).
        """
        positions = jnp.arange(x.shape[1])
        bias = self.position_bias(positions, positions)[None]

        def block_fn(block, h):
            h, self_kv, cross_kv = block(h, self_mask, bias, encoder_out, cross_mask)
            return h, {"hidden": h, "kv": (self_kv, cross_kv)}.get(collect)

        out, per_layer = run_layers(self.blocks, x, block_fn, self.remat)
        return self.final_norm(out), per_layer


def _key_mask(attention_mask, batch: int, length: int) -> jax.Array:
    """[B,1,1,S] bool from an optional [B,S] 0/1 mask."""
    if attention_mask is None:
        return jnp.ones((batch, 1, 1, length), bool)
    return jnp.asarray(attention_mask).astype(bool)[:, None, None, :]


class T5ForConditionalGeneration(nnx.Module):
    """T5 seq2seq LM: ``model(input_ids, attention_mask, decoder_input_ids)`` -> logits [B,Td,V]."""

    LAYER_LISTS = (("encoder", "blocks"), ("decoder", "blocks"))

    def __init__(self, config: T5Config, *, rngs: nnx.Rngs):
        self.config = config
        dtype, param_dtype = as_dtype(config.dtype), as_dtype(config.param_dtype)
        self.shared = Embed(config.vocab_size, config.d_model,
                            std=config.initializer_factor, dtype=dtype, param_dtype=param_dtype,
                            rngs=rngs)
        self.encoder = T5Stack(config, is_decoder=False, rngs=rngs)
        self.decoder = T5Stack(config, is_decoder=True, rngs=rngs)
        self.lm_head = (None if config.tie_word_embeddings else
                        Linear(config.d_model, config.vocab_size, axes=("embed", "vocab"),
                               std=config.initializer_factor, dtype=dtype,
                               param_dtype=param_dtype, rngs=rngs))

    def logits(self, hidden: jax.Array) -> jax.Array:
        """Decoder final hidden [..., d] -> float32 logits [..., V]."""
        if self.config.scale_decoder_outputs:
            hidden = hidden * self.config.d_model ** -0.5
        out = self.shared.attend(hidden) if self.lm_head is None else self.lm_head(hidden)
        return out.astype(jnp.float32)

    def encode(self, input_ids=None, attention_mask=None, *, inputs_embeds=None,
               return_all: bool = False) -> jax.Array:
        """Encoder output [B,Te,d] (``return_all``: [L+1,B,Te,d])."""
        x = (self.shared(jnp.asarray(input_ids)) if inputs_embeds is None
             else inputs_embeds.astype(as_dtype(self.config.dtype)))
        final, per_layer = self.encoder(x, _key_mask(attention_mask, *x.shape[:2]),
                                        collect="hidden" if return_all else None)
        return hidden_states(x, final, per_layer) if return_all else final

    def _decode_full(self, decoder_input_ids, encoder_out, attention_mask,
                     decoder_attention_mask, collect=None):
        """Decoder over [B,Td] -> (embeddings [B,Td,d], final hidden [B,Td,d], per-layer outputs)."""
        y = self.shared(jnp.asarray(decoder_input_ids))
        batch, length = y.shape[:2]
        self_mask = causal_mask(length)[None, None] & _key_mask(decoder_attention_mask, batch,
                                                                length)
        final, per_layer = self.decoder(y, self_mask, encoder_out,
                                        _key_mask(attention_mask, batch, encoder_out.shape[1]),
                                        collect=collect)
        return y, final, per_layer

    def __call__(self, input_ids=None, attention_mask=None, decoder_input_ids=None,
                 decoder_attention_mask=None, *, inputs_embeds=None,
                 return_hidden: bool | str = False):
        """input_ids [B,Te] (or inputs_embeds [B,Te,d]), decoder_input_ids [B,Td] -> logits [B,Td,V].

        ``return_hidden=True``: decoder final hidden [B,Td,d]; ``"all"``: [L+1,B,Td,d].
        """
        if decoder_input_ids is None:
            raise JaxrecError("T5 forward needs decoder_input_ids [B,Td] (an encoder-decoder model)")
        encoder_out = self.encode(input_ids, attention_mask, inputs_embeds=inputs_embeds)
        every = return_hidden == "all"
        embedded, final, per_layer = self._decode_full(
            decoder_input_ids, encoder_out, attention_mask, decoder_attention_mask,
            "hidden" if every else None)
        if every:
            return hidden_states(embedded, final, per_layer)
        if return_hidden:
            return final
        return self.logits(final)

    # ---------------------------------------------------------------------------- decoding
    def prefill(self, input_ids, attention_mask, num_beams: int, max_new_tokens: int):
        """Encode [B,Te] once per user and run the decoder-start token.

        Returns (state, logits0 [B,V] float32 for the first generated token).
        """
        self._check_list_layout()
        attention_mask = jnp.asarray(attention_mask)
        encoder_out = self.encode(input_ids, attention_mask)
        batch = encoder_out.shape[0]
        start = jnp.full((batch, 1), self.config.decoder_start_token_id, jnp.int32)
        _, final, kvs = self._decode_full(start, encoder_out, attention_mask, None, "kv")
        self_kv, cross_kv = [s for s, _ in kvs], [c for _, c in kvs]
        c = self.config
        gen_k, gen_v = empty_generated_cache(batch, num_beams, max_new_tokens, c.num_heads,
                                             c.d_kv, c.num_decoder_layers, self_kv[0][0].dtype)
        state = DecodeState(
            prefix_k=tuple(heads_major(k) for k, _ in self_kv), prefix_v=tuple(heads_major(v) for _, v in self_kv),
            prefix_mask=jnp.ones((batch, 1), bool),
            prefix_positions=jnp.zeros((batch, 1), jnp.int32),
            next_position=jnp.ones((batch,), jnp.int32),
            gen_k=gen_k, gen_v=gen_v,
            cross_k=tuple(k for k, _ in cross_kv), cross_v=tuple(v for _, v in cross_kv),
            cross_mask=attention_mask.astype(bool))
        return state, self.logits(final[:, -1])

    def _check_list_layout(self) -> None:
        if not isinstance(self.decoder.blocks, nnx.List):
            raise JaxrecError("decoding needs the layer-list layout; convert a scanned model with "
                              "jaxrec.models.layer_stack.unstack_layers(model)")

    def decode_step(self, tokens: jax.Array, state: DecodeState, step):
        """Feed generated token number ``step`` of each beam: tokens [B,K].

        Returns (logits [B,K,V] float32 for the next token, the updated state).
        """
        self._check_list_layout()
        query_pos = jnp.reshape(step + 1, (1,))
        slots = jnp.arange(state.max_new_tokens)
        prefix_bias = self.decoder.position_bias(query_pos, jnp.zeros((1,), jnp.int32))[:, 0]
        gen_bias = self.decoder.position_bias(query_pos, slots + 1)[:, 0]
        gen_mask = (slots <= step)[None, None, :]
        cross_mask = state.cross_mask[:, None, None, :]
        x = self.shared(tokens)
        new_k, new_v = [], []
        for i, block in enumerate(self.decoder.blocks):
            attn = block.self_attn
            h = block.self_attn_norm(x)
            gen_k = write_generated(state.gen_k[i], attn.heads(attn.k, h), step)
            gen_v = write_generated(state.gen_v[i], attn.heads(attn.v, h), step)
            out = attend_prefix_and_generated(
                attn.heads(attn.q, h), state.prefix_k[i], state.prefix_v[i], state.prefix_mask,
                gen_k, gen_v, gen_mask, scale=1.0, prefix_bias=prefix_bias, gen_bias=gen_bias)
            x = x + attn.o(out.reshape(*x.shape[:2], -1))
            cross = block.cross_attn
            out = attend(cross.heads(cross.q, block.cross_attn_norm(x)), state.cross_k[i],
                         state.cross_v[i], cross_mask, scale=1.0)
            x = x + cross.o(out.reshape(*x.shape[:2], -1))
            x = x + block.ff(block.ff_norm(x))
            new_k.append(gen_k)
            new_v.append(gen_v)
        logits = self.logits(self.decoder.final_norm(x))
        return logits, state.replace(gen_k=tuple(new_k), gen_v=tuple(new_v))

    def reorder_beams(self, state: DecodeState, parent: jax.Array) -> DecodeState:
        """Beam k continues beam parent[b,k] (per-beam caches gathered; encoder part untouched)."""
        return reorder_beams(state, parent)

    # ----------------------------------------------------------------------------- HF interop
    def vocab_params(self) -> list[tuple[nnx.Param, int]]:
        """(parameter, vocab axis) pairs to grow when tokens are added."""
        params = [(self.shared.embedding, 0)]
        if self.lm_head is not None:
            params.append((self.lm_head.kernel, 1))
        return params

    @staticmethod
    def hf_name(path: tuple) -> str:
        """Our parameter path -> HF safetensors name."""
        if path[1:2] == ("blocks",) and not isinstance(path[2], int):
            raise JaxrecError("HF names need the layer-list layout; convert a scanned model with "
                              "jaxrec.models.layer_stack.unstack_layers(model)")
        name = ".".join(str(p) for p in path)
        ff_layer = "2" if name.startswith("decoder.") else "1"
        for pattern, replacement in (
                (r"^(encoder|decoder)\.rel_bias$",
                 r"\1.block.0.layer.0.SelfAttention.relative_attention_bias.weight"),
                (r"\.final_norm\.scale$", ".final_layer_norm.weight"),
                (r"\.blocks\.(\d+)\.self_attn_norm\.scale$", r".block.\1.layer.0.layer_norm.weight"),
                (r"\.blocks\.(\d+)\.self_attn\.", r".block.\1.layer.0.SelfAttention."),
                (r"\.blocks\.(\d+)\.cross_attn_norm\.scale$",
                 r".block.\1.layer.1.layer_norm.weight"),
                (r"\.blocks\.(\d+)\.cross_attn\.", r".block.\1.layer.1.EncDecAttention."),
                (r"\.blocks\.(\d+)\.ff_norm\.scale$",
                 rf".block.\1.layer.{ff_layer}.layer_norm.weight"),
                (r"\.blocks\.(\d+)\.ff\.", rf".block.\1.layer.{ff_layer}.DenseReluDense."),
                (r"\.(kernel|embedding)$", ".weight")):
            name = re.sub(pattern, replacement, name)
        return name
