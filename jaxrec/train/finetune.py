"""Fine-tune a model on prompt/response examples through the shared engine (:mod:`jaxrec.train.trainer`).

Examples stay text until the input pipeline reads them: each host tokenizes only its own rows, one
record at a time (:class:`TextRows` is the encoder; RSLLM plugs in its placeholder-aware one). The
truncation warnings and ``group_by_length`` read token counts from one counting pass (int32 [N, 2])."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable, Sequence

import numpy as np
from flax import nnx

from jaxrec.data.pipeline import CausalFeatures, Encoder, Seq2SeqFeatures, make_batches, token_lengths
from jaxrec.data.tasks import Example
from jaxrec.errors import ConfigError
from jaxrec.models.prompts import bos_id, encode
from jaxrec.models.registry import is_seq2seq
from jaxrec.train.config import TrainConfig
from jaxrec.train.losses import causal_lm_loss, seq2seq_lm_loss
from jaxrec.train.trainer import Trainer

log = logging.getLogger("jaxrec.train.finetune")


@dataclasses.dataclass(frozen=True)
class TextRows:
    """The pipeline's encoder for text examples: ``prompt`` / ``response`` → ``prompt_ids`` /
    ``response_ids`` (token ids without special tokens)."""

    tokenizer: Any

    def __call__(self, examples: Sequence[Example]) -> list[dict]:
        prompts = encode(self.tokenizer, [e.prompt for e in examples])
        responses = encode(self.tokenizer, [e.response for e in examples])
        return [{"prompt_ids": p, "response_ids": r} for p, r in zip(prompts, responses)]


def finetune(model, tokenizer, examples: Sequence[Example], train: TrainConfig, *, loss_fn=None,
             target_len: int | None = None, evaluate: Callable[[nnx.Module], dict] | None = None
             ) -> tuple[nnx.Module, dict]:
    """Train ``model`` on ``examples`` (loss on the response + EOS, or every token with
    ``train.data.train_on_inputs``) with the engine; returns (trained model, fit summary).
    ``evaluate(model) -> {metric: value}`` runs every ``train.eval_every`` steps (logged as ``eval/``).

    ``train.epochs`` (if set) fixes the number of passes, else ``train.steps``. T5: prompts are cut
    to ``train.data.seq_len`` and responses to ``target_len`` (default the same). In LoRA mode the
    returned model holds LoRA modules (see :func:`save_run`).
    """
    if not examples:
        raise ConfigError("finetune: no training examples")
    encoder = TextRows(tokenizer)
    lengths = token_lengths(encoder, examples)
    prompt_len, response_len = lengths[:, 0], lengths[:, 1]
    seq_len, eos, seq2seq = train.data.seq_len, tokenizer.eos_token_id, is_seq2seq(model)
    target_len = target_len or seq_len
    if seq2seq:
        features = Seq2SeqFeatures(seq_len, target_len, eos, model.config.decoder_start_token_id)
        loss_fn = loss_fn or seq2seq_lm_loss
        truncated = int(np.sum((prompt_len + 1 > seq_len) | (response_len + 1 > target_len)))
        no_response = 0  # the decoder keeps its own target_len
    else:
        features = CausalFeatures(seq_len, eos, bos_id(tokenizer), train.data.train_on_inputs)
        loss_fn = loss_fn or causal_lm_loss
        truncated = int(np.sum(~features.keeps_whole(prompt_len, response_len)))
        no_response = int(np.sum(~features.keeps_response(prompt_len)))
    if truncated:
        log.warning("%d of %d training examples are longer than train.data.seq_len=%d%s and are cut%s", truncated,
                    len(examples), seq_len, f" / target_len={target_len}" if seq2seq else "",
                    f"; {no_response} of them lose their whole response (raise seq_len or shorten the history)"
                    if no_response else "")
    model, summary = train_rows(model, examples, features, train, loss_fn, encoder=encoder,
                                lengths=lengths.sum(axis=1, dtype=np.int32), pad_id=tokenizer.pad_token_id,
                                target_len=target_len if seq2seq else None, evaluate=evaluate)
    return model, {**summary, "truncated_examples": truncated, "examples_without_response": no_response}


def train_rows(model, examples: Sequence[Any], features, train: TrainConfig, loss_fn, *, encoder: Encoder | None,
               lengths: np.ndarray | None, pad_id: int, target_len: int | None = None,
               evaluate: Callable[[nnx.Module], dict] | None = None) -> tuple[nnx.Module, dict]:
    """The engine on ``examples``, which ``encoder`` turns into token rows record by record as the
    pipeline reads them (None: already rows with ``prompt_ids``/``response_ids``, ...), and the grain
    transform ``features`` into model inputs; ``lengths`` (int32 [N], tokens per example) serves
    ``train.data.group_by_length``. Returns (trained model, fit summary)."""
    steps = train.num_steps(len(examples))
    trainer = Trainer(model, train, loss_fn, total_steps=steps)
    batches = make_batches(examples, features, train.data, trainer.mesh, global_batch=train.batch_size,
                           seed=train.seed, pad_id=pad_id, target_len=target_len, num_epochs=train.epochs,
                           encoder=encoder, lengths=lengths)
    start = time.perf_counter()
    summary = trainer.fit(batches, evaluate=evaluate, steps=steps)
    summary.update(train_seconds=round(time.perf_counter() - start, 2))
    trained = trainer.model()
    trainer.close()
    return trained, summary
