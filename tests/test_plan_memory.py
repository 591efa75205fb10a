"""The memory planner against XLA: the estimate of the train phase is within 15% of the compiled
train step's per-device ``argument + output - alias + temp`` bytes (tiny float32 configs, 8 CPU devices),
and each ``train.remat`` policy's within 20%, in XLA's order.

The step is the training engine's own (jaxrec.train.train_step, on the model laid out by the trainer's
``training_layout``), compiled from abstract shapes only.
"""

import jax
import jax.numpy as jnp
import pytest

from jaxrec.data.pipeline import TokenDataConfig
from jaxrec.models import build_model
from jaxrec.models.lora import LoraConfig, apply_lora
from jaxrec.models.registry import for_config
from jaxrec.parallel.mesh import MeshConfig, make_mesh
from jaxrec.parallel.rules import state_shardings
from jaxrec.train.config import TrainConfig
from jaxrec.train.losses import causal_lm_loss, seq2seq_lm_loss
from jaxrec.train.optimizer import make_optimizer
from jaxrec.train.plan import ModelSpec, PlanConfig, TargetSpec, estimate, resolve_model
from jaxrec.train.train_step import (TrainState, batch_shardings, jit_train_step, make_step_fn, split_model,
                                     train_state_shardings)
from jaxrec.train.trainer import training_layout

TARGET_LEN = 32


def measured_peak(config: PlanConfig) -> int:
    """Per-device bytes XLA assigns to the compiled train step of ``config``."""
    train = config.train
    arch = resolve_model(config.model)
    is_t5 = for_config(arch).encoder_decoder
    model = build_model(arch)
    apply_lora(model, train.lora)
    model, trainable = training_layout(model, train)
    mesh = make_mesh(train.mesh)
    graphdef, params, rngs, frozen = split_model(model, trainable)
    optimizer = make_optimizer(train.optim, 10)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=jax.eval_shape(optimizer.init, params),
                       rngs=rngs)
    rows, seq = train.batch_size, train.data.seq_len
    lm_len = TARGET_LEN if is_t5 else seq
    batch = {"input_ids": (rows, seq), "attention_mask": (rows, seq), "targets": (rows, lm_len),
             "loss_mask": (rows, lm_len)}
    if is_t5:
        batch["decoder_input_ids"] = (rows, lm_len)
    batch = {k: jax.ShapeDtypeStruct(shape, jnp.int32) for k, shape in batch.items()}
    step = make_step_fn(graphdef, seq2seq_lm_loss if is_t5 else causal_lm_loss, optimizer)
    jitted = jit_train_step(step, train_state_shardings(state, mesh), state_shardings(frozen, mesh),
                            batch_shardings(batch, mesh), mesh)
    abstract = lambda tree: jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)  # noqa: E731
    with jax.set_mesh(mesh):  # as the trainer compiles (activations pinned to the batch sharding)
        stats = jitted.lower(abstract(state), abstract(frozen), batch, jax.ShapeDtypeStruct((2,), jnp.int32)
                              ).compile().memory_analysis()
    return (stats.argument_size_in_bytes + stats.output_size_in_bytes - stats.alias_size_in_bytes
            + stats.temp_size_in_bytes)


@pytest.mark.parametrize("preset, mode, mesh, targets", [
    ("tiny-llama", "lora", (8, 1, 1), ("q_proj", "v_proj")),   # data parallel, LoRA
    ("tiny-llama", "full", (4, 1, 2), ("q_proj",)),           # tensor parallel, every weight trained
    ("tiny-t5", "lora", (2, 1, 4), ("q", "v")),               # encoder-decoder, tensor parallel
    ("tiny-llama", "full", (2, 4, 1), ("q_proj",)),           # fsdp: weights sharded, activations split by batch
])
def test_train_estimate_within_15_percent_of_xla(preset, mode, mesh, targets):
    config = PlanConfig(model=ModelSpec(preset=preset), plan=TargetSpec(target_len=TARGET_LEN), train=TrainConfig(
        batch_size=16, mesh=MeshConfig(*mesh), data=TokenDataConfig(seq_len=128),
        lora=LoraConfig(mode=mode, target_modules=targets)))
    estimated = estimate(config, devices=8).phases[0].total
    measured = measured_peak(config)
    assert 0.85 <= estimated / measured <= 1.15, (estimated, measured)


def test_train_remat_estimates_follow_xla_with_scanned_layers():
    """``train.remat`` on 8 scanned layers (XLA:CPU merges the recompute of unrolled layers back into the forward,
    so only the scan shows what remat saves): every policy within 20% of the compiled step, ordered as XLA orders
    them (``dots`` also keeps the attention products that ``dots_with_no_batch_dims`` recomputes)."""
    remats = ("none", "dots", "dots_with_no_batch_dims", "full")
    estimated, measured = {}, {}
    for remat in remats:
        config = PlanConfig(model=ModelSpec(preset="tiny-llama", arch={"num_layers": 8}),
                            plan=TargetSpec(target_len=TARGET_LEN),
                            train=TrainConfig(batch_size=16, mesh=MeshConfig(8, 1, 1), data=TokenDataConfig(seq_len=128),
                                              remat=remat, scan_layers=True))
        estimated[remat], measured[remat] = estimate(config, devices=8).phases[0].total, measured_peak(config)
    for remat in remats:
        assert 0.8 <= estimated[remat] / measured[remat] <= 1.2, (remat, estimated[remat], measured[remat])
    assert sorted(remats, key=measured.get) == sorted(remats, key=estimated.get) == list(remats)[::-1]
