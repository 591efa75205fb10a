"""Prompt text → model input ids, the same way in training and evaluation.

* :func:`encode` — token ids of texts, never special tokens (the callers add BOS/EOS explicitly);
* :func:`prompt_ids` — a model's inputs: decoder-only ``[BOS] + prompt``, T5 ``prompt + EOS``;
* :func:`chat_prompts` — prompts wrapped in the tokenizer's chat template (``model.chat_template``);
* :func:`row_fits` — whether a training row of ``seq_len`` tokens holds a whole example.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

from jaxrec.data.pipeline import CausalFeatures
from jaxrec.data.tasks import Example
from jaxrec.errors import ConfigError
from jaxrec.models.registry import is_seq2seq
from jaxrec.models.section import ModelSection
from jaxrec.models.tokenizer import adds_bos


def encode(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text, without special tokens."""
    if not texts:
        return []
    return tokenizer(list(texts), add_special_tokens=False)["input_ids"]


def bos_id(tokenizer) -> int | None:
    """The BOS id to put before every prompt, or None (see :func:`jaxrec.models.tokenizer.adds_bos`)."""
    return tokenizer.bos_token_id if adds_bos(tokenizer) else None


def row_fits(tokenizer, seq_len: int) -> Callable[[str, str], bool]:
    """``fits(prompt, response)``: whether a decoder-only training row of ``seq_len`` tokens holds the
    whole example, as :func:`finetune` builds it (:meth:`CausalFeatures.keeps_whole`)."""
    features = CausalFeatures(seq_len, tokenizer.eos_token_id, bos_id(tokenizer))

    def fits(prompt: str, response: str) -> bool:
        p, r = encode(tokenizer, [prompt, response])
        return features.keeps_whole(len(p), len(r))

    return fits


def chat_prompts(tokenizer, section: ModelSection, prompts: Sequence[str]) -> list[str]:
    """``prompts`` as the model reads them: unchanged, or each one user turn of the tokenizer's chat
    template followed by the assistant's turn opening (``model.chat_template: true``)."""
    if not section.chat_template:
        return list(prompts)
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(f"model.chat_template is true, but the tokenizer of {section.describe()} has no chat "
                          f"template; set model.chat_template: false")
    return [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                          add_generation_prompt=True) for p in prompts]


def chat_examples(tokenizer, section: ModelSection, examples: Sequence[Example]) -> list[Example]:
    """``examples`` with their prompts passed through :func:`chat_prompts`."""
    prompts = chat_prompts(tokenizer, section, [e.prompt for e in examples])
    return [dataclasses.replace(e, prompt=p) for e, p in zip(examples, prompts)]


def prompt_ids(tokenizer, model, prompts: Sequence[str]) -> list[list[int]]:
    """Model inputs: decoder-only ``[BOS] + prompt`` (when the tokenizer adds a BOS); encoder-decoder (T5)
    ``prompt + EOS``. ``model``: the model, or None for a decoder-only model not built yet."""
    ids = encode(tokenizer, prompts)
    if model is not None and is_seq2seq(model):
        return [x + [tokenizer.eos_token_id] for x in ids]
    bos = bos_id(tokenizer)
    return [([bos] if bos is not None else []) + x for x in ids]
