"""Running a model's stack of identical layers: a Python loop or one ``jax.lax.scan``, each layer
optionally rematerialised in the backward pass.

Two layouts of the same weights:

* **list** (default; HF load/save, LoRA/PEFT paths, decoding): an ``nnx.List`` of L layer modules,
  variable paths like ``layers.3.self_attn.q_proj.kernel`` [in, out];
* **stacked** (training with ``train.scan_layers``): ONE layer module whose variables carry a leading
  [L] dimension with the logical axis name ``layers`` (``layers.self_attn.q_proj.kernel`` [L, in, out]);
  the forward is one ``lax.scan`` over it, so a deep model compiles one layer body.

A model names its layer lists in the class attribute ``LAYER_LISTS`` (attribute paths, e.g.
``(("layers",),)``; T5: encoder and decoder blocks). :func:`stack_layers` / :func:`unstack_layers`
convert between the layouts in place (they need every layer to have the same structure, e.g. LoRA
on the same projections of every layer).

Remat (``jax.checkpoint`` per layer, policy by name): ``none`` keeps every activation for the
backward pass; ``full`` keeps only each layer's input and recomputes the rest; ``dots`` keeps the
matmul outputs (``jax.checkpoint_policies.checkpoint_dots``); ``dots_with_no_batch_dims`` keeps
only matmuls without batch dimensions, i.e. the projections but not the attention score/value
products (``checkpoint_dots_with_no_batch_dims``). The owner of each layer list holds the chosen
name in its static attribute ``remat`` (:func:`set_remat`).

RNG streams inside the layers (dropout) are threaded through remat and scan: the updated counts
are written back, so dropout masks are the same in both layouts.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx

from jaxrec.errors import ConfigError
from jaxrec.parallel.rules import constrain_batch

REMAT_POLICIES = ("none", "full", "dots", "dots_with_no_batch_dims")
LAYERS_AXIS = "layers"

LayerFn = Callable[[nnx.Module, jax.Array], tuple[jax.Array, Any]]


def checkpoint_policy(name: str):
    """The ``jax.checkpoint`` policy for a remat name (``full``: None, i.e. save nothing)."""
    if name not in REMAT_POLICIES or name == "none":
        raise ConfigError(f"remat policy {name!r}: expected one of {REMAT_POLICIES[1:]} (or 'none')")
    return {"full": None, "dots": jax.checkpoint_policies.checkpoint_dots,
            "dots_with_no_batch_dims": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims}[name]


def run_layers(layers: nnx.Module, x: jax.Array, fn: LayerFn, remat: str = "none") -> tuple[jax.Array, Any]:
    """Thread ``x`` through every layer: ``fn(layer, x) -> (x, out)``.

    ``layers``: an ``nnx.List`` (list layout: a Python loop) or one stacked layer (``lax.scan``).
    The stream ``x`` [B, ...] is pinned to the batch sharding between layers
    (:func:`jaxrec.parallel.rules.constrain_batch`). Returns ``(x, outs)``: ``outs`` a list of the per-layer outputs (list layout) or the same
    pytree stacked [L, ...] (stacked layout); :func:`stack_outputs` gives [L, ...] for both.
    """
    x = constrain_batch(x)
    if isinstance(layers, nnx.List):
        outs = []
        for layer in layers:
            x, out = fn(layer, x) if remat == "none" else _remat_call(layer, x, fn, remat)
            x = constrain_batch(x)
            outs.append(out)
        return x, outs
    graphdef, state = nnx.split(layers)

    def body(x, layer_state):
        layer = nnx.merge(graphdef, layer_state)
        x, out = fn(layer, x)
        return constrain_batch(x), (out, nnx.state(layer, nnx.RngState))

    if remat != "none":
        body = jax.checkpoint(body, policy=checkpoint_policy(remat), prevent_cse=False)
    x, (outs, rng_state) = jax.lax.scan(body, x, state)
    nnx.update(layers, rng_state)
    return x, outs


def _remat_call(layer: nnx.Module, x: jax.Array, fn: LayerFn, remat: str):
    graphdef, state = nnx.split(layer)

    def pure(state, x):
        layer = nnx.merge(graphdef, state)
        return fn(layer, x), nnx.state(layer, nnx.RngState)

    (x, out), rng_state = jax.checkpoint(pure, policy=checkpoint_policy(remat))(state, x)
    nnx.update(layer, rng_state)
    return x, out


def stack_outputs(outs: Any) -> Any:
    """Per-layer outputs of :func:`run_layers` as one pytree stacked [L, ...] (either layout)."""
    if isinstance(outs, list):
        return jax.tree.map(lambda *xs: jnp.stack(xs), *outs)
    return outs


def hidden_states(embedded: jax.Array, final: jax.Array, per_layer: Any) -> jax.Array:
    """[L+1,B,T,d] as HF's ``hidden_states``: the embeddings [B,T,d], each layer's output (from
    :func:`run_layers` with per-layer outputs [B,T,d]), the last replaced by the final-normed ``final``."""
    return jnp.concatenate([embedded[None], stack_outputs(per_layer)[:-1], final[None]])


# ------------------------------------------------------------------------------- layouts
def _layer_lists(model: nnx.Module) -> list[tuple[nnx.Module, str]]:
    """(owner module, attribute name) of each layer list of ``model``."""
    out = []
    for path in getattr(type(model), "LAYER_LISTS", ()):
        owner = model
        for name in path[:-1]:
            owner = getattr(owner, name)
        out.append((owner, path[-1]))
    if not out:
        raise ConfigError(f"{type(model).__name__} declares no LAYER_LISTS: layers cannot be scanned or rematerialised")
    return out


def layer_lists(model: nnx.Module) -> list[nnx.Module]:
    """Each layer list (``nnx.List``) or stacked layer of ``model``."""
    return [getattr(owner, name) for owner, name in _layer_lists(model)]


def is_stacked(model: nnx.Module) -> bool:
    """True when ``model``'s layers are in the stacked (scan) layout."""
    return not isinstance(layer_lists(model)[0], nnx.List)


