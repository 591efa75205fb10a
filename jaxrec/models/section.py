"""The ``model:`` section of an LLM recipe's config and the model it describes.

``pretrained`` loads a checkpoint (:func:`jaxrec.models.load_pretrained`); without it, ``arch`` names a
registry row (:mod:`jaxrec.models.registry`) whose ``scratch_config`` sizes a fresh model from the size
fields and the run's tokenizer.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from flax import nnx

from jaxrec.models.attention import use_attention
from jaxrec.models.hf_io import load_pretrained
from jaxrec.models.registry import ARCHITECTURES, architecture, build_model

#: registry rows a recipe can train from scratch (``model.arch``)
SCRATCH_ARCHS = tuple(name for name, a in ARCHITECTURES.items() if a.scratch_config is not None)


@dataclasses.dataclass(frozen=True)
class ModelSection:
    """The LLM: ``pretrained`` (a local HF model directory, a ``.gguf`` file or a named small checkpoint
    such as ``smollm2-135m``; never downloaded) or, when it is null, a small ``arch`` model trained from
    scratch with a ``vocab_size`` BPE tokenizer trained on the dataset's prompts and item titles. The
    size fields apply to from-scratch models only. ``chat_template``: every prompt becomes one user
    turn of the tokenizer's chat template, the response the assistant's turn ended by EOS."""

    pretrained: str | None = None
    dtype: Literal["float32", "bfloat16"] = "float32"
    attention: Literal["auto", "xla", "cudnn", "splash"] = "auto"  # full-sequence attention kernel (Llama family)
    chat_template: bool = False  # wrap each prompt in the tokenizer's chat template (instruct models)
    arch: str = "llama"  # a registry row with a from-scratch config: llama | t5
    vocab_size: int = 2048
    hidden_size: int = 128
    intermediate_size: int = 256
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    max_position_embeddings: int = 1024
    seed: int = 0

    def __post_init__(self):
        if self.arch not in SCRATCH_ARCHS:
            raise ValueError(f"arch={self.arch!r}: expected one of {', '.join(SCRATCH_ARCHS)}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size={self.hidden_size} must be a multiple of num_heads={self.num_heads}")

    def describe(self) -> str:
        if self.pretrained:
            return self.pretrained
        return (f"{self.arch} from scratch (hidden {self.hidden_size}, {self.num_layers} layers, "
                f"vocab {self.vocab_size})")


def make_model(section: ModelSection, tokenizer) -> nnx.Module:
    """Load ``section.pretrained``, or initialise a from-scratch ``section.arch`` model sized to ``tokenizer``."""
    if section.pretrained:
        return with_attention(load_pretrained(section.pretrained, dtype=section.dtype), section)
    config = architecture(section.arch).scratch_config(section, tokenizer)
    return with_attention(build_model(config, seed=section.seed), section)


def with_attention(model: nnx.Module, section: ModelSection) -> nnx.Module:
    """``model`` running the section's full-sequence attention kernel (``model.attention``)."""
    use_attention(model, section.attention)
    return model
