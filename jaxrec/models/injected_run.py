"""RSLLM's stage-2 run directory: an LLM with an item-embedding projector injected into its input layer.

::

    stage2/run.json              {"mode": "lora"|"full", "stage1": dir, "state", "step", "config"} (last)
    stage2/adapter/ | model/     the stage-2 weights on top of the merged stage-1 model
    stage2/projector.safetensors the projector (``ProjectorConfig`` sizes it)
    stage2/item_table.npy        float32 [N, d_id] ID embeddings as trained

The stage-1 run beside it (``stage1/``) is an ordinary :mod:`jaxrec.models.run_dir` run.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import safetensors.numpy
from flax import nnx, traverse_util

from jaxrec.atomic import atomic_file, write_json
from jaxrec.config import to_dict
from jaxrec.errors import ConfigError
from jaxrec.models import projector as proj
from jaxrec.models.hf_io import load_pretrained, save_pretrained
from jaxrec.models.lora import LoraConfig, remove_lora
from jaxrec.models.peft_io import load_adapter, save_adapter
from jaxrec.models.run_dir import RUN_FILE, load_run, run_state, warn_if_preempted
from jaxrec.models.section import ModelSection
from jaxrec.models.tokenizer import load_tokenizer


@dataclasses.dataclass
class ProjectorConfig:
    """The ``projector:`` section: hidden width (None: the LLM's hidden size) and init seed."""

    hidden_size: int | None = None
    seed: int = 0


def new_projector(section: ProjectorConfig, model, id_dim: int, out_rms: float) -> proj.ItemProjector:
    """A fresh projector from ``id_dim`` ID embeddings to ``model``'s hidden size."""
    d = model.config.hidden_size
    return proj.ItemProjector(id_dim, section.hidden_size or d, d, out_rms=out_rms,
                              rngs=nnx.Rngs(params=section.seed))


def _projector_params(projector: proj.ItemProjector) -> dict:
    return traverse_util.flatten_dict(nnx.to_pure_dict(nnx.state(projector, nnx.Param)), sep=".")


def save_stage2(run_dir: Path, model, lora: LoraConfig, config, summary: dict) -> None:
    """Detach the injecting layer and write stage 2 (weights, projector, ID table, ``run.json`` last);
    ``config``: the recipe's whole config, recorded in ``run.json``."""


    layer = proj.detach(model)
    if lora.mode == "lora":
        save_adapter(model, run_dir / "adapter", lora, base_model=str(run_dir.parent / "stage1"))
    else:
        save_pretrained(model, run_dir / "model")
    with atomic_file(run_dir / "projector.safetensors", "wb") as f:
        f.write(safetensors.numpy.save({k: np.asarray(v) for k, v in _projector_params(layer.projector).items()}))
    with atomic_file(run_dir / "item_table.npy", "wb") as f:
        np.save(f, np.asarray(layer.item_table[...], np.float32))
    write_json(run_dir / RUN_FILE, {"mode": lora.mode, "stage1": str(run_dir.parent / "stage1"),
                                        **run_state(summary), "config": to_dict(config)})


def load_stage2(out_dir: str | Path, section: ModelSection, projector: ProjectorConfig):
    """(injected model, tokenizer) of a trained run in ``out_dir``: the stage-1 model, stage-2 weights
    merged, the projector and the ID table."""


    out = Path(out_dir)
    if not (out / "stage2" / RUN_FILE).is_file():
        raise ConfigError(f"{out}: no stage2/{RUN_FILE}; train this config first (jaxrec train --config ...)")
    meta = json.loads((out / "stage2" / RUN_FILE).read_text())
    warn_if_preempted(out / "stage2", meta)
    if meta["mode"] == "lora":
        model, tokenizer = load_run(out / "stage1", "fine_tuned", section.dtype, section)
        load_adapter(model, out / "stage2" / "adapter")
        remove_lora(model, merge=True)
    else:
        tokenizer = load_tokenizer(out / "stage1" / "tokenizer")
        model = load_pretrained(out / "stage2" / "model", dtype=section.dtype)
    table = np.load(out / "stage2" / "item_table.npy")
    layer = nnx.eval_shape(lambda: new_projector(projector, model, table.shape[1], 1.0))  # weights come from the file
    saved = safetensors.numpy.load_file(str(out / "stage2" / "projector.safetensors"))
    params = _projector_params(layer)
    if set(saved) != set(params) or any(saved[k].shape != params[k].shape for k in params):
        raise ConfigError(f"{out}/stage2/projector.safetensors does not match projector.hidden_size of this config")
    nnx.update(layer, nnx.State(traverse_util.unflatten_dict({k: jnp.asarray(v) for k, v in saved.items()},
                                                                 sep=".")))
    return proj.inject(model, layer, table), tokenizer
