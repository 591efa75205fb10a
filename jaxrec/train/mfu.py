"""Model FLOPs utilization (MFU): achieved model FLOP/s over the device's peak FLOP/s.

FLOPs per trained token (forward + backward; matmuls only, as in PaLM's appendix B)::

    2·N            forward through every matmul weight (N = matmul parameters: all ≥2-D weights
                   except input-embedding tables, i.e. those whose first logical axis is "vocab")
  + 2·N            backward to the activations (needed through frozen weights too)
  + 2·N_trained    backward to the trained weights (= N for full fine-tuning; the LoRA A/B for LoRA)
  + 12·L·T·d       attention scores and weighted values (QKᵀ and AV: 2·T·d each, ×3 for the backward)

so full fine-tuning gives the familiar ``6N + 12LTd``. Peak FLOP/s: the datasheet dense figure for
known accelerators (bf16, or fp32 where no bf16 is used), else a measured large fp32 matmul on the
device (reported as ``peak_source: measured``).
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
from flax import nnx

from jaxrec.parallel.rules import variable_axes

# dense bf16 peak FLOP/s per device
DATASHEET_PEAK = {
    "H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12,
    "TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12, "TPU v6 lite": 918e12,
}


def matmul_params(state: nnx.State, under: str | None = None) -> int:
    """Number of parameters that take part in matmuls (see the module docstring); with ``under``,
    only those of that top-level submodule (e.g. "encoder")."""
    total = 0
    for path, v in nnx.to_flat_state(state):
        if not isinstance(v, nnx.Param) or (under is not None and path[:1] != (under,)):
            continue
        axes, ndim = tuple(variable_axes(v) or ()), v.ndim
        if axes[:1] == ("layers",):  # stacked over layers (scan): one leading [L] dimension more
            axes, ndim = axes[1:], ndim - 1
        if ndim < 2 or axes[:1] == ("vocab",):
            continue
        total += v.size
    return total


def flops_per_token(n_matmul: int, n_trained: int, num_layers: int, hidden: int, seq_len: int) -> float:
    return 4.0 * n_matmul + 2.0 * n_trained + 12.0 * num_layers * seq_len * hidden


def measured_peak(n: int = 2048, dtype=jnp.float32) -> float:
    """FLOP/s of one large jitted matmul (on CPU it uses every core, so it is the whole host's ceiling)."""
    x = jnp.ones((n, n), dtype)
    f = jax.jit(lambda a: a @ a)
    f(x).block_until_ready()
    reps = 5
    t0 = time.perf_counter()
    for _ in range(reps):
        y = f(x)
    y.block_until_ready()
    return 2 * n**3 * reps / (time.perf_counter() - t0)


@functools.cache
def device_peak() -> tuple[float, str]:
    """(peak FLOP/s of all devices together, "datasheet" | "measured")."""
    kind = jax.devices()[0].device_kind
    for name, peak in DATASHEET_PEAK.items():
        if name.lower() in kind.lower():
            return peak * jax.device_count(), "datasheet"
    return measured_peak(), "measured"
