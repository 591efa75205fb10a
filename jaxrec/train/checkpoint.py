"""Checkpoints with orbax: exact resume, best-N by a validation metric, config compatibility check.

Layout under ``CheckpointConfig.dir``::

    last/<step>/state   TrainState (trainable params — adapters only with LoRA —, optimizer, step, RNG)
    last/<step>/data    the input pipeline's iterator state (one JSON per process, grain's handler)
    last/<step>/meta    {"fingerprint": ..., "metrics": ...}
    best/<step>/...     the same items for the ``keep`` best validations by ``best_metric``

Saving is asynchronous (the train loop continues while arrays are written); :meth:`wait` blocks.
Before restoring, the stored fingerprint (trainable parameter paths/shapes/dtypes, LoRA settings,
model config) is compared with the current run's, so a checkpoint from another config fails with
one clear :class:`~jaxrec.errors.ConfigError` instead of a shape error deep inside orbax. The
training settings that shape the remaining steps (batch, schedule length, optimizer, data, seed) are
compared too: a change is refused unless ``checkpoint.allow_config_change``, which logs it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx

from jaxrec.config import to_dict
from jaxrec.errors import ConfigError
from jaxrec.remote import is_remote
from jaxrec.train.config import CheckpointConfig


def fingerprint(trainable: nnx.State, **settings: Any) -> dict:
    """What must match for a checkpoint to be resumable: trainable paths/shapes/dtypes + settings."""
    params = {".".join(map(str, p)): [list(v.shape), str(v.dtype)] for p, v in nnx.to_flat_state(trainable)}
    return {"trainable": params,
            **{k: to_dict(v) if dataclasses.is_dataclass(v) else v for k, v in settings.items()}}


def _first_difference(stored: dict, current: dict) -> str:
    for key in sorted(set(stored) | set(current)):
        if key not in current:
            return f"'{key}' is in the checkpoint but not in this run"
        if key not in stored:
            return f"'{key}' is in this run but not in the checkpoint"
        a, b = stored[key], current[key]
        if a != b:
            if isinstance(a, dict) and isinstance(b, dict):
                return f"{key}: {_first_difference(a, b)}"
            return f"'{key}': checkpoint has {a!r}, this run has {b!r}"
    return "no difference"


log = logging.getLogger("jaxrec.train.checkpoint")


class Checkpointer:
    """Saves/restores :class:`~jaxrec.train.train_step.TrainState` plus data-iterator state."""

    def __init__(self, config: CheckpointConfig, fingerprint: dict, settings: dict | None = None):
        """``settings``: the training settings a resumed run must share (see the module docstring)."""
        if config.dir is None:
            raise ConfigError("checkpoint.dir is not set")
        self.config = config
        self.fingerprint = json.loads(json.dumps(fingerprint))  # as it reads back from JSON
        self.settings = json.loads(json.dumps(settings or {}))
        root = epath.Path(config.dir) if is_remote(config.dir) else Path(config.dir).absolute()  # orbax writes buckets
        opts = dict(enable_async_checkpointing=config.async_save, create=True)
        self.last = ocp.CheckpointManager(root / "last", options=ocp.CheckpointManagerOptions(max_to_keep=1, **opts))
        self.best = None
        if config.best_metric is not None:
            metric = config.best_metric
            self.best = ocp.CheckpointManager(root / "best", options=ocp.CheckpointManagerOptions(
                max_to_keep=config.keep, best_fn=lambda m: float(m[metric]), best_mode=config.best_mode, **opts))

    # ------------------------------------------------------------------ save
    def _args(self, state, data_iter, metrics) -> ocp.args.Composite:
        items = {"state": ocp.args.StandardSave(state),
                 "meta": ocp.args.JsonSave({"fingerprint": self.fingerprint, "settings": self.settings,
                                            "metrics": metrics or {}})}
        if data_iter is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iter)
        return ocp.args.Composite(**items)

    def due(self, step: int) -> bool:
        """Whether :meth:`save` writes a periodic checkpoint at ``step``."""
        return bool(self.config.every) and step % self.config.every == 0

    def save(self, step: int, state, data_iter=None, *, force: bool = False, metrics: dict | None = None) -> bool:
        """Save the resumable state at ``step`` (every ``config.every`` steps, or when ``force``); ``metrics``
        (JSON values, e.g. the early-stopping state) are stored in its meta."""
        if not force and not self.due(step):
            return False
        if step in self.last.all_steps():
            return False
        return self.last.save(step, args=self._args(state, data_iter, metrics), force=True)

    def save_best(self, step: int, state, metrics: dict) -> bool:
        """Offer ``state`` to the best-N set, ranked by ``metrics[best_metric]``."""
        if self.best is None:
            return False
        if self.config.best_metric not in metrics:
            raise ConfigError(f"checkpoint.best_metric '{self.config.best_metric}' is not among the "
                              f"validation metrics {sorted(metrics)}")
        metrics = {k: float(v) for k, v in metrics.items()}
        return self.best.save(step, args=self._args(state, None, metrics), metrics=metrics, force=True)

    def wait(self) -> None:
        self.last.wait_until_finished()
        if self.best is not None:
            self.best.wait_until_finished()

    # --------------------------------------------------------------- restore
    def latest_step(self) -> int | None:
        return self.last.latest_step()

    def best_step(self) -> int | None:
        return None if self.best is None else self.best.best_step()

    def check(self, manager: ocp.CheckpointManager, step: int) -> dict:
        try:
            meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
            stored = meta["fingerprint"]
        except Exception as e:  # noqa: BLE001
            raise ConfigError(self._unreadable(manager, step, e)) from None
        if stored != self.fingerprint:
            raise ConfigError(
                f"checkpoint {manager.directory}/{step} was written by a different configuration "
                f"({_first_difference(stored, self.fingerprint)}); use a fresh checkpoint.dir or the same config")
        settings = meta.get("settings")  # absent in checkpoints written before settings were recorded
        if settings and self.settings and settings != self.settings:
            change = _first_difference(settings, self.settings)
            if not self.config.allow_config_change:
                raise ConfigError(
                    f"checkpoint {manager.directory}/{step} was trained with other settings ({change}); resume with "
                    f"the same config, or set checkpoint.allow_config_change: true to continue with the new ones")
            log.warning("resuming %s/%s with changed settings (%s)", manager.directory, step, change)
        return meta

    def restore(self, abstract_state, data_iter=None, *, step: int | None = None, best: bool = False):
        """Restore into the structure/shardings of ``abstract_state`` (jax.ShapeDtypeStruct leaves
        with ``sharding``); the data iterator, if given, is set to its saved position.
        Returns ``(state, step)``, or ``(None, None)`` when there is no checkpoint."""
        manager = self.best if best else self.last
        if manager is None:
            raise ConfigError("checkpoint.best_metric is not set, so there are no best checkpoints")
        step = (manager.best_step() if best else manager.latest_step()) if step is None else step
        if step is None:
            return None, None
        self.check(manager, step)
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if data_iter is not None and not best:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
        try:
            out = manager.restore(step, args=ocp.args.Composite(**items))
        except Exception as e:  # noqa: BLE001 -- orbax/tensorstore raise many kinds for damaged files
            raise ConfigError(self._unreadable(manager, step, e)) from None
        return out["state"], step

    @staticmethod
    def _unreadable(manager: ocp.CheckpointManager, step: int, error: Exception) -> str:
        first = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
        return (f"checkpoint {manager.directory}/{step} cannot be read ({type(error).__name__}: {first}); it is damaged "
                f"or incomplete: move it away to start afresh (nothing was changed)")

    def close(self) -> None:
        self.wait()
        self.last.close()
        if self.best is not None:
            self.best.close()


def abstract_like(tree: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs (with shardings) describing ``tree``, the restore target."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
