"""The config of a sequential-recommender run (SASRec): ``data``, ``model``, ``train``, ``eval``.

``train`` keeps SASRec's own keys, counted in epochs (``epochs``, ``lr``, ``eval_every``, ``patience``,
...), and :func:`engine_config` maps them onto the shared engine's :class:`jaxrec.train.config.TrainConfig`
(constant learning rate, no clipping, full training, validation every ``eval_every`` epochs, early
stopping and best checkpoints on valid NDCG@10). ``checkpoint_dir`` turns on orbax checkpoints: the run
resumes exactly where it stopped and a SIGTERM saves before stopping.

Losses (``train.loss``, :mod:`jaxrec.train.next_item_loss`): ``softmax`` (full catalog; ``softmax_chunk``
> 0: chunked, no [B, T, N] logits), ``bce`` (the paper's one sampled negative per position) and
``sampled_softmax`` (``negatives`` items per training row drawn from the ``proposal``, ``uniform`` or
``popularity`` = training-target counts + 1, shared by the batch, with the logQ correction).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Literal

from jaxrec.config import Range, check_ranges
from jaxrec.data.source import DataConfig, SyntheticData
from jaxrec.eval.metrics import DEFAULT_KS
from jaxrec.models.lora import LoraConfig
from jaxrec.parallel.mesh import MeshConfig
from jaxrec.train import config as engine

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
    loss: Literal["softmax", "bce", "sampled_softmax"] = "softmax"
    # softmax over the catalog in chunks of this many items (no [B, T, N] logits: large catalogs); 0: at once
    softmax_chunk: Annotated[int, Range(min=0)] = 0
    negatives: Annotated[int, Range(min=1)] = 16  # sampled_softmax: items drawn per training row, shared by the batch
    proposal: Literal["uniform", "popularity"] = "uniform"  # sampled_softmax: the distribution they are drawn from
    seed: int = 0
    eval_every: Annotated[int, Range(min=1)] = 1  # epochs between validation runs
    patience: Annotated[int, Range(min=1)] = 10  # validation runs without a better NDCG@10 before stopping
    progress: bool = True  # tqdm bar on stderr
    checkpoint_dir: str | None = None  # orbax checkpoints (exact resume, SIGTERM save); None: none
    checkpoint_every: Annotated[int, Range(min=1)] = 1  # epochs between resumable checkpoints
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)

    def __post_init__(self):
        check_ranges(self)


@dataclasses.dataclass
class EvalConfig:
    ks: list[int] = dataclasses.field(default_factory=lambda: list(DEFAULT_KS))
    exclude_history: bool = False  # rank without the user's history items (S3-Rec's protocol); labelled in results
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


def engine_config(train: TrainConfig, steps_per_epoch: int, out_dir: str | Path) -> engine.TrainConfig:
    """The engine's config for ``train``: epochs become steps of ``steps_per_epoch`` length-bucketed batches."""
    checkpoint = engine.CheckpointConfig(dir=train.checkpoint_dir, every=train.checkpoint_every * steps_per_epoch,
                                         keep=1, best_metric=SELECT_METRIC)
    optim = engine.OptimConfig(learning_rate=train.lr, decay="constant", weight_decay=train.weight_decay,
                               clip_norm=None)
    return engine.TrainConfig(batch_size=train.batch_size, steps=train.epochs * steps_per_epoch, seed=train.seed,
                              eval_every=train.eval_every * steps_per_epoch, patience=train.patience, log_every=1,
                              log_dir=str(Path(out_dir) / "logs"), progress=train.progress, mesh=train.mesh,
                              lora=LoraConfig(mode="full"), optim=optim, checkpoint=checkpoint)
