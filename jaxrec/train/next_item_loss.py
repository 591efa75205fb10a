"""The next-item loss of sequential recommenders (SASRec) as a :data:`~jaxrec.train.losses.LossFn`.

Batches (:mod:`jaxrec.seqrec.batches`): ``input_ids`` int [B, T] item ids (-1: padding) and ``targets``
int [B, T] (the next item at each position, -1: no loss). The model maps tokens (``item id + 1``, 0 =
padding) to hidden states [B, T, d], exposes ``item_embeddings()`` [N, d] and carries a dropout stream
``train_rngs.dropout`` (:class:`jaxrec.models.sasrec.SASRec`): one key per step, split into the
dropout key and the ``bce`` negatives' key. Kinds:

* ``softmax``: cross-entropy of the next item against all N items; ``chunk`` > 0 goes through
  :func:`~jaxrec.train.chunked_softmax.chunked_softmax_cross_entropy` (no [B, T, N] logits);
* ``bce``: the paper's binary cross-entropy with one uniformly drawn negative per position;
* ``sampled_softmax``: :func:`~jaxrec.train.sampled_softmax.sampled_softmax_cross_entropy` against the
  batch's ``negatives`` [B, n] (all B * n shared by every position) with ``negative_log_q`` [B, n]
  and ``target_log_q`` [B, T] (log-probabilities of the proposal that drew them).

The loss is the mean over scored positions with weight 1: each batch counts once, as in the paper's
code (and the results of the earlier SASRec loop are reproduced bit for bit).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxrec.models.sasrec import to_tokens
from jaxrec.train.chunked_softmax import chunked_softmax_cross_entropy
from jaxrec.train.losses import Batch, LossFn
from jaxrec.train.sampled_softmax import sampled_softmax_cross_entropy

KINDS = ("softmax", "bce", "sampled_softmax")


def next_item_loss(kind: str, num_items: int, chunk: int = 0) -> LossFn:
    """``loss_fn(model, batch) -> (mean loss, 1, {})`` for ``kind`` in :data:`KINDS`."""
    if kind not in KINDS:
        raise ValueError(f"unknown next-item loss {kind!r}; expected one of {', '.join(KINDS)}")

    def loss_fn(model, batch: Batch):
        inputs, labels = batch["input_ids"], batch["targets"]
        key_dropout, key_negatives = jax.random.split(model.train_rngs.dropout())
        hidden = model(to_tokens(inputs), rngs=nnx.Rngs(dropout=key_dropout))  # [B, T, d]
        mask = labels >= 0
        safe = jnp.maximum(labels, 0)
        table = model.item_embeddings()  # [N, d]
        if kind == "softmax" and chunk:
            flat = chunked_softmax_cross_entropy(hidden.reshape(-1, hidden.shape[-1]), table, safe.reshape(-1), chunk)
            losses = flat.reshape(labels.shape)
        elif kind == "softmax":
            losses = optax.softmax_cross_entropy_with_integer_labels(model.score_all(hidden), safe)
        elif kind == "bce":
            negatives = jax.random.randint(key_negatives, labels.shape, 0, num_items)
            pos = jnp.sum(hidden * table[safe], axis=-1)
            neg = jnp.sum(hidden * table[negatives], axis=-1)
            losses = -jax.nn.log_sigmoid(pos) - jax.nn.log_sigmoid(-neg)
        else:
            flat = sampled_softmax_cross_entropy(
                hidden.reshape(-1, hidden.shape[-1]), table, safe.reshape(-1), batch["negatives"].reshape(-1),
                batch["target_log_q"].reshape(-1), batch["negative_log_q"].reshape(-1))
            losses = flat.reshape(labels.shape)
        loss = jnp.sum(losses * mask) / jnp.maximum(jnp.sum(mask), 1)
        return loss, jnp.ones((), jnp.float32), {}

    return loss_fn