def set_remat(model: nnx.Module, policy: str) -> None:
    """Rematerialise every layer of ``model`` with ``policy`` (one of :data:`REMAT_POLICIES`)."""
    if policy not in REMAT_POLICIES:
        raise ConfigError(f"train.remat: {policy!r} is not one of {REMAT_POLICIES}")
    for owner, _ in _layer_lists(model):
        owner.remat = policy


def set_dropout(model: nnx.Module, rate: float, seed: int = 0) -> None:
    """Dropout with ``rate`` on every layer's residual branches (list layout; each layer its own RNG
    stream forked from ``seed``, so masks are deterministic given the seed). ``rate=0``: none."""
    if not 0.0 <= rate < 1.0:
        raise ConfigError(f"dropout rate must be in [0, 1), got {rate}")
    if is_stacked(model):
        raise ConfigError("set_dropout needs the layer-list layout: call it before stack_layers")
    rngs = nnx.Rngs(dropout=seed)
    for layers in layer_lists(model):
        for layer in layers:
            layer.dropout = nnx.Dropout(rate, rngs=rngs) if rate > 0 else None


def _stack_variable(variables: list[nnx.Variable]) -> nnx.Variable:
    first = variables[0]
    value = jnp.stack([v.get_value() for v in variables])
    axes = first.get_metadata().get("out_sharding")
    if axes is None:
        return first.replace(value)
    return first.replace(value, out_sharding=(LAYERS_AXIS, *axes))


def _unstack_variable(variable: nnx.Variable, i: int) -> nnx.Variable:
    value = variable.get_value()[i]
    axes = variable.get_metadata().get("out_sharding")
    if axes is None:
        return variable.replace(value)
    return variable.replace(value, out_sharding=tuple(axes[1:]))


def stack_layers(model: nnx.Module) -> None:
    """List layout -> stacked layout, in place. ConfigError if the layers differ in structure."""
    for owner, name in _layer_lists(model):
        layers = getattr(owner, name)
        if not isinstance(layers, nnx.List):
            continue
        splits = [nnx.split(layer) for layer in layers]
        graphdef = splits[0][0]
        for i, (other, _) in enumerate(splits[1:], 1):
            if other != graphdef:
                raise ConfigError(
                    f"scan_layers needs identical layers, but {name}.{i} differs from {name}.0 in structure "
                    f"(e.g. lora.target_modules or lora.trainable selecting only some layers); select the same "
                    f"modules in every layer or turn train.scan_layers off")
        is_var = lambda x: isinstance(x, nnx.Variable)  # noqa: E731
        state = jax.tree.map(lambda *vs: _stack_variable(list(vs)), *[s for _, s in splits], is_leaf=is_var)
        setattr(owner, name, nnx.merge(graphdef, state))


def unstack_layers(model: nnx.Module) -> None:
    """Stacked layout -> list layout, in place (no-op when already a list)."""
    for owner, name in _layer_lists(model):
        stacked = getattr(owner, name)
        if isinstance(stacked, nnx.List):
            continue
        graphdef, state = nnx.split(stacked)
        count = jax.tree.leaves(state)[0].shape[0]
        is_var = lambda x: isinstance(x, nnx.Variable)  # noqa: E731
        setattr(owner, name, nnx.List([
            nnx.merge(graphdef, jax.tree.map(lambda v: _unstack_variable(v, i), state, is_leaf=is_var))
            for i in range(count)]))


def stacked_filter(model: nnx.Module, selection) -> Callable[[tuple, Any], bool]:
    """An NNX filter over the list layout of ``model`` -> the same selection over its stacked layout.

    ConfigError when it selects a variable in some layers but not in all (a stacked variable is one array).
    """
    predicate = nnx.filterlib.to_predicate(selection)
    chosen: dict[tuple, set[bool]] = {}
    for path, variable in nnx.to_flat_state(nnx.state(model)):
        chosen.setdefault(stacked_path(path, model), set()).add(bool(predicate(path, variable)))
    mixed = [".".join(map(str, p)) for p, v in chosen.items() if len(v) > 1]
    if mixed:
        raise ConfigError(f"scan_layers: {mixed[0]} is trained in some layers only (lora.trainable / "
                          f"target_modules must select the same parameters in every layer)")
    selected = {p for p, v in chosen.items() if True in v}
    return lambda path, _: tuple(path) in selected


def stacked_path(path: tuple, model: nnx.Module) -> tuple:
    """A list-layout variable path -> its stacked-layout path (the layer index dropped)."""
    for layer_path in getattr(type(model), "LAYER_LISTS", ()):
        n = len(layer_path)
        if tuple(path[:n]) == tuple(layer_path) and len(path) > n and isinstance(path[n], int):
            return tuple(path[:n]) + tuple(path[n + 1:])
    return tuple(path)
