"""A persistent XLA compilation cache for every jaxrec command.

A restarted run (a preempted pod, a resumed training, ``jaxrec eval`` after ``jaxrec train``, the next
point of a sweep) loads the executables an earlier process compiled for the same program instead of
recompiling them. The cache lives in ``$JAXREC_COMPILATION_CACHE`` — a local directory or a
``gs://`` bucket path, which JAX reads and writes directly, so every host of a pod shares it —
by default ``<jaxrec cache>/xla`` (``$JAXREC_CACHE`` or ``~/.cache/jaxrec``); ``off`` disables it.
Only programs that took at least ``min_compile_seconds`` to compile are stored.
"""

from __future__ import annotations

import os

from jaxrec.cache import cache_dir

ENV = "JAXREC_COMPILATION_CACHE"


def enable_compilation_cache(location: str | None = None, min_compile_seconds: float = 1.0) -> str | None:
    """Point JAX's persistent compilation cache at ``location`` (default: from the environment, see the
    module docstring); returns where it is, or None when disabled."""
    import jax

    location = os.environ.get(ENV, "") if location is None else location
    if location.lower() in ("off", "0", "false", "none"):
        return None
    location = location or str(cache_dir() / "xla")
    jax.config.update("jax_compilation_cache_dir", location)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_seconds))
    return location
