"""`--profile DIR` for train / eval / bench: a ``jax.profiler`` trace of the wrapped block.

```python
from jaxrec.profiling import profile
with profile(args.profile):          # None: does nothing
    run_steps()
```
The trace lands in ``DIR/plugins/profile/<run>/<host>.xplane.pb`` (open DIR with TensorBoard's profile
plugin: ``tensorboard --logdir DIR``) next to ``<host>.trace.json.gz`` (drag it into
https://ui.perfetto.dev). Each host of a multi-host run writes its own files. Mark steps with
``jax.profiler.StepTraceAnnotation("train", step_num=i)`` to see them as steps in the viewer.
Block on the results inside the block (``jax.block_until_ready``) so the traced work finishes in it.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Iterator

import jax


@contextlib.contextmanager
def profile(log_dir: str | os.PathLike | None, *, perfetto: bool = True) -> Iterator[Path | None]:
    """Trace everything JAX runs inside the block into ``log_dir`` (``None``: no tracing).

    ``perfetto``: also write the Perfetto ``*.trace.json.gz``. Yields the directory (or None).
    """
    if log_dir is None:
        yield None
        return
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    with jax.profiler.trace(str(log_dir), create_perfetto_trace=perfetto):
        yield log_dir
    if jax.process_index() == 0:
        print(f"jaxrec: profile written to {log_dir} (tensorboard --logdir {log_dir}, or the *.trace.json.gz "
              f"in https://ui.perfetto.dev)", file=sys.stderr)


def trace_files(log_dir: str | os.PathLike) -> list[Path]:
    """The ``*.xplane.pb`` traces under ``log_dir``, oldest first."""
    return sorted(Path(log_dir).glob("plugins/profile/*/*.xplane.pb"), key=lambda p: p.stat().st_mtime)
