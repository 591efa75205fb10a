"""LoRA adapters in Hugging Face PEFT format, both ways (no torch needed).

A PEFT adapter directory holds ``adapter_config.json`` (``peft_type: LORA``, ``r``, ``lora_alpha``,
``lora_dropout``, ``target_modules``, ``modules_to_save`` ...) and ``adapter_model.safetensors`` with
tensors named after the HF module path::

    base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight   [r, in]   (= our lora_a.T)
    base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight   [out, r]  (= our lora_b.T)
    base_model.model.lm_head.weight                                   a fully trained extra

HF module names come from the model class's ``hf_name`` (the model zoo's checkpoint naming), so
any jaxrec model with HF interop works (Llama family, T5). Loading wraps exactly the modules that
have tensors in the file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors import safe_open
from safetensors.numpy import save_file

from jaxrec.atomic import atomic_file
from jaxrec.errors import ConfigError, JaxrecError
from jaxrec.models.lora import LoraConfig, _linear_modules, apply_lora, lora_modules, path_matches
from jaxrec.models.registry import is_seq2seq

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PREFIX = "base_model.model."


def _hf_module(model, path: tuple) -> str:
    """HF name of the linear module at ``path`` (our path of its ``kernel`` minus the param)."""
    return re.sub(r"\.weight$", "", type(model).hf_name(tuple(path) + ("kernel",)))


def _task_type(model) -> str:
    return "SEQ_2_SEQ_LM" if is_seq2seq(model) else "CAUSAL_LM"


def save_adapter(model: nnx.Module, path: str | Path, config: LoraConfig, base_model: str | None = None) -> Path:
    """Write the LoRA weights (+ ``config.trainable`` extras as ``modules_to_save``) of ``model``."""
    loras = lora_modules(model)
    if not loras:
        raise JaxrecError("save_adapter: the model has no LoRA modules (was apply_lora called?)")
    tensors: dict[str, np.ndarray] = {}
    for p, m in loras:
        name = PREFIX + _hf_module(model, p)
        tensors[name + ".lora_A.weight"] = np.asarray(jax.device_get(m.lora_a[...]), np.float32).T.copy()
        tensors[name + ".lora_B.weight"] = np.asarray(jax.device_get(m.lora_b[...]), np.float32).T.copy()
    extras = []
    for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        if config.trainable and any(path_matches(t, p) for t in config.trainable) and "base" not in p:
            value = np.asarray(jax.device_get(v[...]), np.float32)
            tensors[PREFIX + type(model).hf_name(p)] = (value.T if p[-1] == "kernel" else value).copy()
            extras.append(str(p[-2]) if p[-1] in ("kernel", "embedding") else str(p[-1]))
    hf_targets = sorted({_hf_module(model, p).split(".")[-1] for p, _ in loras})
    adapter_config = {
        "peft_type": "LORA", "task_type": _task_type(model), "r": config.rank, "lora_alpha": config.alpha,
        "lora_dropout": config.dropout, "target_modules": hf_targets, "bias": "none",
        "fan_in_fan_out": False, "modules_to_save": sorted(set(extras)) or None,
        "base_model_name_or_path": base_model, "inference_mode": True, "init_lora_weights": True,
        "use_rslora": False, "use_dora": False, "layers_to_transform": None, "layers_pattern": None,
        "rank_pattern": {}, "alpha_pattern": {},
    }
    path = Path(path)
    with atomic_file(path / WEIGHTS_FILE, "wb") as f:
        save_file(tensors, f.name, metadata={"format": "pt"})
    with atomic_file(path / CONFIG_FILE) as f:
        f.write(json.dumps(adapter_config, indent=2) + "\n")
    return path


def read_adapter_config(path: str | Path) -> dict:
    file = Path(path) / CONFIG_FILE
    if not file.is_file():
        raise ConfigError(f"{path}: no {CONFIG_FILE} (not a PEFT adapter directory)")
    cfg = json.loads(file.read_text())
    if cfg.get("peft_type") != "LORA":
        raise ConfigError(f"{file}: peft_type {cfg.get('peft_type')!r} is not supported (expected LORA)")
    for key in ("use_rslora", "use_dora"):
        if cfg.get(key):
            raise ConfigError(f"{file}: {key}=true is not supported")
    if cfg.get("rank_pattern") or cfg.get("alpha_pattern"):
        raise ConfigError(f"{file}: per-module rank_pattern / alpha_pattern are not supported")
    return cfg


def load_adapter(model: nnx.Module, path: str | Path) -> LoraConfig:
    """Wrap ``model`` with the adapter in ``path`` (in place); returns the equivalent LoraConfig."""
    path = Path(path)
    cfg = read_adapter_config(path)
    file = path / WEIGHTS_FILE
    if not file.is_file():
        raise ConfigError(f"{path}: no {WEIGHTS_FILE}")
    with safe_open(str(file), framework="numpy") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    by_hf = {_hf_module(model, p): p for p, _ in _linear_modules(model)}
    targets = sorted({re.sub(r"\.lora_[AB]\.weight$", "", k[len(PREFIX):]) for k in tensors if ".lora_" in k})
    missing = [t for t in targets if t not in by_hf]
    if missing:
        raise ConfigError(f"{file}: adapter module {missing[0]!r} does not exist in {type(model).__name__}")
    extras = [k for k in tensors if ".lora_" not in k]
    param_by_hf = {type(model).hf_name(p): p for p, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    lora = LoraConfig(
        rank=int(cfg["r"]), alpha=float(cfg["lora_alpha"]), dropout=float(cfg.get("lora_dropout") or 0.0),
        target_modules=tuple(re.escape(".".join(map(str, by_hf[t]))) for t in targets),
        trainable=tuple(re.escape(".".join(map(str, param_by_hf[k[len(PREFIX):]]))) for k in extras
                        if k[len(PREFIX):] in param_by_hf))
    unknown = [k for k in extras if k[len(PREFIX):] not in param_by_hf]
    if unknown:
        raise ConfigError(f"{file}: tensor {unknown[0]!r} matches no parameter of {type(model).__name__}")
    apply_lora(model, lora)
    for p, m in lora_modules(model):
        name = PREFIX + _hf_module(model, p)
        a, b = tensors[name + ".lora_A.weight"].T, tensors[name + ".lora_B.weight"].T
        if a.shape != m.lora_a.shape or b.shape != m.lora_b.shape:
            raise ConfigError(f"{file}: {name} lora shapes {a.shape}/{b.shape} do not match the model's "
                              f"{m.lora_a.shape}/{m.lora_b.shape}")
        m.lora_a[...] = jnp.asarray(a, m.lora_a.dtype)
        m.lora_b[...] = jnp.asarray(b, m.lora_b.dtype)
    state = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
    for k in extras:
        p = param_by_hf[k[len(PREFIX):]]
        p = _rebase(p, state)
        value = tensors[k].T if p[-1] == "kernel" else tensors[k]
        if value.shape != state[p].shape:
            raise ConfigError(f"{file}: {k} has shape {value.shape}, the model expects {state[p].shape}")
        state[p][...] = jnp.asarray(value, state[p].dtype)
    return lora


def _rebase(path: tuple, state: dict) -> tuple:
    """The path of a parameter after LoRA wrapping (a wrapped kernel moves under ``base``)."""
    if path in state:
        return path
    return path[:-1] + ("base", path[-1])
