"""Multi-host start-up: ``jax.distributed.initialize`` from explicit flags or the environment.

On TPU pods / SLURM / GKE, JAX discovers the cluster itself (``auto=True``). Elsewhere (several CPU
or GPU hosts, tests) pass the coordinator explicitly or set ``JAXREC_COORDINATOR``
(``host:port``), ``JAXREC_NUM_PROCESSES`` and ``JAXREC_PROCESS_ID`` (and optionally
``JAXREC_HEARTBEAT_TIMEOUT``, seconds before a silent process is declared dead). Must run before any
other JAX call touches the devices.
"""

from __future__ import annotations

import dataclasses
import os

import jax

from jaxrec.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    """How this process joins a multi-process run (all empty: a single-process run)."""

    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    auto: bool = False  # let JAX detect the cluster (TPU pod, SLURM, ...)
    cpu_collectives: str = "gloo"  # CPU-only runs need a collectives backend across processes
    heartbeat_timeout_s: int = 100  # a process silent this long is declared dead and the others stop (JAX's default)


def config_from_env(env: dict | None = None) -> DistributedConfig:
    """Read ``JAXREC_COORDINATOR`` / ``JAXREC_NUM_PROCESSES`` / ``JAXREC_PROCESS_ID``."""
    env = os.environ if env is None else env
    try:
        num = int(env["JAXREC_NUM_PROCESSES"]) if env.get("JAXREC_NUM_PROCESSES") else None
        pid = int(env["JAXREC_PROCESS_ID"]) if env.get("JAXREC_PROCESS_ID") else None
        heartbeat = int(env.get("JAXREC_HEARTBEAT_TIMEOUT") or 100)
    except ValueError as e:
        raise ConfigError(f"JAXREC_NUM_PROCESSES / JAXREC_PROCESS_ID / JAXREC_HEARTBEAT_TIMEOUT must be integers: {e}") from None
    return DistributedConfig(coordinator_address=env.get("JAXREC_COORDINATOR") or None,
                             num_processes=num, process_id=pid, heartbeat_timeout_s=heartbeat)


def initialize(config: DistributedConfig | None = None) -> bool:
    """Join the multi-process run described by ``config`` (default: from the environment).

    Returns True when ``jax.distributed`` was initialized, False for a single-process run.
    """
    config = config_from_env() if config is None else config
    if config.auto:
        jax.distributed.initialize()
        return True
    if config.coordinator_address is None:
        if config.num_processes not in (None, 1):
            raise ConfigError("distributed: num_processes > 1 needs a coordinator_address (host:port)")
        return False
    if config.num_processes is None or config.process_id is None:
        raise ConfigError("distributed: coordinator_address needs num_processes and process_id as well")
    if not 0 <= config.process_id < config.num_processes:
        raise ConfigError(
            f"distributed: process_id={config.process_id} is outside [0, num_processes={config.num_processes})"
        )
    if jax.config.jax_platforms in (None, "", "cpu") or "cpu" in str(jax.config.jax_platforms):
        jax.config.update("jax_cpu_collectives_implementation", config.cpu_collectives)
    jax.distributed.initialize(coordinator_address=config.coordinator_address,
                               num_processes=config.num_processes, process_id=config.process_id,
                               heartbeat_timeout_seconds=config.heartbeat_timeout_s)
    return True
