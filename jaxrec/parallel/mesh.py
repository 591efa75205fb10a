"""Device mesh with the three axes every jaxrec kernel shards over: ``data``, ``fsdp``, ``tensor``.

* ``data``   — pure data parallelism (parameters replicated, batch split).
* ``fsdp``   — the batch is split *and* parameters/optimizer state are sharded (ZeRO-3 style).
* ``tensor`` — tensor (model) parallelism over heads / MLP / vocab.

A size of ``-1`` on one axis means "all remaining devices". The mesh is validated against the
devices before anything is compiled.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

from jaxrec.errors import ConfigError

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")  # mesh axes the global batch is split over


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Mesh shape; the product must equal the number of devices (one axis may be -1)."""

    data: int = -1
    fsdp: int = 1
    tensor: int = 1

    def shape(self, num_devices: int) -> tuple[int, int, int]:
        """The concrete (data, fsdp, tensor) sizes for ``num_devices`` devices."""
        sizes = [self.data, self.fsdp, self.tensor]
        for name, size in zip(MESH_AXES, sizes):
            if size == 0 or size < -1:
                raise ConfigError(f"mesh.{name} must be a positive size or -1 (fill), got {size}")
        free = [i for i, s in enumerate(sizes) if s == -1]
        if len(free) > 1:
            raise ConfigError(f"mesh: at most one axis may be -1, got {self}")
        fixed = math.prod(s for s in sizes if s != -1)
        if free:
            if num_devices % fixed:
                raise ConfigError(
                    f"mesh {self}: the fixed axes ({fixed} devices) do not divide the {num_devices} devices"
                )
            sizes[free[0]] = num_devices // fixed
        elif fixed != num_devices:
            raise ConfigError(
                f"mesh (data={self.data}, fsdp={self.fsdp}, tensor={self.tensor}) needs {fixed} devices, "
                f"but {num_devices} are available; make the product of the mesh sizes equal "
                f"{num_devices} or set one axis to -1"
            )
        return tuple(sizes)


def make_mesh(config: MeshConfig = MeshConfig(), devices: list | None = None) -> Mesh:
    """Build the (data, fsdp, tensor) mesh over ``devices`` (default: all devices of all processes)."""
    devices = list(jax.devices() if devices is None else devices)
    shape = config.shape(len(devices))
    auto = (AxisType.Auto,) * len(MESH_AXES)  # shardings propagate through the model (GSPMD)
    if devices == list(jax.devices()):
        return jax.make_mesh(shape, MESH_AXES, devices=devices, axis_types=auto)
    return Mesh(np.asarray(devices).reshape(shape), MESH_AXES, axis_types=auto)


def batch_divisor(mesh: Mesh) -> int:
    """How many ways the batch dimension is split (product of the ``data`` and ``fsdp`` axes)."""
    return math.prod(mesh.shape[a] for a in BATCH_AXES)


def check_batch_size(batch_size: int, mesh: Mesh, what: str = "train.batch_size") -> None:
    """Raise a clear error when ``batch_size`` does not split evenly over the batch axes."""
    n = batch_divisor(mesh)
    if batch_size % n:
        raise ConfigError(
            f"{what}={batch_size} does not divide across the data axes of the mesh "
            f"(data={mesh.shape['data']} x fsdp={mesh.shape['fsdp']} = {n}); use a multiple of {n}"
        )
