"""SASRec recipe: train on leave-one-out training sequences, early-stop on valid NDCG@10, rank the full catalog.

Training objective (``train.loss``):

* ``softmax`` (default): at every position of a user's training sequence, cross-entropy of the
  next item against **all N items** (logits ``h_t · E_i``). Stronger and simpler than the paper's
  objective, and it optimises exactly what full-catalog evaluation measures.
* ``bce``: the original paper's binary cross-entropy with one uniformly sampled negative per
  position (the sample may rarely equal the positive; the paper resamples items the user has seen).

Evaluation scores every item of the catalog and ranks the target with the canonical tie rule of
:mod:`jaxrec.eval.metrics`. Valid: history = ``seq[:-2]``, target ``seq[-2]``; test: history =
``seq[:-1]``, target ``seq[-1]``; the model sees the last ``model.max_len`` history items.
``eval.exclude_history`` (default **off**, as in the SASRec/TIGER protocols) removes the user's
history items from the ranking (the target is always kept).

Outputs under ``out_dir``: ``config.yaml``, ``params.safetensors`` (best valid NDCG@10),
``item_embeddings.npy`` (float32 [N, d], row = item id, from the best params), ``results.json``,
``logs/metrics.jsonl`` + TensorBoard events.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Annotated, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
import yaml
from flax import nnx
from tqdm import tqdm

from jaxrec.atomic import atomic_file, write_json
from jaxrec.config import to_dict
from jaxrec.data.dataset import Dataset
from jaxrec.config import Range, check_ranges
from jaxrec.data.splits import LeaveOneOut, leave_one_out
from jaxrec.errors import DataError, TrainingDiverged
from jaxrec.eval.metrics import DEFAULT_KS, metrics_from_ranks
from jaxrec.eval.ranking import batched_ranks
from jaxrec.ground.rank import target_ranks
from jaxrec.data.source import DataConfig, SyntheticData, load_dataset
from jaxrec.models.sasrec import SASRec, SASRecConfig, load_params, save_params, to_tokens
from jaxrec.train.chunked_softmax import chunked_softmax_cross_entropy
from jaxrec.train.metrics_log import MetricsLogger

SELECT_METRIC = "NDCG@10"


@dataclasses.dataclass
class ModelConfig:
    max_len: Annotated[int, Range(min=1)] = 50
    hidden_size: Annotated[int, Range(min=1)] = 64
    num_layers: Annotated[int, Range(min=1)] = 2
    num_heads: Annotated[int, Range(min=1)] = 1
    dropout: Annotated[float, Range(min=0, max=1, max_open=True)] = 0.2

    def __post_init__(self):
        check_ranges(self)


@dataclasses.dataclass
class TrainConfig:
    epochs: Annotated[int, Range(min=1)] = 200
    batch_size: Annotated[int, Range(min=1)] = 128
    lr: Annotated[float, Range(min=0, min_open=True)] = 1e-3
    weight_decay: Annotated[float, Range(min=0)] = 0.0
    loss: Literal["softmax", "bce"] = "softmax"
    # softmax over the catalog in chunks of this many items (no [B, T, N] logits: large catalogs); 0: at once
    softmax_chunk: Annotated[int, Range(min=0)] = 0
    seed: int = 0
    eval_every: Annotated[int, Range(min=1)] = 1  # epochs between validation runs
    patience: Annotated[int, Range(min=1)] = 10  # validation runs without a better NDCG@10 before stopping
    progress: bool = True  # tqdm bar on stderr

    def __post_init__(self):
        check_ranges(self)


@dataclasses.dataclass
class EvalConfig:
    ks: list[int] = dataclasses.field(default_factory=lambda: list(DEFAULT_KS))
    exclude_history: bool = False
    batch_size: int = 256


@dataclasses.dataclass
class Config:
    method: str = "sasrec"
    out_dir: str = "runs/sasrec"
    data: DataConfig = dataclasses.field(default_factory=lambda: DataConfig(synthetic=SyntheticData()))
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)

    def __post_init__(self):
        if 10 not in self.eval.ks:
            raise ValueError(f"eval.ks must contain 10 (early stopping uses {SELECT_METRIC})")


# ----------------------------------------------------------------------------- data


def left_pad(sequences: list[np.ndarray], length: int) -> np.ndarray:
    """int32 [U, length]: the last ``length`` items of each sequence, left-padded with -1."""
    out = np.full((len(sequences), length), -1, dtype=np.int32)
    for row, seq in enumerate(sequences):
        tail = seq[-length:] if length else seq[:0]
        if tail.size:
            out[row, length - tail.size:] = tail
    return out


def training_pairs(train: list[np.ndarray], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Next-item pairs per user: inputs = seq[:-1], labels = seq[1:], each [U', max_len] left-padded (-1).

    Only users with at least 2 training items contribute; sequences keep their last ``max_len + 1``
    items. A last all-padding row (index U') is appended to fill incomplete batches (it carries no loss).
    """
    usable = [s[-(max_len + 1):] for s in train if len(s) >= 2] + [np.zeros(0, np.int32)]
    return left_pad([s[:-1] for s in usable], max_len), left_pad([s[1:] for s in usable], max_len)


