"""The training loop shared by every method.

``Trainer(model, config, loss_fn)`` validates everything that can be wrong *before* compiling (mesh
vs devices, batch vs data axes, LoRA targets, checkpoint compatibility), wraps the model with LoRA,
shards parameters/optimizer state by their logical axes, and ``fit(batches, evaluate)`` runs:
jitted step → every ``log_every`` steps loss / tokens/s / MFU to the progress bar, JSONL and
TensorBoard → every ``eval_every`` steps ``evaluate(model) -> {metric: value}``, best-N checkpoints
and early stopping → periodic resumable checkpoints. SIGTERM (TPU preemption) makes the loop save
and stop: at the next step with one process, at JAX's preemption sync point (the same step on every
host) with several. A NaN/Inf loss or gradient norm (see :mod:`jaxrec.train.train_step`) ends the run
with :class:`TrainingDiverged` naming the step (``train.nan_policy: stop``), and nothing from that step
on is saved, so the last good checkpoint stays; ``skip_batch`` drops such steps up to a limit.
A run whose checkpoint directory holds a checkpoint resumes from it
exactly (same parameters, optimizer, RNG and data position).

Layer execution (``train.remat``, ``train.scan_layers``, ``train.dropout``; see
:mod:`jaxrec.models.layer_stack`) is applied to a clone of the model, after LoRA: the caller's model
keeps its layout and no dropout. With ``scan_layers`` the train state (and its checkpoints) hold
stacked [L, ...] layer weights; :meth:`Trainer.model` returns the usual layer-list layout. LoRA works
under scan when it wraps the same projections in every layer (else one ConfigError).
``train.epochs``: pass ``num_examples`` and the run is ``epochs * num_examples // batch_size`` steps.
"""

from __future__ import annotations

import signal
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

