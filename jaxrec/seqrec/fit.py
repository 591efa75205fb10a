"""Train a SASRec on a leave-one-out split through the shared engine and write its run directory.

:func:`fit` builds the model, the length-bucketed epoch batches (:mod:`jaxrec.seqrec.batches`) and the
next-item loss (:mod:`jaxrec.train.next_item_loss`), and runs :class:`jaxrec.train.trainer.Trainer`:
mesh and sharded state, the metrics log (``logs/metrics.jsonl`` + TensorBoard, every step), the progress
bar, validation every ``train.eval_every`` epochs with early stopping on valid NDCG@10 and, with
``train.checkpoint_dir``, orbax checkpoints (exact resume, SIGTERM save, the best validation kept).

Run directory ``out_dir``: ``config.yaml``, ``params.safetensors`` (the best validation's parameters),
``item_embeddings.npy`` (float32 [N, d], row = item id), ``results.json`` (protocol, best epoch, valid
and test metrics, the curve of epoch-mean training loss and valid NDCG@10), ``logs/``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import numpy as np
import yaml
from flax import nnx

from jaxrec.atomic import atomic_file, write_json
from jaxrec.config import to_dict
from jaxrec.data.dataset import Dataset
from jaxrec.data.pipeline import DeviceIterator
from jaxrec.data.splits import LeaveOneOut
from jaxrec.errors import DataError
from jaxrec.eval import evaluators
from jaxrec.models.sasrec import SASRec, SASRecConfig, save_params
from jaxrec.seqrec.batches import (
    EpochBatches,
    eval_arrays,
    proposal_log_q,
    training_pairs,
)
from jaxrec.seqrec.config import SELECT_METRIC, Config, ModelConfig, engine_config
from jaxrec.seqrec.evaluate import split_metrics
from jaxrec.train.next_item_loss import next_item_loss
from jaxrec.train.trainer import Trainer


def build_model(model: ModelConfig, num_items: int, seed: int = 0) -> SASRec:
    """A freshly initialised SASRec (parameters and dropout stream seeded by ``seed``)."""
    arch = SASRecConfig(num_items=num_items, max_len=model.max_len, hidden_size=model.hidden_size,
                        num_layers=model.num_layers, num_heads=model.num_heads, dropout=model.dropout)
    return SASRec(arch, nnx.Rngs(params=seed), dropout_seed=seed)


def fit(config: Config, ds: Dataset, split: LeaveOneOut) -> dict:
    """Train with early stopping on valid NDCG@10; write the run directory (module docstring); return results."""
    tc, out_dir = config.train, Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_file(out_dir / "config.yaml") as f:
        yaml.safe_dump(to_dict(config), f, sort_keys=False)
    inputs, labels = training_pairs(split.train, config.model.max_len)
    if inputs.shape[0] == 1:
        raise DataError(f"{config.data.describe()}: no user has 2 or more training items; SASRec has nothing to learn")
    log_q = proposal_log_q(labels, ds.num_items, tc.proposal) if tc.loss == "sampled_softmax" else None
    source = EpochBatches(inputs, labels, tc.batch_size, tc.epochs, tc.seed, log_q, tc.negatives)
    spe = source.steps_per_epoch
    engine = engine_config(tc, spe, out_dir)
    trainer = Trainer(build_model(config.model, ds.num_items, tc.seed), engine,
                      next_item_loss(tc.loss, ds.num_items, tc.softmax_chunk), total_steps=engine.steps)
    resumed = trainer.checkpointer is not None and trainer.checkpointer.latest_step() is not None
    log = Path(engine.log_dir) / "metrics.jsonl"
    if not resumed:
        log.unlink(missing_ok=True)  # the curve is read from this run's log
    valid = eval_arrays(split, "valid", config.model.max_len, config.eval.exclude_history)
    best: dict = {}

    def evaluate(model: SASRec) -> dict:
        metrics = split_metrics(model, valid, config.eval)
        if trainer.checkpointer is None and metrics[SELECT_METRIC] > best.get(SELECT_METRIC, -1.0):
            best.update(metrics, params=jax.device_get(nnx.state(model, nnx.Param)))  # else: the best checkpoint
        return metrics

    start = time.time()
    try:
        summary = trainer.fit(DeviceIterator(source, trainer.mesh, prefetch=2), evaluate, eval_last=True)
        model = trainer.best_model()
    finally:
        trainer.close()
    train_seconds = time.time() - start
    if model is None and not best:  # a SIGTERM before the first validation: nothing to keep yet (resumable)
        return {"method": "sasrec", "data": config.data.describe(), "step": summary["step"],
                "stopped": summary["stopped"], "out_dir": str(out_dir)}
    if model is None:
        model = trainer.model()
        nnx.update(model, best["params"])
    save_params(model, out_dir / "params.safetensors")
    with atomic_file(out_dir / "item_embeddings.npy", "wb") as f:
        np.save(f, np.asarray(model.item_embeddings(), dtype=np.float32))
    curve, best_row = read_curve(log, spe)
    test = eval_arrays(split, "test", config.model.max_len, config.eval.exclude_history)
    result = {
        "method": "sasrec",
        "data": config.data.describe(),
        "protocol": evaluators.protocol("scores", ds.num_items, exclude_history=config.eval.exclude_history),
        "best_epoch": best_row["epoch"],
        "epochs_run": -(-summary["step"] // spe),
        "step": summary["step"],
        "stopped": summary["stopped"],
        "train_seconds": round(train_seconds, 2),
        "valid": {k: v for k, v in best_row.items() if k != "epoch"},
        "test": split_metrics(model, test, config.eval),
        "curve": curve,
        "out_dir": str(out_dir),
    }
    write_json(out_dir / "results.json", result)
    return result


def read_curve(log: Path, steps_per_epoch: int) -> tuple[list[dict], dict]:
    """From the run's ``metrics.jsonl`` (a resumed run's repeated steps: the last row counts): the curve
    ``[{epoch, loss (epoch mean), NDCG@10}]`` at each validation, and the best validation's metrics + epoch."""
    rows: dict[tuple[str, int], dict] = {}
    for line in log.read_text().splitlines():
        row = json.loads(line)
        kind = "eval" if any(k.startswith("eval/") for k in row) else "train"
        rows[kind, row["step"]] = row
    losses = {step: row["train/loss"] for (kind, step), row in rows.items() if kind == "train"}
    curve, best = [], {"epoch": 0, SELECT_METRIC: -1.0}
    for step in sorted(step for kind, step in rows if kind == "eval"):
        metrics = {k[len("eval/"):]: v for k, v in rows["eval", step].items() if k.startswith("eval/")}
        metrics["users"] = int(metrics["users"])
        epoch = -(-step // steps_per_epoch)
        first = (epoch - 1) * steps_per_epoch
        loss = float(np.mean(np.asarray([losses[s] for s in range(first + 1, step + 1)], np.float32)))
        curve.append({"epoch": epoch, "loss": round(loss, 5), SELECT_METRIC: round(metrics[SELECT_METRIC], 5)})
        if metrics[SELECT_METRIC] > best[SELECT_METRIC]:
            best = {"epoch": epoch, **metrics}
    return curve, best