def length_buckets(max_len: int) -> np.ndarray:
    """Static training lengths: powers of two from 8, capped by (and always including) ``max_len``."""
    return np.array(sorted({min(2 ** i, max_len) for i in range(3, max_len.bit_length() + 1)} | {max_len}))


def epoch_batches(labels: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[tuple[np.ndarray, int]]:
    """One epoch of ``(row indices [batch_size], length T)`` batches, bucketed by sequence length.

    Rows (all but the final padding row of :func:`training_pairs`) are grouped by the smallest bucket
    of :func:`length_buckets` that holds their items, shuffled within buckets, cut into batches (the
    last one of a bucket filled with the padding row) and the batches shuffled. A batch of bucket T
    only needs the last T positions: short sequences do not pay for ``max_len`` (one compilation per bucket).
    """
    max_len = labels.shape[1]
    buckets = length_buckets(max_len)
    lengths = (labels[:-1] >= 0).sum(axis=1)
    which = np.searchsorted(buckets, lengths)
    pad_row = labels.shape[0] - 1
    batches = []
    for b, length in enumerate(buckets):
        rows = rng.permutation(np.flatnonzero(which == b))
        rows = np.concatenate([rows, np.full(-rows.size % batch_size, pad_row)])
        batches += [(chunk, int(length)) for chunk in rows.reshape(-1, batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def eval_arrays(split: LeaveOneOut, which: str, max_len: int, exclude_history: bool) -> dict[str, np.ndarray]:
    """Batched inputs for :func:`rank_batch`: ``inputs`` [U, max_len], ``targets`` [U], optional ``exclude``."""
    histories = split.valid_history if which == "valid" else split.test_history
    targets = split.valid_target if which == "valid" else split.test_target
    arrays = {"inputs": left_pad(histories, max_len), "targets": np.asarray(targets, np.int32)}
    if exclude_history:
        arrays["exclude"] = left_pad(histories, max(1, max((len(h) for h in histories), default=1)))
    return arrays


# ----------------------------------------------------------------------------- steps


def make_steps(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, loss_kind: str, num_items: int,
               softmax_chunk: int = 0):
    """Jitted ``train_step(params, opt_state, inputs, labels, key)`` and ``rank_batch(params, ...)``."""

    def loss_fn(params, inputs, labels, key):
        model = nnx.merge(graphdef, params)
        key_dropout, key_negatives = jax.random.split(key)
        hidden = model(to_tokens(inputs), rngs=nnx.Rngs(dropout=key_dropout))  # [B, T, d]
        mask = labels >= 0
        if loss_kind == "softmax" and softmax_chunk:
            d = hidden.shape[-1]
            losses = chunked_softmax_cross_entropy(hidden.reshape(-1, d), model.item_embeddings(),
                                                   jnp.maximum(labels, 0).reshape(-1), softmax_chunk)
            losses = losses.reshape(labels.shape)
        elif loss_kind == "softmax":
            logits = model.score_all(hidden)  # [B, T, N]
            losses = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(labels, 0))
        else:
            table = model.item_embeddings()
            negatives = jax.random.randint(key_negatives, labels.shape, 0, num_items)
            pos = jnp.sum(hidden * table[jnp.maximum(labels, 0)], axis=-1)
            neg = jnp.sum(hidden * table[negatives], axis=-1)
            losses = -jax.nn.log_sigmoid(pos) - jax.nn.log_sigmoid(-neg)
        return jnp.sum(losses * mask) / jnp.maximum(jnp.sum(mask), 1)

    @jax.jit
    def train_step(params, opt_state, inputs, labels, key):
        loss, grads = jax.value_and_grad(loss_fn)(params, inputs, labels, key)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    @jax.jit
    def user_states(params, inputs):
        model = nnx.merge(graphdef, params)
        return model(to_tokens(inputs))[:, -1], model.item_embeddings()  # [B, d], [N, d]

    def rank_batch(params, inputs, targets, exclude=None):
        """Full-catalog ranks by the tiled kernel (no [B, N] score matrix; the canonical tie rule)."""
        queries, items = user_states(params, inputs)
        return target_ranks(queries, items, targets, "dot", exclude=exclude)

    return train_step, rank_batch


def split_metrics(rank_batch, params, arrays: dict[str, np.ndarray], cfg: EvalConfig) -> dict:
    """Full-catalog metrics for the users in ``arrays`` (from :func:`eval_arrays`)."""
    ranks = batched_ranks(lambda **b: rank_batch(params, **b), arrays, cfg.batch_size)
    return metrics_from_ranks(ranks, cfg.ks)


def evaluate_model(model: SASRec, split: LeaveOneOut, cfg: EvalConfig, which: tuple[str, ...] = ("valid", "test")) -> dict:
    """``{split name: full-catalog metrics}`` of ``model`` for the valid and/or test targets."""
    graphdef, params = nnx.split(model)
    _, rank_batch = make_steps(graphdef, optax.identity(), "softmax", model.config.num_items)
    return {name: split_metrics(rank_batch, params, eval_arrays(split, name, model.config.max_len, cfg.exclude_history), cfg)
            for name in which}


# ----------------------------------------------------------------------------- recipe


def build_model(config: Config, num_items: int, seed: int = 0) -> SASRec:
    m = config.model
    arch = SASRecConfig(num_items=num_items, max_len=m.max_len, hidden_size=m.hidden_size,
                        num_layers=m.num_layers, num_heads=m.num_heads, dropout=m.dropout)
    return SASRec(arch, nnx.Rngs(params=seed))


def train(config: Config) -> dict:
    """Train with early stopping on valid NDCG@10; write the best params, embeddings and test metrics."""
    ds = load_dataset(config.data)
    return fit(config, ds, leave_one_out(ds))


def fit(config: Config, ds: Dataset, split: LeaveOneOut) -> dict:
    """:func:`train` on an already loaded dataset and split (the demo and benchmark reuse them)."""
    tc, out_dir = config.train, Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_file(out_dir / "config.yaml") as f:
        yaml.safe_dump(to_dict(config), f, sort_keys=False)

    model = build_model(config, ds.num_items, tc.seed)
    graphdef, params = nnx.split(model)
    tx = optax.adamw(tc.lr, weight_decay=tc.weight_decay)
    opt_state = tx.init(params)
    train_step, rank_batch = make_steps(graphdef, tx, tc.loss, ds.num_items, tc.softmax_chunk)
    inputs, labels = training_pairs(split.train, config.model.max_len)
    if inputs.shape[0] == 1:
        raise DataError(f"{config.data.describe()}: no user has 2 or more training items; SASRec has nothing to learn")
    valid = eval_arrays(split, "valid", config.model.max_len, config.eval.exclude_history)
    steps_per_epoch = len(epoch_batches(labels, tc.batch_size, np.random.default_rng(0)))

    rng = np.random.default_rng(tc.seed)
    key = jax.random.key(tc.seed)
    best = {"epoch": 0, SELECT_METRIC: -1.0}
    curve, waited, step, start = [], 0, 0, time.time()
    bar = tqdm(total=tc.epochs * steps_per_epoch, desc="sasrec", disable=not tc.progress, leave=False)
    with MetricsLogger(out_dir / "logs") as log:
        for epoch in range(1, tc.epochs + 1):
            losses = []
            for idx, length in epoch_batches(labels, tc.batch_size, rng):
                params, opt_state, loss = train_step(params, opt_state, inputs[idx, -length:], labels[idx, -length:],
                                                     jax.random.fold_in(key, step))
                losses.append(loss)
                step += 1
                bar.update(1)
            epoch_loss = float(np.mean(jax.device_get(losses)))
            log.log(step, {"loss": epoch_loss, "epoch": epoch}, prefix="train/")
            if not np.isfinite(epoch_loss):
                kept = (f"the best model so far (epoch {best['epoch']}) is kept in {out_dir / 'params.safetensors'}"
                        if best["epoch"] else "no model was saved")
                raise TrainingDiverged(f"SASRec diverged: the training loss of epoch {epoch} is {epoch_loss}; {kept}. "
                                       f"Lower train.lr")
            if epoch % tc.eval_every and epoch != tc.epochs:
                continue
            metrics = split_metrics(rank_batch, params, valid, config.eval)
            log.log(step, {k: v for k, v in metrics.items() if k != "users"}, prefix="valid/")
            curve.append({"epoch": epoch, "loss": round(epoch_loss, 5), SELECT_METRIC: round(metrics[SELECT_METRIC], 5)})
            bar.set_postfix(loss=f"{epoch_loss:.3f}", ndcg10=f"{metrics[SELECT_METRIC]:.4f}")
            if metrics[SELECT_METRIC] > best[SELECT_METRIC]:
                best = {"epoch": epoch, **metrics}
                nnx.update(model, params)
                save_params(model, out_dir / "params.safetensors")
                waited = 0
            else:
                waited += 1
                if waited >= tc.patience:
                    break
    bar.close()
    train_seconds = time.time() - start

    load_params(model, out_dir / "params.safetensors")
    with atomic_file(out_dir / "item_embeddings.npy", "wb") as f:
        np.save(f, np.asarray(model.item_embeddings(), dtype=np.float32))
    test_arrays = eval_arrays(split, "test", config.model.max_len, config.eval.exclude_history)
    result = {
        "method": "sasrec",
        "data": config.data.describe(),
        "best_epoch": best["epoch"],
        "epochs_run": epoch,
        "train_seconds": round(train_seconds, 2),
        "valid": {k: v for k, v in best.items() if k != "epoch"},
        "test": split_metrics(rank_batch, nnx.split(model)[1], test_arrays, config.eval),
        "curve": curve,
        "out_dir": str(out_dir),
    }
    write_json(out_dir / "results.json", result)
    return result


def evaluate(config: Config) -> dict:
    """Load ``out_dir/params.safetensors`` and report full-catalog valid and test metrics."""
    ds = load_dataset(config.data)
    split = leave_one_out(ds)
    model = build_model(config, ds.num_items)
    load_params(model, Path(config.out_dir) / "params.safetensors")
    return {"method": "sasrec", "data": config.data.describe(), **evaluate_model(model, split, config.eval)}
