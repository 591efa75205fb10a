"""GGUF checkpoints (llama.cpp's single-file format) in, without torch.

A ``.gguf`` file holds the architecture in its metadata, the tokenizer (vocabulary, merges, special
ids, chat template) and the weights, often quantized. :class:`GGUFCheckpoint` reads it with the
``gguf`` package (llama.cpp's own reader, NumPy only) and offers what :mod:`jaxrec.models.hf_io`
needs to load it like an HF directory:

* :meth:`~GGUFCheckpoint.hf_config` — the equivalent HF ``config.json`` dict;
* :meth:`~GGUFCheckpoint.tensors` — HF tensor name -> lazily dequantized tensor (HF layout). Every
  quantization the ``gguf`` package knows is dequantized (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1,
  Q8_0, the K-quants, ...). llama.cpp stores Llama/Mistral q/k projections with rows permuted for its
  rotary layout; they are permuted back, as ``transformers`` does;
* :meth:`~GGUFCheckpoint.tokenizer` — a ``transformers`` fast tokenizer built from the metadata, with
  the chat template.

Architectures: ``llama``, ``mistral``, ``qwen2`` (decoder-only Llama family).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from jaxrec.errors import JaxrecError

ARCHITECTURES = ("llama", "mistral", "qwen2")
PERMUTED_QK = ("llama", "mistral")  # llama.cpp's converter permutes q/k rows for these
_LAYER_TENSORS = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}
_GLOBAL_TENSORS = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


def hf_tensor_name(gguf_name: str) -> str | None:
    """llama.cpp tensor name -> HF name (``blk.3.attn_q.weight`` -> ``model.layers.3.self_attn.q_proj.weight``);
    None for tensors HF models do not hold."""
    match = re.fullmatch(r"blk\.(\d+)\.(\w+)\.(weight|bias)", gguf_name)
    if match:
        part = _LAYER_TENSORS.get(match.group(2))
        return f"model.layers.{match.group(1)}.{part}.{match.group(3)}" if part else None
    stem, _, kind = gguf_name.rpartition(".")
    part = _GLOBAL_TENSORS.get(stem)
    return f"{part}.{kind}" if part else None


def unpermute_qk(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """Undo llama.cpp's rotary row permutation of a q or k projection [heads*head_dim, in] (or bias)."""
    half = weight.shape[0] // num_heads // 2
    return weight.reshape(num_heads, half, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


class _LazyTensor:
    """One GGUF tensor, dequantized to float32 on first read; safetensors-slice protocol
    (``get_shape()``, ``[index]``) so the HF loader reads it like a safetensors tensor."""

    def __init__(self, checkpoint: "GGUFCheckpoint", tensor, permute_heads: int | None):
        self._checkpoint, self._tensor, self._permute_heads = checkpoint, tensor, permute_heads
        self._value: np.ndarray | None = None

    def get_shape(self) -> list[int]:
        return [int(d) for d in reversed(self._tensor.shape.tolist())]

    def __getitem__(self, index) -> np.ndarray:
        if self._value is None:
            self._value = self._checkpoint.dequantize(self._tensor, self._permute_heads)
        value = self._value[index]
        if index == tuple(slice(None) for _ in value.shape):
            self._value = None  # read whole: do not keep a second float32 copy of the model
        return value


class GGUFCheckpoint:
    """A parsed ``.gguf`` file (metadata + tensor directory; tensor data stays memory-mapped)."""

    def __init__(self, path: str | os.PathLike):
        from gguf import GGUFReader

        self.path = Path(path)
        if not self.path.is_file():
            raise JaxrecError(f"{self.path}: GGUF file not found")
        try:
            self._reader = GGUFReader(self.path)
        except Exception as e:  # the reader raises ValueError/IndexError/struct errors on damage
            raise JaxrecError(f"{self.path}: not a readable GGUF file (truncated or corrupt?): "
                              f"{type(e).__name__}: {e}") from None
        self.metadata: dict[str, Any] = {}
        for key, field in self._reader.fields.items():
            if key.startswith("GGUF."):
                continue
            try:
                self.metadata[key] = field.contents()
            except Exception as e:
                raise JaxrecError(f"{self.path}: metadata field {key!r} is unreadable: {e}") from None
        self.architecture = self.metadata.get("general.architecture")
        if self.architecture not in ARCHITECTURES:
            raise JaxrecError(f"{self.path}: GGUF architecture {self.architecture!r} is not supported; "
                              f"expected one of {', '.join(ARCHITECTURES)}")

    def _meta(self, key: str, default: Any = KeyError) -> Any:
        full = f"{self.architecture}.{key}"
        if full in self.metadata:
            return self.metadata[full]
        if default is KeyError:
            raise JaxrecError(f"{self.path}: metadata field {full!r} missing")
        return default

    def hf_config(self) -> dict[str, Any]:
        """The HF ``config.json`` dict of the model in the file."""
        names = {t.name for t in self._reader.tensors}
        if "rope_freqs.weight" in names or self._meta("rope.scaling.type", "none") not in ("none", None):
            raise JaxrecError(f"{self.path}: rope scaling stored in GGUF (rope_freqs / rope.scaling) is not "
                              f"supported; convert the HF checkpoint instead")
        heads = int(self._meta("attention.head_count"))
        hidden = int(self._meta("embedding_length"))
        tokens = self.metadata.get("tokenizer.ggml.tokens")
        vocab = int(self._meta("vocab_size", len(tokens) if tokens is not None else 0))
        if not vocab:
            raise JaxrecError(f"{self.path}: neither {self.architecture}.vocab_size nor a tokenizer vocabulary")
        config = {
            "model_type": self.architecture,
            "architectures": [{"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
                               "qwen2": "Qwen2ForCausalLM"}[self.architecture]],
            "vocab_size": vocab, "hidden_size": hidden,
            "intermediate_size": int(self._meta("feed_forward_length")),
            "num_hidden_layers": int(self._meta("block_count")),
            "num_attention_heads": heads,
            "num_key_value_heads": int(self._meta("attention.head_count_kv", heads)),
            "head_dim": int(self._meta("attention.key_length", hidden // heads)),
            "max_position_embeddings": int(self._meta("context_length", 2048)),
            "rms_norm_eps": float(self._meta("attention.layer_norm_rms_epsilon", 1e-6)),
            "rope_theta": float(self._meta("rope.freq_base", 10000.0)),
            "tie_word_embeddings": "output.weight" not in names,
            "attention_bias": "blk.0.attn_q.bias" in names and self.architecture != "qwen2",
            "bos_token_id": self.metadata.get("tokenizer.ggml.bos_token_id"),
            "eos_token_id": self.metadata.get("tokenizer.ggml.eos_token_id"),
            "pad_token_id": self.metadata.get("tokenizer.ggml.padding_token_id"),
        }
        window = self._meta("attention.sliding_window", None)
        if window is not None and self.architecture == "mistral":
            config["sliding_window"] = int(window)
        return {k: (int(v) if isinstance(v, np.integer) else v) for k, v in config.items()}

    def tensors(self, config: dict[str, Any]) -> dict[str, _LazyTensor]:
        """HF tensor name -> lazily dequantized tensor (HF layout: Linear weights [out, in]);
        ``config``: :meth:`hf_config` (its head counts undo the q/k permutation)."""
        out = {}
        for tensor in self._reader.tensors:
            name = hf_tensor_name(tensor.name)
            if name is None:
                continue
            permute = None
            if self.architecture in PERMUTED_QK and ".self_attn.q_proj." in name:
                permute = config["num_attention_heads"]
            elif self.architecture in PERMUTED_QK and ".self_attn.k_proj." in name:
                permute = config["num_key_value_heads"]
            out[name] = _LazyTensor(self, tensor, permute)
        return out

    def dequantize(self, tensor, permute_heads: int | None) -> np.ndarray:
        """float32 values of one tensor in NumPy (row-major, HF) layout."""
        from gguf import dequantize

        try:
            value = np.asarray(dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)
        except NotImplementedError:
            raise JaxrecError(f"{self.path}: tensor {tensor.name!r} uses quantization {tensor.tensor_type.name}, "
                              f"which the installed gguf package cannot dequantize") from None
        except Exception as e:
            raise JaxrecError(f"{self.path}: tensor {tensor.name!r} is unreadable (truncated file?): {e}") from None
        value = value.reshape([int(d) for d in reversed(tensor.shape.tolist())])
        return unpermute_qk(value, permute_heads) if permute_heads else value

    def tokenizer(self):
        """A ``transformers`` fast tokenizer built from the file's vocabulary by transformers' own GGUF
        converter (special tokens, ``add_bos_token`` and the chat template from the metadata)."""
        from transformers import PreTrainedTokenizerFast
        from transformers.integrations.gguf.gguf_tokenizer_mapping import (convert_gguf_tokenizer,
                                                                           get_gguf_tokenizer)

        if "tokenizer.ggml.model" not in self.metadata or "tokenizer.ggml.tokens" not in self.metadata:
            raise JaxrecError(f"{self.path}: no tokenizer in the GGUF metadata (tokenizer.ggml.model/tokens)")
        try:
            architecture, vocabulary, tokenizer_config = get_gguf_tokenizer(str(self.path))
            backend, _ = convert_gguf_tokenizer(architecture, vocabulary)
        except (KeyError, ValueError, NotImplementedError) as e:
            raise JaxrecError(f"{self.path}: cannot build a tokenizer from the GGUF metadata "
                              f"(tokenizer.ggml.model={self.metadata['tokenizer.ggml.model']!r}): {e}") from None
        return PreTrainedTokenizerFast(tokenizer_object=backend, **tokenizer_config)
