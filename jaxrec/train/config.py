"""Config sections of the training engine, used as fields of every method's config schema.

All are plain dataclasses read strictly by :func:`jaxrec.config.from_dict` (``--set train.lora.rank=16``).
:class:`TrainConfig` holds the sections of the code below it that reads them: ``mesh``
(:class:`jaxrec.parallel.mesh.MeshConfig`), ``data`` (:class:`jaxrec.data.pipeline.TokenDataConfig`) and
``lora`` (:class:`jaxrec.models.lora.LoraConfig`).
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Literal

from jaxrec.config import Range, check_ranges
from jaxrec.data.pipeline import TokenDataConfig
from jaxrec.errors import ConfigError
from jaxrec.models.lora import LoraConfig
from jaxrec.parallel.mesh import MeshConfig


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warmup, then cosine / linear / constant decay, and global-norm clipping."""

    learning_rate: Annotated[float, Range(min=0, min_open=True)] = 3e-4
    warmup_steps: Annotated[int, Range(min=0)] = 0
    decay: Literal["cosine", "linear", "constant"] = "cosine"
    end_lr_ratio: Annotated[float, Range(min=0, max=1)] = 0.0  # final learning rate = learning_rate * end_lr_ratio
    weight_decay: Annotated[float, Range(min=0)] = 0.0
    b1: Annotated[float, Range(min=0, max=1, max_open=True)] = 0.9
    b2: Annotated[float, Range(min=0, max=1, max_open=True)] = 0.999
    eps: Annotated[float, Range(min=0, min_open=True)] = 1e-8
    clip_norm: Annotated[float | None, Range(min=0, min_open=True)] = 1.0

    def __post_init__(self):
        check_ranges(self)


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    """Orbax checkpointing: every ``every`` steps, keeping ``keep`` (best by ``best_metric`` if set)."""

    dir: str | None = None
    every: Annotated[int, Range(min=0)] = 0  # 0: only at the end (and on SIGTERM)
    keep: Annotated[int, Range(min=1)] = 2
    best_metric: str | None = None  # a validation metric name; keep the best ``keep`` by it
    best_mode: Literal["max", "min"] = "max"
    async_save: bool = True
    save_frozen: bool = False  # also save the frozen base weights (default: trainable state only)
    allow_config_change: bool = False  # resume although batch/schedule/optimizer/data settings changed (logged)

    def __post_init__(self):
        check_ranges(self)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The training loop."""

    batch_size: Annotated[int, Range(min=1)] = 8  # global, across all processes
    grad_accum: Annotated[int, Range(min=1)] = 1  # micro-batches per optimizer step (batch_size is split into these)
    steps: Annotated[int, Range(min=1)] = 1000
    epochs: Annotated[int | None, Range(min=1)] = None  # if set, the number of passes over the data (overrides steps; see num_steps)
    seed: int = 0
    compute_dtype: Literal["float32", "bfloat16"] = "float32"  # master weights and optimizer stay fp32
    # activation recompute per layer in the backward pass (jaxrec.models.layer_stack): none | full | dots |
    # dots_with_no_batch_dims (named jax.checkpoint_policies)
    remat: Literal["none", "full", "dots", "dots_with_no_batch_dims"] = "none"
    scan_layers: bool = False  # train with layer weights stacked [L, ...] and one lax.scan over the layers
    dropout: Annotated[float, Range(min=0, max=1, max_open=True)] = 0.0  # dropout on every layer's attention/MLP residual branches (training only)
    eval_every: Annotated[int, Range(min=0)] = 0  # 0: no periodic validation
    patience: Annotated[int | None, Range(min=1)] = None  # early stopping after this many validations without improvement
    log_every: Annotated[int, Range(min=1)] = 10
    # a step with a NaN/Inf loss or gradient norm: "stop" the run (error naming the step; the last
    # checkpoint is kept, nothing later is saved) or "skip_batch" (no update; stop after nan_skip_limit)
    nan_policy: Literal["stop", "skip_batch"] = "stop"
    nan_skip_limit: Annotated[int, Range(min=0)] = 10
    log_dir: str | None = None
    progress: bool = True
    peak_flops: Annotated[float | None, Range(min=0, min_open=True)] = None  # for MFU; None: datasheet figure, or a measured matmul on CPU
    mesh: MeshConfig = MeshConfig()
    lora: LoraConfig = LoraConfig()
    optim: OptimConfig = OptimConfig()
    data: TokenDataConfig = TokenDataConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()

    def __post_init__(self):
        check_ranges(self)

    def num_steps(self, num_examples: int | None = None) -> int:
        """Optimizer steps of the run: ``steps``, or with ``epochs`` the whole global batches in
        ``epochs`` passes over ``num_examples`` (the pipeline repeats the shuffled data ``epochs``
        times and cuts it into batches, so that is ``epochs * num_examples // batch_size``). With
        packing a batch holds more examples, so this is an upper bound and the run ends when the data
        does."""
        if self.epochs is None:
            return self.steps
        if num_examples is None:
            raise ConfigError("train.epochs is set: the number of steps needs the number of training examples")
        steps = self.epochs * num_examples // self.batch_size
        if steps < 1:
            raise ConfigError(f"train: {num_examples} examples x {self.epochs} epochs give no batch of "
                              f"batch_size={self.batch_size}")
        return steps