from jaxrec.config import to_dict
from jaxrec.data.pipeline import DeviceIterator, batch_spec
from jaxrec.errors import ConfigError, TrainingDiverged
from jaxrec.models.layer_stack import set_dropout, set_remat, stack_layers, stacked_filter, unstack_layers
from jaxrec.models.lora import apply_lora, check_trainable, row_masks, trainable_filter
from jaxrec.parallel.mesh import batch_divisor, check_batch_size, make_mesh
from jaxrec.parallel.rules import place, replicated, state_shardings
from jaxrec.train import mfu
from jaxrec.train.checkpoint import Checkpointer, abstract_like, fingerprint
from jaxrec.train.config import TrainConfig
from jaxrec.train.losses import LossFn, causal_lm_loss
from jaxrec.train.metrics_log import MetricsLogger
from jaxrec.train.optimizer import make_optimizer
from jaxrec.train.train_step import (TrainState, batch_shardings, cast_floats, compile_cached, jit_train_step,
                                     make_step_fn, new_guard, split_model, train_state_shardings)

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class Trainer:
    """Owns the sharded train state of ``model`` (which it wraps with LoRA in place)."""

    def __init__(self, model: nnx.Module, config: TrainConfig, loss_fn: LossFn = causal_lm_loss, *,
                 mesh=None, total_steps: int | None = None, num_examples: int | None = None):
        """``total_steps``: the schedule's length (default ``config.num_steps(num_examples)``: ``steps``,
        or with ``epochs`` the batches in that many passes over ``num_examples`` training examples)."""
        self.config = config
        self.mesh = make_mesh(config.mesh) if mesh is None else mesh
        check_batch_size(config.batch_size, self.mesh)
        if config.batch_size % (batch_divisor(self.mesh) * config.grad_accum):
            raise ConfigError(
                f"train.batch_size={config.batch_size} must split into grad_accum={config.grad_accum} micro-batches "
                f"that each divide across the {batch_divisor(self.mesh)} data shards")
        self.total_steps = total_steps or config.num_steps(num_examples)
        self.compute_dtype = DTYPES[config.compute_dtype]
        self.lora_paths, graphdef, params, rngs, frozen = split_for_training(model, config)
        model_config = getattr(model, "config", None)
        self.graphdef = graphdef
        self.n_trained = sum(x.size for x in jax.tree.leaves(params))
        self.n_matmul = mfu.matmul_params(nnx.merge_state(params, frozen))
        # encoder-decoder: the encoder's share, which runs on the (longer) encoder inputs only
        self._encoder = (mfu.matmul_params(nnx.merge_state(params, frozen), under="encoder"),
                         sum(x.size for x in jax.tree.leaves(params.get("encoder", {}))))
        self.optimizer = make_optimizer(config.optim, self.total_steps, row_masks(params, config.lora))
        state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=None, rngs=rngs)
        abstract_opt = jax.eval_shape(self.optimizer.init, params)
        self.state_sh = train_state_shardings(state.replace(opt_state=abstract_opt), self.mesh)
        self.frozen_sh = state_shardings(frozen, self.mesh)
        params = _place_copy(params, self.state_sh.params)
        opt_init = jax.jit(self.optimizer.init, out_shardings=self.state_sh.opt_state)
        self.state = TrainState(step=place(state.step, self.state_sh.step), params=params,
                                opt_state=opt_init(params), rngs=_place_copy(rngs, self.state_sh.rngs))
        self.frozen = place(frozen, self.frozen_sh)
        self.step_fn = make_step_fn(graphdef, loss_fn, self.optimizer, grad_accum=config.grad_accum,
                                    compute_dtype=self.compute_dtype, nan_policy=config.nan_policy)
        self.guard = place(new_guard(), replicated(self.mesh))  # [non-finite steps, first one] (on device)
        self._compiled: dict[tuple, Callable] = {}
        self.fingerprint = fingerprint(params, lora=config.lora, grad_accum=config.grad_accum,
                                       model=repr(model_config) if model_config is not None else type(model).__name__,
                                       scan_layers=config.scan_layers, dropout=config.dropout)
        self.checkpointer = (Checkpointer(config.checkpoint, self.fingerprint, resume_settings(config, self.total_steps))
                             if config.checkpoint.dir else None)
        self._dims = (getattr(model_config, "num_layers", 0) or getattr(model_config, "num_hidden_layers", 0),
                      getattr(model_config, "hidden_size", 0) or getattr(model_config, "d_model", 0))
        self._stop = False

    # ------------------------------------------------------------------ state
    def model(self) -> nnx.Module:
        """The model with the current trained parameters (fp32 masters), in eval mode and in the
        layer-list layout (HF save, PEFT adapters and decoding expect it)."""
        model = nnx.merge(self.graphdef, self.state.params, self.state.rngs, self.frozen)
        model.eval()  # dropout off
        if self.config.scan_layers:
            unstack_layers(model)
        return model

    def train_step(self, batch: dict) -> dict:
        """One optimizer step on a global batch; returns device metrics."""
        key = tuple(sorted((k, v.shape) for k, v in batch.items()))
        if key not in self._compiled:
            spec = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in batch.items()}
            jitted = jit_train_step(self.step_fn, self.state_sh, self.frozen_sh, batch_shardings(spec, self.mesh),
                                    self.mesh)
            self._compiled[key] = compile_cached(jitted, self.mesh, self.state, self.frozen, batch, self.guard)
        self.state, metrics, self.guard = self._compiled[key](self.state, self.frozen, batch, self.guard)
        return metrics

    def diverged(self) -> tuple[int, int] | None:
        """``(non-finite steps, first such step)`` if ``train.nan_policy`` says the run must stop, else
        None (reads the device guard: call it where the host syncs anyway)."""
        count, first = (int(x) for x in jax.device_get(self.guard))
        if count == 0 or (self.config.nan_policy == "skip_batch" and count <= self.config.nan_skip_limit):
            return None
        return count, first

    def _stop_if_diverged(self) -> None:
        bad = self.diverged()
        if bad is None:
            return
        count, first = bad
        kept = self.checkpointer.latest_step() if self.checkpointer is not None else None
        where = (f"the last checkpoint (step {kept}) in {self.config.checkpoint.dir} is kept" if kept is not None
                 else "no checkpoint was written")
        policy = ("train.nan_policy: stop" if self.config.nan_policy == "stop" else
                  f"{count} non-finite steps > train.nan_skip_limit={self.config.nan_skip_limit}")
        raise TrainingDiverged(
            f"training diverged: the loss or gradient norm is NaN/Inf at step {first} ({policy}); nothing after it "
            f"was saved and {where}. Lower train.optim.learning_rate, check the data, or set "
            f"train.nan_policy: skip_batch")

    def restore(self, batches: DeviceIterator | None = None) -> int:
        """Resume from the latest checkpoint if there is one; returns the step reached (0: fresh)."""
        if self.checkpointer is None:
            return 0
        target = abstract_like(self.state, self.state_sh)
        state, step = self.checkpointer.restore(target, batches)
        if state is not None:
            self.state = state
        return int(step or 0)

    # ------------------------------------------------------------------- loop
    def fit(self, batches: DeviceIterator, evaluate: Callable[[nnx.Module], dict] | None = None,
            steps: int | None = None, *, eval_last: bool = False) -> dict:
        """Train until ``steps`` (default ``total_steps``), early stopping, data exhaustion or SIGTERM.
        ``eval_last``: also evaluate after the last step when it is not a multiple of ``eval_every``.
        The early-stopping state (best metric, validations since) is saved with each checkpoint and resumed.

        Returns the last logged train metrics plus ``step``, ``best_metric`` and ``stopped`` (why).
        """
        cfg = self.config
        steps = self.total_steps if steps is None else steps
        metric, mode = cfg.checkpoint.best_metric, cfg.checkpoint.best_mode
        if cfg.patience is not None and (metric is None or evaluate is None or not cfg.eval_every):
            raise ConfigError("train.patience needs checkpoint.best_metric, train.eval_every and an evaluate hook")
        spec = batch_spec(batches)  # validate the first batch's shape before compiling anything
        check_batch_size(next(iter(spec.values())).shape[0], self.mesh, "the input batch")
        start = self.restore(batches)
        peak = cfg.peak_flops or mfu.device_peak()[0]
        logger = MetricsLogger(cfg.log_dir)
        bar = tqdm(total=steps, initial=start, disable=not cfg.progress or jax.process_index() != 0,
                   desc="train", dynamic_ncols=True)
        # our own SIGTERM flag, unless JAX's preemption service (which catches SIGTERM itself) is in charge
        previous = (signal.signal(signal.SIGTERM, self._on_sigterm)
                    if not _preemption_service() and _main_thread() else None)
        best, stale = self._early_stopping_state(start)
        stopped, last = "steps", {}
        if cfg.patience is not None and stale >= cfg.patience:  # the checkpoint is where early stopping ended
            stopped, steps = "early_stopping", start
        step = logged_step = start
        t0 = time.perf_counter()
        try:
            while step < steps:
                try:
                    batch = next(batches)
                except StopIteration:
                    stopped = "data"
                    break
                metrics = self.train_step(batch)
                step += 1
                if step % cfg.log_every == 0 or step == steps:
                    host = {k: float(v) for k, v in jax.device_get(metrics).items()}
                    elapsed = time.perf_counter() - t0
                    elapsed = max(elapsed, 1e-9)
                    tps = batch["input_ids"].size * (step - logged_step) / elapsed
                    flops_s = self.batch_flops(batch) * (step - logged_step) / elapsed
                    host.update(tokens_per_s=tps, mfu=flops_s / peak if peak else 0.0)
                    logger.log(step, host, prefix="train/")
                    self._stop_if_diverged()
                    bar.set_postfix(loss=f"{host['loss']:.4f}", tok_s=f"{tps:,.0f}", mfu=f"{host['mfu']:.1%}")
                    last, t0, logged_step = host, time.perf_counter(), step
                bar.update(1)
                if evaluate is not None and cfg.eval_every and (step % cfg.eval_every == 0 or (eval_last and step == steps)):
                    self._stop_if_diverged()
                    scores = {k: float(v) for k, v in evaluate(self.model()).items()}
                    logger.log(step, scores, prefix="eval/")
                    if self.checkpointer is not None and metric is not None:
                        self.checkpointer.save_best(step, self.state, scores)
                    if metric is not None:
                        value = scores[metric]
                        if best is None or (value > best if mode == "max" else value < best):
                            best, stale = value, 0
                        else:
                            stale += 1
                        if cfg.patience is not None and stale >= cfg.patience:
                            stopped = "early_stopping"
                            break
                if self.checkpointer is not None and self.checkpointer.due(step):
                    self._stop_if_diverged()
                    self.checkpointer.save(step, self.state, batches, metrics={"best": best, "stale": stale})
                if self._preempted(step):
                    stopped = "sigterm"
                    break
            self._stop_if_diverged()
        finally:
            if self.checkpointer is not None:
                if self.diverged() is None:
                    self.checkpointer.save(step, self.state, batches, force=True, metrics={"best": best, "stale": stale})
                self.checkpointer.wait()
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            bar.close()
            logger.close()
        return {**last, "step": step, "best_metric": best, "stopped": stopped,
                "nonfinite_steps": int(jax.device_get(self.guard)[0])}

    def _early_stopping_state(self, step: int) -> tuple[float | None, int]:
        """(best metric, validations without improvement) saved with the checkpoint at ``step`` ((None, 0): fresh)."""
        if not step or self.checkpointer is None:
            return None, 0
        saved = self.checkpointer.check(self.checkpointer.last, step)["metrics"]
        return saved.get("best"), int(saved.get("stale", 0))

    def best_model(self) -> nnx.Module | None:
        """The model (as :meth:`model`) with the parameters of the best checkpoint by ``checkpoint.best_metric``;
        None without one."""
        if self.checkpointer is None or self.checkpointer.best_step() is None:
            return None
        current = self.state
        self.state, _ = self.checkpointer.restore(abstract_like(self.state, self.state_sh), best=True)
        try:
            return self.model()
        finally:
            self.state = current

    def batch_flops(self, batch: dict) -> float:
        """Model FLOPs (forward + backward, :mod:`jaxrec.train.mfu`) of one step on ``batch``; for an
        encoder-decoder the encoder weights count on encoder tokens, the rest on decoder tokens."""
        layers, hidden = self._dims
        inputs = batch["input_ids"]
        if "decoder_input_ids" not in batch:
            return inputs.size * mfu.flops_per_token(self.n_matmul, self.n_trained, layers, hidden, inputs.shape[1])
        (enc_matmul, enc_trained), dec = self._encoder, batch["decoder_input_ids"]
        return (inputs.size * mfu.flops_per_token(enc_matmul, enc_trained, layers, hidden, inputs.shape[1])
                + dec.size * mfu.flops_per_token(self.n_matmul - enc_matmul, self.n_trained - enc_trained, layers,
                                                 hidden, dec.shape[1]))

    def _on_sigterm(self, signum, frame) -> None:
        self._stop = True

    def _preempted(self, step: int) -> bool:
        """Whether to save and stop after ``step``. Several processes must stop at the same step: JAX's
        preemption sync point (a SIGTERM to any host is seen by all, which agree on the step), or, where
        that service is off, our flag all-gathered every ``log_every`` steps."""
        if jax.process_count() == 1:
            return self._stop
        if _preemption_service():
            return bool(multihost_utils.reached_preemption_sync_point(step))
        if step % self.config.log_every:
            return False
        return bool(np.any(multihost_utils.process_allgather(np.asarray(self._stop))))

    def close(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.close()


def resume_settings(config: TrainConfig, total_steps: int) -> dict:
    """The settings that shape the steps still to run (a resumed run must share them; the model, LoRA
    and layer execution are in the checkpoint's fingerprint, logging and the mesh may change)."""
    data = to_dict(config.data)
    data.pop("prefetch")
    return {"batch_size": config.batch_size, "total_steps": total_steps, "seed": config.seed,
            "compute_dtype": config.compute_dtype, "nan_policy": config.nan_policy, "optim": to_dict(config.optim),
            "data": data}


def _place_copy(tree: Any, shardings: Any) -> Any:
    """:func:`place` into buffers of the train state's own: the state is donated to every step, which
    must not delete the caller's model arrays (full fine-tuning, trained extras, RNG streams)."""
    if jax.process_count() == 1:  # a jit output never aliases a non-donated input (device_put may)
        return jax.jit(lambda t: jax.tree.map(jnp.copy, t), out_shardings=shardings)(tree)
    return place(jax.device_get(tree), shardings)


def split_for_training(model: nnx.Module, config: TrainConfig):
    """``model`` as the trainer holds it: LoRA applied in place, the training layout, split into
    (LoRA paths, graphdef, trained params as fp32 masters, rng state, frozen params: in the compute dtype
    under LoRA, as they are only read). Also runs under ``jax.eval_shape`` (``jaxrec train --dry-run``)."""
    lora_paths = apply_lora(model, config.lora, seed=config.seed)
    check_trainable(model, config.lora)
    model, trainable = training_layout(model, config)
    graphdef, params, rngs, frozen = split_model(model, trainable)
    if not jax.tree.leaves(params):
        raise ConfigError("nothing to train: lora settings select no parameter")
    params = cast_floats(params, jnp.float32)
    if config.lora.mode == "lora":
        frozen = cast_floats(frozen, DTYPES[config.compute_dtype])
    return lora_paths, graphdef, params, rngs, frozen


def training_layout(model: nnx.Module, config: TrainConfig):
    """The model as trained: a clone of ``model`` (so the caller's copy keeps no dropout) with the
    configured residual dropout, remat policy and, with ``scan_layers``, stacked layers; plus the NNX
    filter of its trainable parameters (for the stacked layout: those selected in the list layout,
    which must be the same in every layer)."""
    trainable = trainable_filter(config.lora)
    if not (config.dropout or config.remat != "none" or config.scan_layers):
        return model, trainable
    model = nnx.clone(model)
    if config.dropout:
        set_dropout(model, config.dropout, seed=config.seed + 2)  # LoRA dropout streams use seed + 1
    if config.remat != "none":
        set_remat(model, config.remat)
    if config.scan_layers:
        trainable = stacked_filter(model, trainable)
        stack_layers(model)
    return model, trainable


def _preemption_service() -> bool:
    """Whether SIGTERM is handled by JAX's preemption service (a multi-process run that has it on)."""
    return jax.process_count() > 1 and bool(jax.config.jax_enable_preemption_service)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
