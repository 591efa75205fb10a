"""Hugging Face checkpoints in and out, without torch: config.json + safetensors (single or sharded),
and GGUF files in (:mod:`jaxrec.models.gguf_io`).

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
from jaxrec.models.registry import build_model, config_from_hf

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

# a callable (logical_axes, shape) -> jax.sharding.Sharding, or a pytree of shardings
Sharding = Callable[[tuple, tuple], jax.sharding.Sharding] | nnx.State


def read_hf_config(path: str | Path) -> dict[str, Any]:
    """The parsed config.json of an HF model directory."""
    file = Path(path) / "config.json"
    if not file.is_file():
        raise JaxrecError(f"{file}: missing; expected an HF model directory with config.json")
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise JaxrecError(f"{file}:{e.lineno}: invalid JSON ({e.msg})") from None


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


def _target_sharding(sharding, flat_sharding, var_path: tuple, variable: nnx.Variable):
    """The jax.sharding.Sharding for one parameter, or None (default device)."""
    if sharding is None:
        return None
    if callable(sharding):
        return sharding(tuple(variable.get_metadata().get("out_sharding") or ()), variable.shape)
    target = flat_sharding[var_path]
    return target.get_value() if isinstance(target, nnx.Variable) else target


def _read(tensor_slice, transpose: bool, dtype, shape: tuple, target) -> jax.Array:
    """Read one tensor (our layout ``shape``); with a sharding, each device's part only."""
    def part(index: tuple) -> np.ndarray:
        value = tensor_slice[index[::-1] if transpose else index]
        return np.asarray((value.T if transpose else value).astype(dtype))

    full = tuple(slice(None) for _ in shape)
    if target is None:
        return jnp.asarray(part(full))
    return jax.make_array_from_callback(shape, target, lambda index: part(index or full))


def _checkpoint_tensors(path: Path, **overrides) -> tuple[Any, dict[str, Any], str]:
    """(our config, HF tensor name -> slice reader, source description) of a ``.gguf`` file or an
    HF directory; a slice reader has ``get_shape()`` and ``[index]`` (HF layout)."""
    if path.suffix == ".gguf":
        from jaxrec.models.gguf_io import GGUFCheckpoint

        gguf = GGUFCheckpoint(path)
        hf = gguf.hf_config()
        tensors = gguf.tensors(hf)
        return config_from_hf(hf, set(tensors), source=str(path), **overrides), tensors, str(path)
    if path.is_file():
        raise JaxrecError(f"{path}: expected an HF model directory (config.json + safetensors) or a .gguf file")
    hf = read_hf_config(path)
    files = weight_files(path)
    handles: dict[Path, Any] = {}
    for file in set(files.values()):
        try:
            handles[file] = safe_open(str(file), framework="flax")
        except Exception as e:  # safetensors raises its own error types on damage
            raise JaxrecError(f"{file}: not a readable safetensors file: {e}") from None
    tensors = {name: handles[file].get_slice(name) for name, file in files.items()}
    return config_from_hf(hf, set(files), source=str(path / "config.json"), **overrides), tensors, str(path)


def load_pretrained(path: str | Path, dtype: str = "float32", param_dtype: str | None = None,
                    sharding: Sharding | None = None):
    """Load a pretrained checkpoint as a jaxrec model: an HF directory (config.json + safetensors),
    a ``.gguf`` file (dequantized at load) or a named small checkpoint (``"smollm2-135m"``,
    ``"minilm-l6"``; see :mod:`jaxrec.models.checkpoints`).

    dtype: compute dtype; param_dtype: storage dtype (default: dtype).
    sharding: None (default device), a callable ``(logical_axes, shape) -> jax.sharding.Sharding``,
    or a pytree of shardings shaped like ``nnx.state(model, nnx.Param)``. With a sharding, every
    process reads only the slices its devices hold (``jax.make_array_from_callback``).
    """
    from jaxrec.models.checkpoints import resolve_pretrained

    path = resolve_pretrained(path)
    config, tensors, source = _checkpoint_tensors(path, dtype=dtype, param_dtype=param_dtype or dtype)
    target_dtype = as_dtype(config.param_dtype)
    abstract = nnx.eval_shape(lambda: build_model(config))  # shapes only, no random init
    graphdef, state = nnx.split(abstract, nnx.Param)
    flat_sharding = (None if sharding is None or callable(sharding)
                     else dict(nnx.to_flat_state(sharding)))
    loaded = []
    for var_path, variable in nnx.to_flat_state(state):
        name = type(abstract).hf_name(var_path)
        if name not in tensors and "bert." + name in tensors:  # BertFor* nest the encoder
            name = "bert." + name
        if name not in tensors:
            raise JaxrecError(f"{source}: tensor {name!r} missing from the checkpoint "
                              f"(needed by {config.model_type})")
        tensor_slice = tensors[name]
        transpose = var_path[-1] == "kernel"
        shape = tuple(tensor_slice.get_shape())[::-1 if transpose else 1]
        if shape != tuple(variable.shape):
            raise JaxrecError(f"{source}: tensor {name!r} has shape {shape} (as our "
                              f"{'transposed ' if transpose else ''}layout), expected "
                              f"{tuple(variable.shape)} from the checkpoint's config")
        target = _target_sharding(sharding, flat_sharding, var_path, variable)
        value = _read(tensor_slice, transpose, target_dtype, shape, target)
        loaded.append((var_path, variable.replace(value)))
    return nnx.merge(graphdef, nnx.from_flat_state(loaded))


def _shards(tensors: dict[str, np.ndarray], max_shard_bytes: int) -> list[dict[str, np.ndarray]]:
    """Split tensors (in name order) into groups of at most max_shard_bytes (a bigger tensor alone)."""
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name in sorted(tensors):
        nbytes = tensors[name].nbytes
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensors[name]
        size += nbytes
    return shards


def save_pretrained(model, path: str | Path, dtype: str | None = None,
                    max_shard_bytes: int = 5 * 2**30) -> Path:
    """Write ``model`` into HF directory ``path``: config.json + model.safetensors, or
    model-0000i-of-0000n.safetensors + model.safetensors.index.json above ``max_shard_bytes``.

    dtype: storage dtype of the tensors (default: the parameter dtype). Each file is written
    atomically; other files in ``path`` (a tokenizer) are kept, stale weight files removed.
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
    path.mkdir(parents=True, exist_ok=True)
    old_files = [path / INDEX_FILE, path / SINGLE_FILE, *path.glob("model-*-of-*.safetensors")]
    shards = _shards(tensors, max_shard_bytes)
    names = ([SINGLE_FILE] if len(shards) == 1 else
             [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
    for name, shard in zip(names, shards):
        with atomic_file(path / name, "wb") as f:
            save_file(shard, f.name, metadata={"format": "pt"})
    if len(shards) > 1:
        index = {"metadata": {"total_size": sum(t.nbytes for t in tensors.values())},
                 "weight_map": {t: name for name, shard in zip(names, shards) for t in shard}}
        with atomic_file(path / INDEX_FILE) as f:
            f.write(json.dumps(index, indent=2, sort_keys=True) + "\n")
    with atomic_file(path / "config.json") as f:
        f.write(json.dumps(hf, indent=2, sort_keys=True) + "\n")
    kept = set(names) | ({INDEX_FILE} if len(shards) > 1 else set())
    for stale in old_files:
        if stale.name not in kept:
            stale.unlink(missing_ok=True)
    return path
