"""The model registry: one row per architecture, the only place that maps a name, an HF config or a config
object to the code that builds, loads and plans the model.

    name   config       model                        HF model_type           encoder-decoder
    llama  LlamaConfig  LlamaForCausalLM             llama, qwen2, mistral   no
    t5     T5Config     T5ForConditionalGeneration   t5                      yes
    bert   BertConfig   BertModel                    bert                    no (an encoder: no planner rows)

A row names the model file's pieces: its config class (``from_hf``/``to_hf``, a ``model_type`` field),
its module class (built as ``model(config, rngs=...)``), and three functions: ``scratch_config(section,
tokenizer)`` (a recipe's from-scratch ``model.arch``), ``activation_bytes`` and ``decode_cache`` (the
memory planner, :mod:`jaxrec.train.plan`). Adding an architecture is its model file plus one row here.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from flax import nnx

from jaxrec.errors import JaxrecError
from jaxrec.models import bert, llama, t5


@dataclasses.dataclass(frozen=True)
class Architecture:
    """One row: what jaxrec knows of an architecture (see the module docstring)."""

    name: str                               # a recipe's ``model.arch``
    config: type                            # the config dataclass
    model: type                             # the nnx.Module class
    model_types: tuple[str, ...]            # HF config.json ``model_type`` values it loads
    hf_architectures: dict[str, str]        # HF ``architectures`` value it loads -> its model_type
    encoder_decoder: bool                   # an encoder reads the prompt, a decoder writes the response
    scratch_config: Callable[[Any, Any], Any] | None = None  # (model section, tokenizer) -> config
    activation_bytes: Callable[..., float] | None = None      # planner: train-step activations
    decode_cache: Callable[[Any, int], tuple[int, float, float]] | None = None  # planner: beam-decoding cache


ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in (
    Architecture("llama", llama.LlamaConfig, llama.LlamaForCausalLM, llama.MODEL_TYPES,
                 {a: t for t, a in llama.HF_ARCHITECTURES.items()}, encoder_decoder=False,
                 scratch_config=llama.scratch_config, activation_bytes=llama.activation_bytes,
                 decode_cache=llama.decode_cache),
    Architecture("t5", t5.T5Config, t5.T5ForConditionalGeneration, ("t5",), {"T5ForConditionalGeneration": "t5"},
                 encoder_decoder=True, scratch_config=t5.scratch_config, activation_bytes=t5.activation_bytes,
                 decode_cache=t5.decode_cache),
    Architecture("bert", bert.BertConfig, bert.BertModel, ("bert",), {"BertModel": "bert", "BertForMaskedLM": "bert"},
                 encoder_decoder=False),
)}

#: HF model_type -> row
MODEL_TYPES: dict[str, Architecture] = {t: a for a in ARCHITECTURES.values() for t in a.model_types}


def architecture(name: str, where: str = "model.arch") -> Architecture:
    """The row named ``name``; one clear error listing the known names."""
    if name not in ARCHITECTURES:
        raise JaxrecError(f"{where}: unknown architecture {name!r}; expected one of {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name]


def for_model_type(model_type: str | None, where: str = "model_type") -> Architecture:
    """The row that loads HF ``model_type``; one clear error listing the supported ones."""
    if model_type not in MODEL_TYPES:
        raise JaxrecError(f"{where}: unsupported model_type {model_type!r}; expected one of "
                          f"{', '.join(MODEL_TYPES)}")
    return MODEL_TYPES[model_type]


def hf_model_type(hf: dict[str, Any]) -> str | None:
    """An HF config dict's ``model_type``, or (a config without one) the model_type of its first known
    ``architectures`` entry."""
    if hf.get("model_type") is not None:
        return hf["model_type"]
    known = {name: t for a in ARCHITECTURES.values() for name, t in a.hf_architectures.items()}
    return next((known[name] for name in hf.get("architectures") or () if name in known), None)


def for_config(config) -> Architecture:
    """The row of a config object (by its class)."""
    row = next((a for a in ARCHITECTURES.values() if isinstance(config, a.config)), None)
    if row is None:
        raise JaxrecError(f"no architecture has the config class {type(config).__name__}; expected one of "
                          f"{', '.join(a.config.__name__ for a in ARCHITECTURES.values())}")
    return row


def for_model(model: nnx.Module) -> Architecture:
    """The row of a built model (by its config)."""
    return for_config(model.config)


def config_from_hf(hf: dict[str, Any], weight_names: set[str], source: str = "config.json", **overrides):
    """HF config dict -> our config; ``weight_names``: the checkpoint's tensors (T5: whether it stores an lm_head)."""
    model_type = hf_model_type(hf)
    row = for_model_type(model_type, source)
    try:
        return row.config.from_hf({**hf, "model_type": model_type}, weight_names, **overrides)
    except KeyError as e:
        raise JaxrecError(f"{source}: missing field {e.args[0]!r} for model_type {model_type!r}") from None


def build_model(config, seed: int = 0) -> nnx.Module:
    """A randomly initialised model for ``config`` (any row's config class)."""
    return for_config(config).model(config, rngs=nnx.Rngs(seed))


def is_seq2seq(model: nnx.Module) -> bool:
    """Whether ``model`` is an encoder-decoder (prompt to the encoder, response from the decoder)."""
    return for_model(model).encoder_decoder
