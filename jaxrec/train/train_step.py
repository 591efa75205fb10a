"""The jitted, sharded training step.

The model is split once into ``graphdef`` + three states: trainable parameters (fp32 master
weights, updated by the optimizer), RNG state (dropout), and everything frozen. One step:
cast to the compute dtype → forward/backward over ``grad_accum`` micro-batches (``lax.scan``) →
optax update. It is compiled with explicit in/out shardings derived from the parameters' logical
axes, and the train state is donated (updated in place).

The non-finite guard rides along on the device: ``guard`` ([2] int32) counts the steps whose loss or
gradient norm is NaN/Inf and keeps the first one. The host reads it only where it syncs anyway
(logging, saving, the end). ``nan_policy="stop"``: the host ends the run and saves nothing from the
first bad step on (the state in memory is discarded). ``"skip_batch"``: such a step leaves the
parameters and optimizer state as they were, as if the batch were absent.
"""

from __future__ import annotations

import collections
import hashlib
from typing import Any, Callable, Mapping

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh

from jaxrec.parallel.rules import DEFAULT_RULES, batch_sharding, replicated, state_shardings
from jaxrec.train.losses import LossFn


@flax.struct.dataclass
class TrainState:
    """What the optimizer changes (and what a checkpoint stores)."""

    step: jax.Array  # int32 scalar
    params: Any  # nnx.State of trainable parameters (fp32)
    opt_state: Any
    rngs: Any  # nnx.State of RNG streams (dropout)


def cast_floats(tree: Any, dtype) -> Any:
    """Cast floating leaves to ``dtype`` (ints, keys and bools untouched)."""
    def one(x):
        if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating) and x.dtype != dtype:
            return x.astype(dtype)
        return x
    return jax.tree.map(one, tree)


def split_model(model: nnx.Module, trainable) -> tuple[nnx.GraphDef, nnx.State, nnx.State, nnx.State]:
    """``graphdef, trainable_params, rng_state, frozen_state`` (``trainable``: an NNX filter)."""
    return nnx.split(model, trainable, nnx.RngState, ...)


def _split_micro_batches(batch: Mapping[str, jax.Array], n: int) -> dict[str, jax.Array]:
    """[B, ...] → [n, B/n, ...] taking rows i, i+n, i+2n, ... into micro-batch i, so every device
    keeps contributing its local rows to every micro-batch (no resharding)."""
    def one(x):
        x = x.reshape((x.shape[0] // n, n) + x.shape[1:])
        return jnp.swapaxes(x, 0, 1)
    return {k: one(v) for k, v in batch.items()}


def new_guard() -> jax.Array:
    """The initial non-finite guard: no bad step, first bad step 0 (none)."""
    return jnp.zeros((2,), jnp.int32)


def make_step_fn(graphdef: nnx.GraphDef, loss_fn: LossFn, optimizer: optax.GradientTransformation, *,
                 grad_accum: int = 1, compute_dtype=jnp.float32, nan_policy: str = "stop") -> Callable:
    """The pure step ``(state, frozen, batch, guard) -> (state, metrics, guard)`` (not yet jitted);
    ``guard`` as :func:`new_guard` (see the module docstring)."""

    def micro(params, rngs, frozen, batch):
        def objective(p, rngs, frozen):
            rngs = jax.tree.map(lambda x: x, rngs)  # fresh Variables at this trace level: dropout mutates them
            model = nnx.merge(graphdef, cast_floats(p, compute_dtype), rngs, cast_floats(frozen, compute_dtype))
            loss, weight, metrics = loss_fn(model, batch)
            weight = jnp.asarray(weight, jnp.float32)
            return loss * weight, (weight, metrics, nnx.state(model, nnx.RngState))

        (wsum, (weight, metrics, new_rngs)), grads = jax.value_and_grad(objective, has_aux=True)(params, rngs, frozen)
        metrics = {k: v * weight for k, v in metrics.items()}
        return wsum, weight, metrics, grads, new_rngs

    def step(state: TrainState, frozen, batch, guard):
        if grad_accum == 1:
            wsum, weight, metrics, grads, rngs = micro(state.params, state.rngs, frozen, batch)
        else:
            micro_batches = _split_micro_batches(batch, grad_accum)

            def body(carry, mb):
                acc_w, acc_loss, acc_metrics, acc_grads, rngs = carry
                wsum, weight, metrics, grads, rngs = micro(state.params, rngs, frozen, mb)
                return (acc_w + weight, acc_loss + wsum, jax.tree.map(jnp.add, acc_metrics, metrics),
                        jax.tree.map(jnp.add, acc_grads, grads), rngs), None

            first = jax.tree.map(lambda x: x[0], micro_batches)
            shapes = jax.eval_shape(lambda: micro(state.params, state.rngs, frozen, first))
            zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes[:4])
            (weight, wsum, metrics, grads, rngs), _ = jax.lax.scan(
                body, (zeros[1], zeros[0], zeros[2], zeros[3], state.rngs), micro_batches)
        denom = jnp.maximum(weight, 1e-9)
        grads = jax.tree.map(lambda g: (g / denom).astype(jnp.float32), grads)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        out = {k: v / denom for k, v in metrics.items()}
        out.update(loss=wsum / denom, tokens=weight, grad_norm=optax.tree.norm(grads))
        finite = jnp.isfinite(out["loss"]) & jnp.isfinite(out["grad_norm"])
        if nan_policy == "skip_batch":  # keeps the old state alive beside the new one: one more copy in memory
            params, opt_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old),
                                             (params, opt_state), (state.params, state.opt_state))
        bad = (~finite).astype(jnp.int32)
        guard = jnp.stack([guard[0] + bad, jnp.where((guard[0] == 0) & ~finite, state.step + 1, guard[1])])
        out["nonfinite_steps"] = guard[0]
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state, rngs=rngs), out, guard

    return step


