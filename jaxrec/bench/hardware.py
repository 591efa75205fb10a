"""Describe the machine a benchmark ran on (goes into every benchmark's JSON)."""

from __future__ import annotations

import datetime
import os
import platform


def hardware_info() -> dict:
    """Devices, host CPU and library versions, plus the UTC date."""
    import jax

    devices = jax.devices()
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "host_cpu": platform.processor() or platform.machine(),
        "host_cores": os.cpu_count(),
        "jax": jax.__version__,
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return info
