"""Prompts that carry items as embeddings (RSLLM): text with ``<item_emb>`` placeholders → token ids.

A placeholder for item ``i`` becomes the negative id ``-1 - i`` (:func:`jaxrec.models.projector.placeholder_id`),
which the injecting input layer replaces by the projected ID embedding; :class:`TaggedFeatures` also marks
where the user representation is read for the sequence-level contrastive loss.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from jaxrec.data.pipeline import CausalFeatures
from jaxrec.data.tasks import ITEM_PLACEHOLDER, Example
from jaxrec.errors import DataError
from jaxrec.models import projector as proj
from jaxrec.models.prompts import bos_id, encode


def encode_prompts(tokenizer, examples: Sequence[Example]) -> list[list[int]]:
    """Prompt token ids (no BOS) with each ``<item_emb>`` encoded as ``-1 - item`` (in
    ``meta["placeholder_items"]`` order); the text between placeholders is tokenized piecewise."""
    pieces = []
    for e in examples:
        parts = e.prompt.split(ITEM_PLACEHOLDER)
        if len(parts) - 1 != len(e.meta.get("placeholder_items", [])):
            raise DataError(f"prompt of user {e.user} has {len(parts) - 1} placeholders but "
                            f"{len(e.meta.get('placeholder_items', []))} placeholder_items")
        pieces.extend(parts)
    encoded = iter(encode(tokenizer, pieces))
    out = []
    for e in examples:
        ids = list(next(encoded))
        for item in e.meta.get("placeholder_items", []):
            ids += [proj.placeholder_id(item)] + list(next(encoded))
        out.append(ids)
    return out


@dataclasses.dataclass(frozen=True)
class PlaceholderRows:
    """The pipeline's encoder for unified prompts: each example → ``prompt_ids`` (:func:`encode_prompts`),
    ``response_ids`` and ``target`` (read by :class:`TaggedFeatures`)."""

    tokenizer: Any

    def __call__(self, examples: Sequence[Example]) -> list[dict]:
        responses = encode(self.tokenizer, [e.response for e in examples])
        return [{"prompt_ids": p, "response_ids": r, "target": e.target}
                for e, p, r in zip(examples, encode_prompts(self.tokenizer, examples), responses)]


def model_inputs(tokenizer, examples: Sequence[Example]) -> list[list[int]]:
    """Decoder-only model inputs: ``[BOS] +`` :func:`encode_prompts`."""
    bos = bos_id(tokenizer)
    return [([bos] if bos is not None else []) + ids for ids in encode_prompts(tokenizer, examples)]


@dataclasses.dataclass(frozen=True)
class TaggedFeatures(CausalFeatures):
    """:class:`CausalFeatures` plus ``target_tag`` [T] int32: ``1 + target item`` at the last prompt
    position (where ``h_user`` is read), 0 elsewhere (and everywhere when truncation cut it off)."""

    def map(self, example: dict) -> dict:
        out = super().map(example)
        tag = np.zeros(len(out["input_ids"]), np.int32)
        last = len(example["prompt_ids"]) + (self.bos_id is not None) - 1
        if last < len(tag):
            tag[last] = example["target"] + 1
        out["target_tag"] = tag
        return out
