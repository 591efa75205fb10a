"""Metrics logging: JSONL (plain tools) and TensorBoard event files, written by process 0 only."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Mapping

from jaxrec.errors import ConfigError
from jaxrec.remote import is_remote


class MetricsLogger:
    """Append ``{"step", "time", **metrics}`` lines to ``DIR/metrics.jsonl`` and TensorBoard scalars.

    Only JAX process 0 writes; on other processes every call is a no-op. Values must be numbers.
    """

    def __init__(self, log_dir: str | Path | None, tensorboard: bool = True):
        import jax

        self.enabled = log_dir is not None and jax.process_index() == 0
        self._jsonl = None
        self._tb = None
        if not self.enabled:
            return
        if is_remote(log_dir):
            raise ConfigError(f"train.log_dir: {log_dir}: logs are written locally; leave log_dir unset and put the "
                              f"run's out_dir in the bucket (its logs/ is uploaded with the run)")
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(self.log_dir / "metrics.jsonl", "a", encoding="utf-8")
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(self.log_dir / "tensorboard"))

    def log(self, step: int, metrics: Mapping[str, float], prefix: str = "") -> None:
        if not self.enabled:
            return
        row = {"step": int(step), "time": time.time()}
        row.update({f"{prefix}{k}": float(v) for k, v in metrics.items()})
        self._jsonl.write(json.dumps(row) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for k, v in metrics.items():
                self._tb.add_scalar(f"{prefix}{k}", float(v), int(step))

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> "MetricsLogger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
