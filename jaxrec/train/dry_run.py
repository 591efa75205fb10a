"""`jaxrec train --config X --dry-run`: the run's sharded training state, built abstractly, before any chip is paid for.

On this host's CPU, split into as many fake devices as the run's mesh spans (``plan.devices`` or the
accelerator's count), it builds what the trainer would: the model of ``plan.architecture`` (or the local
``model.pretrained``'s config.json) with LoRA applied, the training layout, fp32 trained parameters, frozen
ones in the compute dtype and the AdamW state, all under ``jax.eval_shape`` (no weight is allocated, so an
8B model takes seconds), sharded over the mesh by the same rules. It prints the bytes each device holds
for each part, next to the planner's estimate of the same parts, then the planner's table; exit status 2
when the plan does not fit (as ``jaxrec plan``).

The fake devices must be set before JAX starts its CPU backend, so a dry run belongs in its own process.
"""

from __future__ import annotations

import json
import math
from typing import Any

from jaxrec.errors import ConfigError

#: dry-run part -> the planner component it is checked against
PLANNER_PARTS = {"params_trained": "params (trained, fp32 master)", "optimizer": "optimizer (AdamW mu+nu, fp32)",
                 "params_frozen": "params (frozen, "}


def use_fake_devices(count: int) -> None:
    """Run JAX on ``count`` CPU devices (before its backend starts; a clear error after)."""
    import jax

    try:
        jax.config.update("jax_platforms", "cpu")
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError as e:
        raise ConfigError(f"--dry-run needs a fresh process (JAX already started its devices): {e}") from None
    if jax.device_count() != count:
        raise ConfigError(f"--dry-run: asked for {count} CPU devices, JAX has {jax.device_count()} (XLA_FLAGS "
                          f"--xla_force_host_platform_device_count overrides it)")


def _device_bytes(tree: Any) -> int:
    """Bytes one device holds of ``tree`` (abstract leaves with NamedShardings; the shards are even)."""
    import jax

    total = 0
    for leaf in jax.tree.leaves(tree):
        total += math.prod(leaf.sharding.shard_shape(leaf.shape)) * leaf.dtype.itemsize
    return total


def sharded_state_bytes(arch, train, mesh) -> dict[str, int]:
    """Per-device bytes of the trainer's state for model config ``arch``: trained params (fp32), their
    AdamW state, frozen params (compute dtype under LoRA)."""
    import jax

    from jaxrec.models import build_model
    from jaxrec.models.lora import row_masks
    from jaxrec.parallel.rules import state_shardings
    from jaxrec.train.optimizer import make_optimizer
    from jaxrec.train.trainer import split_for_training

    def build():
        _, _, params, _, frozen = split_for_training(build_model(arch), train)
        opt_state = make_optimizer(train.optim, 1000, row_masks(params, train.lora)).init(params)
        return params, opt_state, frozen

    params, opt_state, frozen = jax.eval_shape(build)

    def placed(tree):
        shardings = state_shardings(tree, mesh)
        return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)

    return {"params_trained": _device_bytes(placed(params)), "optimizer": _device_bytes(placed(opt_state)),
            "params_frozen": _device_bytes(placed(frozen))}


def run(path: str, overrides: list[str]) -> int:
    """The dry run of config ``path`` (with ``--set`` ``overrides``): prints a table and one JSON line."""
    from jaxrec.parallel.mesh import make_mesh
    from jaxrec.train.plan import accelerator_spec, estimate, load_plan_config, resolve_model

    config, _ = load_plan_config(path, overrides)
    mesh_sizes = (config.train.mesh.data, config.train.mesh.fsdp, config.train.mesh.tensor)
    devices = (config.plan.devices or (accelerator_spec(config.plan.accelerator)[1] if config.plan.accelerator else None)
               or (math.prod(mesh_sizes) if -1 not in mesh_sizes else None))
    if devices is None:
        raise ConfigError(f"{path}: --dry-run needs the number of devices: set plan.devices or plan.accelerator "
                          f"(e.g. v5p-8), or give every train.mesh axis a size")
    plan = estimate(config, devices=devices)
    use_fake_devices(devices)
    mesh = make_mesh(config.train.mesh)
    actual = sharded_state_bytes(resolve_model(config.model), config.train, mesh)
    planned = {part: next((c.bytes for c in plan.phases[0].components if c.name.startswith(name)), 0)
               for part, name in PLANNER_PARTS.items()}
    gib = 1024 ** 3
    print(f"dry run of {path}: {plan.model}, mesh {dict(mesh.shape)} over {plan.devices} fake CPU devices")
    print(f"{'per device':<16}{'sharded state':>16}{'planner':>12}")
    for part in actual:
        print(f"{part:<16}{actual[part] / gib:>12.3f} GiB{planned[part] / gib:>8.3f} GiB")
    print(plan.table())
    print(json.dumps({"dry_run": path, "devices": plan.devices, "mesh": dict(mesh.shape), "sharded_bytes": actual,
                      "planned_bytes": planned, "fits": plan.fits()}))
    plan.check()
    return 0
