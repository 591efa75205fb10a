"""Tokenizers and vocabulary growth: load an HF tokenizer, train a small BPE one, add tokens and
resize a model's embedding rows to match (the result stays loadable by ``transformers``).

Special tokens of a trained tokenizer, in id order: ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2, ``<s>`` 3
(T5's pad/eos/unk ids, plus a bos for decoder-only models).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxrec.errors import JaxrecError

PROMPT_BOS_KEY = "jaxrec_prompt_bos"
SPECIAL_TOKENS = {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>",
                  "bos_token": "<s>"}


def load_tokenizer(path: str | os.PathLike):
    """The ``transformers`` fast tokenizer of a local HF directory, a ``.gguf`` file (built from its
    metadata) or a named small checkpoint (:mod:`jaxrec.models.checkpoints`); never downloads."""
    from transformers import AutoTokenizer

    from jaxrec.models.checkpoints import resolve_pretrained

    path = resolve_pretrained(path)
    if path.suffix == ".gguf":
        from jaxrec.models.gguf_io import GGUFCheckpoint

        return GGUFCheckpoint(path).tokenizer()
    if not path.is_dir():
        raise JaxrecError(f"{path}: tokenizer directory not found")
    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as e:
        raise JaxrecError(f"{path}: not a loadable HF tokenizer directory "
                          f"(expected tokenizer.json or tokenizer_config.json): {e}") from None


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int,
                        path: str | os.PathLike | None = None):
    """Train a byte-level BPE tokenizer of ``vocab_size`` tokens on ``texts``.

    Returns a ``transformers.PreTrainedTokenizerFast`` (saved in HF format to ``path`` if given).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size <= len(SPECIAL_TOKENS):
        raise JaxrecError(f"vocab_size={vocab_size}: must exceed the {len(SPECIAL_TOKENS)} "
                          f"special tokens")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size,
                                  special_tokens=list(SPECIAL_TOKENS.values()),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    bpe.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, **SPECIAL_TOKENS)
    if path is not None:
        save_tokenizer(tokenizer, path)
    return tokenizer


def save_tokenizer(tokenizer, path: str | os.PathLike) -> Path:
    """Write the tokenizer's HF files into ``path`` (each file replaced atomically), with
    :func:`adds_bos` recorded in tokenizer_config.json as ``jaxrec_prompt_bos`` (transformers does not
    keep an explicit ``add_bos_token: false`` through a save and load)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".tokenizer-", dir=path) as tmp:
        tokenizer.save_pretrained(tmp)
        config_file = Path(tmp) / "tokenizer_config.json"
        if config_file.is_file():
            config = json.loads(config_file.read_text())
            config[PROMPT_BOS_KEY] = adds_bos(tokenizer)
            config_file.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
        for file in Path(tmp).iterdir():
            os.replace(file, path / file.name)
    return path


def word_level_tokenizer(words: Sequence[str], *, pad: str = "<pad>", eos: str = "</s>", unk: str = "<unk>"):
    """A ``transformers`` tokenizer whose vocabulary is exactly ``words`` (id = position), splitting on
    whitespace; ``pad``/``eos``/``unk`` must be among them."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    word_level = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token=unk))
    word_level.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=word_level, pad_token=pad, eos_token=eos, unk_token=unk)


def adds_bos(tokenizer) -> bool:
    """Whether a BOS goes before every prompt: the tokenizer has one and neither its config
    (``add_bos_token: false``, e.g. SmolLM2's GGUF: its chat template opens each turn itself) nor a
    saved ``jaxrec_prompt_bos: false`` says no."""
    kwargs = tokenizer.init_kwargs
    return (tokenizer.bos_token_id is not None and kwargs.get(PROMPT_BOS_KEY, True) is not False
            and kwargs.get("add_bos_token", True) is not False)


def add_tokens(tokenizer, tokens: Sequence[str], special: bool = False) -> list[int]:
    """Add ``tokens`` (semantic IDs, placeholders) kept whole by the tokenizer; returns their ids.

    Tokens already in the vocabulary keep their id. Afterwards call
    :func:`resize_token_embeddings` with ``len(tokenizer)``.
    """
    tokenizer.add_tokens(list(tokens), special_tokens=special)
    return tokenizer.convert_tokens_to_ids(list(tokens))


def resize_token_embeddings(model: nnx.Module, vocab_size: int, *, seed: int = 0,
                            noise_scale: float = 0.01) -> nnx.Module:
    """Grow (or truncate) every vocabulary-sized parameter of ``model`` to ``vocab_size`` in place.

    New rows = mean of the existing rows + N(0, (noise_scale * per-feature std)^2) noise, so new
    tokens start near the average token. Updates ``model.config.vocab_size``; returns ``model``.
    """
    old_config = model.config
    if vocab_size <= 0:
        raise JaxrecError(f"vocab_size={vocab_size}: must be positive")
    key = jax.random.key(seed)
    for variable, axis in model.vocab_params():
        value = variable.get_value()
        old = value.shape[axis]
        if vocab_size <= old:
            variable.set_value(jax.lax.slice_in_dim(value, 0, vocab_size, axis=axis))
            continue
        rows = jnp.moveaxis(value, axis, 0).astype(jnp.float32)  # [V_old, d]
        key, sub = jax.random.split(key)
        noise = jax.random.normal(sub, (vocab_size - old, rows.shape[1]), jnp.float32)
        new_rows = rows.mean(0) + noise_scale * rows.std(0) * noise
        grown = jnp.concatenate([rows, new_rows]).astype(value.dtype)
        variable.set_value(jnp.moveaxis(grown, 0, axis))
    new_config = dataclasses.replace(old_config, vocab_size=vocab_size)
    for _, module in nnx.iter_modules(model):
        if getattr(module, "config", None) is old_config:
            module.config = new_config
    return model
