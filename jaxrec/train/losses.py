"""Training losses. A loss function has the signature ``loss_fn(model, batch) -> (loss, weight, metrics)``:

* ``loss``: scalar, the mean loss of this (micro-)batch;
* ``weight``: scalar, how many units (tokens) that mean is over — gradient accumulation combines
  micro-batches as ``sum(weight_i * loss_i) / sum(weight_i)``, which equals the full-batch mean;
* ``metrics``: dict of scalars to log (averaged the same way).

Batches (see :mod:`jaxrec.data.pipeline`) hold ``targets`` [B,T] (the next token at each position)
and ``loss_mask`` [B,T] (1 where the target is scored: response tokens, or every real token with
BIGRec's train-on-inputs option, 0 on padding). Extra losses (contrastive, BPR, ...) are added with
:func:`with_extra_losses`.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp

Batch = Mapping[str, jax.Array]
LossFn = Callable[..., tuple[jax.Array, jax.Array, dict]]


def token_cross_entropy(logits: jax.Array, targets: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Masked mean next-token cross entropy.

    logits [B,T,V] (any float dtype; computed in fp32), targets int [B,T], mask [B,T] → (mean, count).
    """
    logits = logits.astype(jnp.float32)
    logz = jax.nn.logsumexp(logits, axis=-1)
    target_logit = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    mask = mask.astype(jnp.float32)
    count = mask.sum()
    loss = ((logz - target_logit) * mask).sum() / jnp.maximum(count, 1.0)
    return loss, count


def causal_lm_loss(model, batch: Batch) -> tuple[jax.Array, jax.Array, dict]:
    """Decoder-only LM loss; packed rows pass ``segment_ids`` and ``positions`` to the model."""
    kwargs = {"attention_mask": batch["attention_mask"]}
    if "segment_ids" in batch:
        kwargs["segment_ids"] = batch["segment_ids"]
        kwargs["positions"] = batch["positions"]
    logits = model(batch["input_ids"], **kwargs)
    loss, count = token_cross_entropy(logits, batch["targets"], batch["loss_mask"])
    return loss, count, {"lm_loss": loss}


def seq2seq_lm_loss(model, batch: Batch) -> tuple[jax.Array, jax.Array, dict]:
    """Encoder-decoder (T5) LM loss on the decoder targets."""
    logits = model(batch["input_ids"], attention_mask=batch["attention_mask"],
                   decoder_input_ids=batch["decoder_input_ids"])
    loss, count = token_cross_entropy(logits, batch["targets"], batch["loss_mask"])
    return loss, count, {"lm_loss": loss}


def with_extra_losses(base: LossFn, extras: Sequence[tuple[float, Callable]]) -> LossFn:
    """``base`` plus weighted extra terms: each ``fn(model, batch) -> (loss, metrics)``."""

    def loss_fn(model, batch):
        loss, weight, metrics = base(model, batch)
        metrics = dict(metrics)
        for coef, fn in extras:
            extra, extra_metrics = fn(model, batch)
            loss = loss + coef * extra
            metrics.update(extra_metrics)
        return loss, weight, metrics

    return loss_fn
