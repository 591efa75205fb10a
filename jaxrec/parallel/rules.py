"""Logical-axis rules: map the logical dimension names carried by parameters and activations to the
mesh axes (``data``, ``fsdp``, ``tensor``) and build ``NamedSharding`` trees from them.

Parameters carry their logical names in the Flax NNX variable metadata key ``out_sharding``
(flax 0.12.8; the older keys ``sharding`` / ``sharding_names`` are deprecated aliases), e.g.
``nnx.Param(w, out_sharding=("embed", "mlp"))``. A dimension whose name has no rule, or whose size
does not divide over its mesh axes, is replicated; a mesh axis is never used twice in one spec.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import jax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

#: logical name -> mesh axes (in order). Shared by parameters, optimizer state and activations.
DEFAULT_RULES: dict[str, tuple[str, ...]] = {
    # activations
    "batch": ("data", "fsdp"),
    "length": (),
    # parameters
    "embed": ("fsdp",),
    "vocab": ("tensor",),
    "mlp": ("tensor",),
    "heads": ("tensor",),
    "kv_heads": ("tensor",),
    "head_dim": (),
    "layers": (),
    "rel_buckets": (),
    "lora_rank": (),
    "items": ("tensor",),
}

LogicalAxes = Sequence[str | None] | None


def tensor_share(n: int, tensor: int) -> float:
    """One device's share of a dimension of size ``n`` split over ``tensor`` shards: n / tensor when it divides
    (as :func:`logical_to_spec` splits it), else the whole n (replicated)."""
    return n / tensor if n % tensor == 0 else n


def logical_to_spec(
    names: LogicalAxes,
    shape: Sequence[int],
    mesh: Mesh,
    rules: Mapping[str, Sequence[str]] = DEFAULT_RULES,
) -> PartitionSpec:
    """The PartitionSpec for an array of ``shape`` whose dimensions are named ``names``.

    Mesh axes of size 1, axes already used by an earlier dimension, and axes that do not divide the
    dimension are dropped (that dimension is then split over fewer axes or replicated).
    """
    if not names:
        return PartitionSpec()
    if len(names) != len(shape):
        raise ValueError(f"logical axes {tuple(names)} do not match array shape {tuple(shape)}")
    used: set[str] = set()
    spec = []
    for name, size in zip(names, shape):
        axes = []
        for axis in rules.get(name, ()) if name else ():
            if axis in used or mesh.shape[axis] == 1:
                continue
            if size % (math.prod(mesh.shape[a] for a in axes) * mesh.shape[axis]):
                continue
            axes.append(axis)
        used.update(axes)
        spec.append(None if not axes else axes[0] if len(axes) == 1 else tuple(axes))
    while spec and spec[-1] is None:
        spec.pop()
    return PartitionSpec(*spec)


def variable_axes(variable: nnx.Variable) -> LogicalAxes:
    """The logical axis names stored on an NNX variable (None when it has none)."""
    return variable.get_metadata().get("out_sharding")


def state_shardings(state: Any, mesh: Mesh, rules: Mapping[str, Sequence[str]] = DEFAULT_RULES) -> Any:
    """A tree like ``state`` (an ``nnx.State`` or any pytree of Variables/arrays) of NamedShardings."""

    def one(leaf):
        if isinstance(leaf, nnx.Variable):
            return leaf.replace(NamedSharding(mesh, logical_to_spec(variable_axes(leaf), leaf.shape, mesh, rules)))
        return NamedSharding(mesh, PartitionSpec())

    return jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def batch_sharding(mesh: Mesh, ndim: int, rules: Mapping[str, Sequence[str]] = DEFAULT_RULES) -> NamedSharding:
    """Sharding of a ``[batch, ...]`` input array: the batch over the data axes, the rest replicated."""
    axes = tuple(a for a in rules["batch"] if mesh.shape[a] > 1)
    first = None if not axes else axes[0] if len(axes) == 1 else axes
    return NamedSharding(mesh, PartitionSpec(first, *([None] * (ndim - 1))))


def constrain_batch(x: jax.Array) -> jax.Array:
    """Pin an activation ``x`` [B, ...] to the batch split over the data axes of the ambient mesh
    (``jax.set_mesh``; the trainer compiles under it), the rest replicated. Without it, XLA may
    gather a whole batch onto every device of an fsdp axis to meet the sharded weights. A no-op
    outside a mesh context or when B does not divide."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return x
    axes = tuple(a for a in DEFAULT_RULES["batch"] if a in mesh.axis_names and mesh.shape[a] > 1)
    if not axes or x.shape[0] % math.prod(mesh.shape[a] for a in axes):
        return x
    return jax.lax.with_sharding_constraint(x, PartitionSpec(axes, *([None] * (x.ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def place(tree: Any, shardings: Any) -> Any:
    """Put host values (identical on every process) onto global ``shardings``.

    Single process: ``jax.device_put``. Several processes: each builds only its addressable shards
    (``jax.make_array_from_callback``), since ``device_put`` cannot target other hosts' devices.
    """
    if jax.process_count() == 1:
        return jax.device_put(tree, shardings)

    def one(x, sharding):
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree.map(one, tree, shardings)
