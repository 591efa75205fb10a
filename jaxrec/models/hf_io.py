"""Hugging Face checkpoints in and out, without torch: config.json + safetensors (single or sharded).

``load_pretrained(path)`` builds the model abstractly (no random init), reads each tensor with
``safetensors.safe_open``, transposes Linear weights (HF [out, in] -> our kernel [in, out]), casts to
the parameter dtype and places it on devices (optionally straight into a sharding).
``save_pretrained(model, path)`` writes config.json + model.safetensors that ``transformers`` loads
(other files in the directory, e.g. a tokenizer, are kept).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors import safe_open
from safetensors.numpy import save_file

from jaxrec.atomic import atomic_file
from jaxrec.errors import JaxrecError
from jaxrec.models.layers import as_dtype
from jaxrec.models.llama import MODEL_TYPES as LLAMA_TYPES
from jaxrec.models.llama import LlamaConfig, LlamaForCausalLM
from jaxrec.models.t5 import T5Config, T5ForConditionalGeneration

SUPPORTED_MODEL_TYPES = (*LLAMA_TYPES, "t5")
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

Sharding = Callable[[tuple, tuple], jax.sharding.Sharding] | Any


def build_model(config: LlamaConfig | T5Config, seed: int = 0):
    """A randomly initialised model for ``config`` (Llama family or T5)."""
    rngs = nnx.Rngs(seed)
    if isinstance(config, LlamaConfig):
        return LlamaForCausalLM(config, rngs=rngs)
    if isinstance(config, T5Config):
        return T5ForConditionalGeneration(config, rngs=rngs)
    raise JaxrecError(f"build_model: expected a LlamaConfig or T5Config, got {type(config).__name__}")


def read_hf_config(path: str | Path) -> dict[str, Any]:
    """The parsed config.json of an HF model directory."""
    file = Path(path) / "config.json"
    if not file.is_file():
        raise JaxrecError(f"{file}: missing; expected an HF model directory with config.json")
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise JaxrecError(f"{file}:{e.lineno}: invalid JSON ({e.msg})") from None


def config_from_hf(hf: dict[str, Any], weight_names: set[str], source: str = "config.json",
                   **overrides) -> LlamaConfig | T5Config:
    """HF config dict -> our config; ``weight_names`` tells whether an lm_head is stored (T5)."""
    model_type = hf.get("model_type")
    try:
        if model_type in LLAMA_TYPES:
            return LlamaConfig.from_hf(hf, **overrides)
        if model_type == "t5":
            return T5Config.from_hf(hf, has_lm_head="lm_head.weight" in weight_names, **overrides)
    except KeyError as e:
        raise JaxrecError(f"{source}: missing field {e.args[0]!r} for model_type "
                          f"{model_type!r}") from None
    raise JaxrecError(f"{source}: unsupported model_type {model_type!r}; expected one of "
                      f"{SUPPORTED_MODEL_TYPES}")


def weight_files(path: Path) -> dict[str, Path]:
    """HF tensor name -> safetensors file holding it (single file or sharded index)."""
    index = path / INDEX_FILE
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map")
        if not isinstance(weight_map, dict):
            raise JaxrecError(f"{index}: expected a 'weight_map' object")
        files = {name: path / file for name, file in weight_map.items()}
        for file in set(files.values()):
            if not file.is_file():
                raise JaxrecError(f"{file}: missing; listed in {index}")
        return files
    single = path / SINGLE_FILE
    if not single.is_file():
        raise JaxrecError(f"{path}: no {SINGLE_FILE} or {INDEX_FILE} (only safetensors "
                          f"checkpoints are supported)")
    with safe_open(str(single), framework="flax") as f:
        return {name: single for name in f.keys()}


def _place(value: jax.Array, variable: nnx.Variable, path: tuple, sharding) -> jax.Array:
    if sharding is None:
        return value
    if callable(sharding):
        target = sharding(tuple(variable.get_metadata().get("out_sharding") or ()), value.shape)
    else:
        target = sharding[path]
        target = target.get_value() if isinstance(target, nnx.Variable) else target
    return jax.device_put(value, target)


def load_pretrained(path: str | Path, dtype: str = "float32", param_dtype: str | None = None,
                    sharding: Sharding | None = None):
    """Load an HF checkpoint directory as a jaxrec model.

    dtype: compute dtype; param_dtype: storage dtype (default: dtype).
    sharding: None (default device), a callable ``(logical_axes, shape) -> jax.sharding.Sharding``,
    or a pytree of shardings shaped like ``nnx.state(model, nnx.Param)``.
    """
    path = Path(path)
    hf = read_hf_config(path)
    files = weight_files(path)
    config = config_from_hf(hf, set(files), source=str(path / "config.json"), dtype=dtype,
                            param_dtype=param_dtype or dtype)
    target_dtype = as_dtype(config.param_dtype)
    abstract = nnx.eval_shape(lambda: build_model(config))
    graphdef, state = nnx.split(abstract, nnx.Param)
    flat_sharding = (None if sharding is None or callable(sharding)
                     else dict(nnx.to_flat_state(sharding)))
    handles: dict[Path, Any] = {}
    loaded = []
    try:
        for var_path, variable in nnx.to_flat_state(state):
            name = type(abstract).hf_name(var_path)
            if name not in files:
                raise JaxrecError(f"{path}: tensor {name!r} missing from the checkpoint "
                                  f"(needed by {config.model_type})")
            file = files[name]
            if file not in handles:
                handles[file] = safe_open(str(file), framework="flax")
            value = handles[file].get_tensor(name)
            if var_path[-1] == "kernel":
                value = value.T
            if value.shape != variable.shape:
                raise JaxrecError(f"{file}: tensor {name!r} has shape "
                                  f"{tuple(value.shape)}, expected {tuple(variable.shape)} from "
                                  f"config.json")
            value = _place(value.astype(target_dtype), variable,
                           var_path, sharding if flat_sharding is None else flat_sharding)
            loaded.append((var_path, variable.replace(value)))
    finally:
        handles.clear()
    return nnx.merge(graphdef, nnx.from_flat_state(loaded))


def save_pretrained(model, path: str | Path, dtype: str | None = None) -> Path:
    """Write ``model`` into HF directory ``path`` (config.json + model.safetensors, each atomic).

    dtype: storage dtype of the tensors (default: the parameter dtype).
    """
    config = model.config
    hf = config.to_hf()
    if dtype is not None:
        hf["torch_dtype"] = dtype
    out_dtype = as_dtype(dtype or config.param_dtype)
    tensors = {}
    for var_path, variable in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        value = jnp.asarray(variable.get_value()).astype(out_dtype)
        if var_path[-1] == "kernel":
            value = value.T
        tensors[type(model).hf_name(var_path)] = np.ascontiguousarray(jax.device_get(value))
    path = Path(path)
    with atomic_file(path / SINGLE_FILE, "wb") as f:
        save_file(tensors, f.name, metadata={"format": "pt"})
    with atomic_file(path / "config.json") as f:
        f.write(json.dumps(hf, indent=2, sort_keys=True) + "\n")
    (path / INDEX_FILE).unlink(missing_ok=True)  # a stale shard index would shadow the new file
    return path
