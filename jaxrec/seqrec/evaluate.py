"""Full-catalog evaluation of a sequence model: the last hidden state ranks every item through the tiled
kernel :func:`jaxrec.ground.rank.target_ranks` (no [U, N] score matrix; ties go to the lower item id)."""

from __future__ import annotations

import functools

import jax
import numpy as np
from flax import nnx

from jaxrec.data.splits import LeaveOneOut
from jaxrec.eval import evaluators
from jaxrec.eval.metrics import metrics_from_ranks
from jaxrec.eval.ranking import batched_ranks
from jaxrec.ground.rank import target_ranks
from jaxrec.models.sasrec import SASRec, to_tokens
from jaxrec.seqrec.batches import eval_arrays
from jaxrec.seqrec.config import EvalConfig


@functools.partial(jax.jit, static_argnums=0)
def _user_states(graphdef: nnx.GraphDef, state: nnx.State, inputs: jax.Array) -> tuple[jax.Array, jax.Array]:
    model = nnx.merge(graphdef, state)
    return model(to_tokens(inputs))[:, -1], model.item_embeddings()  # [B, d], [N, d]


def _ranks(graphdef: nnx.GraphDef, state: nnx.State, inputs, targets, exclude=None) -> jax.Array:
    queries, items = _user_states(graphdef, state, inputs)
    return target_ranks(queries, items, targets, "dot", exclude=exclude)


def rank_batch(model: SASRec, inputs, targets, exclude=None) -> jax.Array:
    """1-based ranks [B] of ``targets`` [B] after histories ``inputs`` [B, max_len] (``exclude`` [B, E]: not ranked)."""
    return _ranks(*nnx.split(model), inputs, targets, exclude)


def split_metrics(model: SASRec, arrays: dict[str, np.ndarray], cfg: EvalConfig) -> dict:
    """Full-catalog metrics for the users in ``arrays`` (:func:`~jaxrec.seqrec.batches.eval_arrays`)."""
    graphdef, state = nnx.split(model)  # once, not per batch
    ranks = batched_ranks(lambda **b: _ranks(graphdef, state, **b), arrays, cfg.batch_size)
    return metrics_from_ranks(ranks, cfg.ks)


def evaluate_model(model: SASRec, split: LeaveOneOut, cfg: EvalConfig, which: tuple[str, ...] = ("valid", "test")) -> dict:
    """``{"protocol": ..., split name: full-catalog metrics}`` of ``model`` for the valid and/or test targets."""
    protocol = evaluators.protocol("scores", model.config.num_items, exclude_history=cfg.exclude_history)
    return {"protocol": protocol,
            **{name: split_metrics(model, eval_arrays(split, name, model.config.max_len, cfg.exclude_history), cfg)
               for name in which}}