def train_state_shardings(state: TrainState, mesh: Mesh, rules=DEFAULT_RULES) -> TrainState:
    """NamedShardings for a (possibly abstract) TrainState: optimizer moments follow their parameter."""
    return TrainState(step=replicated(mesh), params=state_shardings(state.params, mesh, rules),
                      opt_state=state_shardings(state.opt_state, mesh, rules),
                      rngs=state_shardings(state.rngs, mesh, rules))


def batch_shardings(batch_spec: Mapping[str, Any], mesh: Mesh, rules=DEFAULT_RULES) -> dict:
    """Every batch array is split over the data axes along its first (batch) dimension."""
    return {k: batch_sharding(mesh, len(v.shape), rules) for k, v in batch_spec.items()}


def jit_train_step(step_fn: Callable, state_sh: TrainState, frozen_sh: Any, batch_sh: dict, mesh: Mesh) -> Callable:
    """``jax.jit`` with explicit shardings; the train state (argument 0) and guard (3) are donated."""
    return jax.jit(step_fn, in_shardings=(state_sh, frozen_sh, batch_sh, replicated(mesh)),
                   out_shardings=(state_sh, replicated(mesh), replicated(mesh)), donate_argnums=(0, 3))


_EXECUTABLES: collections.OrderedDict = collections.OrderedDict()
_MAX_EXECUTABLES = 8


def compile_cached(jitted: Callable, mesh: Mesh, *args) -> Callable:
    """``jitted.lower(*args).compile()``, reusing an executable this process already compiled for the
    same program (HLO text, incl. shardings and donation) on the same devices: trainers re-created with
    an unchanged setup (staged tuning, sweeps, resumed runs) skip XLA compilation. Keeps the last 8."""
    with jax.set_mesh(mesh):  # the ambient mesh activations are constrained to (rules.constrain_batch)
        lowered = jitted.lower(*args)
    key = (hashlib.sha256(lowered.as_text().encode()).hexdigest(), tuple(d.id for d in mesh.devices.flat),
           mesh.axis_names)
    if key in _EXECUTABLES:
        _EXECUTABLES.move_to_end(key)
    else:
        _EXECUTABLES[key] = lowered.compile()
        if len(_EXECUTABLES) > _MAX_EXECUTABLES:
            _EXECUTABLES.popitem(last=False)
    return _EXECUTABLES[key]
