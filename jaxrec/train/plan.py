"""Memory planner: per-device bytes of a training run (and of beam decoding) before anything launches.

Input: a YAML of its own shape, or a method config (``method: bigrec`` ...; the ``configs/scale/`` files),
whose ``model:`` is the method's (a ``pretrained`` checkpoint) and whose ``plan.architecture`` gives the
planner's model section below (or, when it is absent, the local ``model.pretrained``'s config.json is
used); ``plan`` and ``decode`` are the planner's own sections, which training ignores. The planner
reads only these keys and ignores the other top-level sections::

    model:                        # exactly one of preset / hf_config / type
      preset: llama3-8b           # see PRESETS: llama3-8b, llama2-7b, qwen2-7b, qwen2-0.5b, flan-t5-xl, ...
      hf_config: path/config.json # an HF config.json (or the model directory holding it)
      type: llama                 # an HF model_type of the model registry (llama | qwen2 | mistral | t5),
                                  # with every architecture field in arch
      arch: {vocab_size: 152064}  # config fields (LlamaConfig / T5Config) set over the preset / HF config
    train: {...}                  # jaxrec.train.config.TrainConfig: batch_size, grad_accum, data.seq_len,
                                  # lora, mesh, compute_dtype, remat (the activation recompute planned for)
    decode: {batch_size: 8, prompt_len: 256, num_beams: 20, max_new_tokens: 5}   # optional
    plan:                         # optional: the target (command-line --devices / --device-memory win)
      accelerator: v5p-8          # devices (chips) and memory per chip from ACCELERATORS
      devices: 4                  # devices the mesh is laid over (else accelerator, else this host's)
      device_memory_gib: 95       # else the accelerator's, else the local accelerator's limit
      usable_fraction: 0.9        # share of device memory a plan may fill (XLA runtime, fragmentation)
      target_len: 64              # encoder-decoders only: decoder (target) tokens per training row

Estimate (bytes per device; p = bytes of ``train.compute_dtype``, t = mesh.tensor; a dimension is
divided by t only when it divides, as the sharding rules do):

* parameters: every parameter of the model built abstractly (``nnx.eval_shape``, LoRA applied as the
  trainer does), sharded by :data:`~jaxrec.parallel.rules.DEFAULT_RULES` over the mesh. Frozen weights
  are held in the compute dtype (LoRA mode), trained ones as fp32 masters plus, when p < 4, their
  compute-dtype copy made inside the step.
* optimizer: AdamW ``mu`` and ``nu``, fp32, sharded like the trained parameters (2 x 4 bytes each).
* gradients: fp32 like the trained parameters; twice that with ``grad_accum > 1`` (the accumulator).
* fsdp gather (fsdp > 1): two gathered copies of the largest layer (or embedding/head) in the compute
  dtype, the current one and the prefetched next one.
* activations of the per-device micro-batch (``batch_size / grad_accum / (data*fsdp)`` rows of ``seq_len``)
  as saved for the backward pass under ``train.remat`` (none | dots_with_no_batch_dims | dots | full): the
  architecture's registry row (:mod:`jaxrec.models.registry`) gives them, per token and layer, e.g.
  :func:`jaxrec.models.llama.activation_bytes`, :func:`jaxrec.models.t5.activation_bytes`.
* logits: per predicted token (an encoder-decoder predicts ``plan.target_len`` per row), V/t fp32 logits
  and their fp32 gradient (+ the compute-dtype matmul output when p < 4).
* decode (optional): parameters in the compute dtype; the prompt's K/V stored once per user (Llama: the
  prompt KV cache; T5: every decoder layer's cross-attention K/V), L*2*P*kv*p per user, and the per-beam
  cache of generated tokens, L*2*K*G*kv*p per user (L layers and kv width from the row's ``decode_cache``);
  plus the larger of the prefill's attention scores (P*P*h*8 per user) and a step's logits (K*V*4*3 per user).

Validated against XLA (tests/test_plan_memory.py): for tiny float32 configs on 8 CPU devices (data and
tensor meshes) the train-phase total is within 15% of the compiled train step's
``argument + output - alias + temp`` bytes from ``memory_analysis()``. bfloat16 is not validated on
CPU (XLA:CPU upcasts bf16 arithmetic to fp32, so its buffers are not those of a TPU/GPU).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
from pathlib import Path
from typing import Any

from flax import nnx

from jaxrec.config import apply_overrides, from_dict, read_yaml
from jaxrec.errors import ConfigError, JaxrecError
from jaxrec.models.lora import LoraConfig, apply_lora, check_trainable, trainable_filter
from jaxrec.models.registry import MODEL_TYPES, Architecture, build_model, config_from_hf, for_config, for_model_type
from jaxrec.parallel.rules import logical_to_spec, tensor_share, variable_axes
from jaxrec.train.config import TrainConfig

GIB = 1024 ** 3

#: named architectures: preset -> (HF model_type, config fields) of the public checkpoints
PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "llama3-8b": ("llama", dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_layers=32,
                                num_heads=32, num_kv_heads=8, head_dim=128, rope_theta=500000.0)),
    "llama2-7b": ("llama", dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_layers=32,
                                num_heads=32, num_kv_heads=32, head_dim=128)),
    "qwen2-7b": ("qwen2", dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_layers=28,
                               num_heads=28, num_kv_heads=4, head_dim=128, qkv_bias=True)),
    "qwen2-0.5b": ("qwen2", dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_layers=24,
                                 num_heads=14, num_kv_heads=2, head_dim=64, qkv_bias=True,
                                 tie_word_embeddings=True)),
    "flan-t5-xl": ("t5", dict(vocab_size=32128, d_model=2048, d_kv=64, d_ff=5120, num_layers=24,
                              num_decoder_layers=24, num_heads=32, feed_forward_proj="gated-gelu")),
    "flan-t5-base": ("t5", dict(vocab_size=32128, d_model=768, d_kv=64, d_ff=2048, num_layers=12,
                                num_decoder_layers=12, num_heads=12, feed_forward_proj="gated-gelu")),
    "tiny-llama": ("llama", dict(vocab_size=2048, hidden_size=128, intermediate_size=384, num_layers=2,
                                 num_heads=4, num_kv_heads=2, head_dim=32)),
    "tiny-t5": ("t5", dict(vocab_size=2048, d_model=128, d_kv=32, d_ff=384, num_layers=2, num_decoder_layers=2,
                           num_heads=4, feed_forward_proj="gated-gelu")),
}

#: accelerator -> (memory per device in GiB, TensorCores per chip or None for GPUs). A TPU name
#: ``v5p-8`` counts TensorCores for v4/v5p (2 per chip, one JAX device per chip) and chips otherwise.
ACCELERATORS: dict[str, tuple[float, int | None]] = {
    "v4": (32.0, 2), "v5p": (95.0, 2), "v5litepod": (16.0, 1), "v5e": (16.0, 1), "v6e": (32.0, 1),
    "a100-40gb": (40.0, None), "a100": (80.0, None), "h100": (80.0, None), "h200": (141.0, None),
    "l4": (24.0, None), "a10g": (24.0, None),
}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Which architecture: a preset, an HF config.json, or a ``type`` (an HF model_type of the registry) with
    every field in ``arch``."""

    preset: str | None = None
    hf_config: str | None = None
    type: str | None = None
    arch: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        given = [k for k in ("preset", "hf_config", "type") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of preset, hf_config, type (got {given or 'none'})")
        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; expected one of {sorted(PRESETS)}")
        if self.type is not None:
            try:
                plannable(for_model_type(self.type, "type"))
            except JaxrecError as e:
                raise ValueError(str(e)) from None


@dataclasses.dataclass(frozen=True)
class DecodeSpec:
    """Beam decoding shapes: users per batch, left-padded prompt length, beams, generated tokens."""

    batch_size: int = 8
    prompt_len: int = 256
    num_beams: int = 20
    max_new_tokens: int = 5


@dataclasses.dataclass(frozen=True)
class TargetSpec:
    """Where the run goes (the ``plan:`` section) and an encoder-decoder's decoder length of a training row."""

    accelerator: str | None = None
    devices: int | None = None
    device_memory_gib: float | None = None
    usable_fraction: float = 0.9
    target_len: int = 64

    def __post_init__(self):
        if not 0.0 < self.usable_fraction <= 1.0:
            raise ValueError(f"usable_fraction must be in (0, 1], got {self.usable_fraction}")
        if self.accelerator is not None:
            accelerator_spec(self.accelerator)


@dataclasses.dataclass(frozen=True)
class PlanConfig:
    """The planner's input (see the module docstring)."""

    model: ModelSpec
    train: TrainConfig = TrainConfig()
    decode: DecodeSpec | None = None
    plan: TargetSpec = TargetSpec()


@dataclasses.dataclass(frozen=True)
class Component:
    """One line of a plan: ``bytes`` per device and what would shrink it."""

    name: str
    bytes: int
    remedy: str


@dataclasses.dataclass(frozen=True)
class Phase:
    """The memory of one phase (``train`` or ``decode``), all parts live at the same time."""

    name: str
    shape: str  # a human description of the batch shapes
    components: tuple[Component, ...]

    @property
    def total(self) -> int:
        return sum(c.bytes for c in self.components)

    @property
    def biggest(self) -> Component:
        return max(self.components, key=lambda c: c.bytes)


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    """Per-device estimate of each phase against the device memory (None: unknown, nothing checked)."""

    model: str
    devices: int
    mesh: dict[str, int]
    params: int
    trained_params: int
    device_memory: int | None
    usable_fraction: float
    phases: tuple[Phase, ...]

    @property
    def limit(self) -> int | None:
        return None if self.device_memory is None else int(self.device_memory * self.usable_fraction)

    def fits(self) -> bool:
        return self.limit is None or all(p.total <= self.limit for p in self.phases)

    def check(self) -> None:
        """Raise :class:`JaxrecError` naming the biggest part of the first phase that does not fit."""
        for phase in self.phases:
            if self.limit is not None and phase.total > self.limit:
                big = phase.biggest
                raise JaxrecError(
                    f"{phase.name} needs {_gib(phase.total)} per device but {_gib(self.limit)} of the "
                    f"{_gib(self.device_memory)} device memory is usable ({self.usable_fraction:.0%}); the biggest "
                    f"part is {big.name} ({_gib(big.bytes)}): try {big.remedy}")

    def to_json(self) -> dict:
        return {
            "model": self.model, "devices": self.devices, "mesh": self.mesh, "params": self.params,
            "trained_params": self.trained_params, "device_memory_bytes": self.device_memory,
            "usable_bytes": self.limit, "fits": self.fits(),
            "phases": {p.name: {"shape": p.shape, "total_bytes": p.total,
                                "components": {c.name: c.bytes for c in p.components}} for p in self.phases},
        }

    def table(self) -> str:
        mesh = " ".join(f"{k}={v}" for k, v in self.mesh.items())
        memory = ("device memory unknown (pass --device-memory GiB)" if self.device_memory is None else
                  f"device memory {_gib(self.device_memory)} ({_gib(self.limit)} usable)")
        lines = [f"{self.model}: {self.params / 1e9:.3f} B params, {self.trained_params / 1e6:.2f} M trained; "
                 f"{self.devices} devices, mesh {mesh}; {memory}"]
        width = max(len(c.name) for p in self.phases for c in p.components) + 2
        for phase in self.phases:
            lines.append(f"\n{phase.name} ({phase.shape})")
            lines += [f"  {c.name:<{width}}{_gib(c.bytes):>12}" for c in phase.components]
            verdict = "" if self.limit is None else ("  fits" if phase.total <= self.limit else "  DOES NOT FIT")
            lines.append(f"  {'total per device':<{width}}{_gib(phase.total):>12}{verdict}")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------- inputs
#: top-level sections a method config carries for the planner only (training and evaluation skip them)
PLANNER_SECTIONS = ("plan", "decode")


def _method_config_view(data: dict, where: str) -> dict:
    """The planner's sections of a method config: ``plan.architecture`` (or the local ``model.pretrained``'s
    config.json) as ``model``; ``train``, ``decode`` and the rest of ``plan`` as they are."""
    target = dict(data.get("plan") or {})
    architecture = target.pop("architecture", None)
    if architecture is None:
        pretrained = (data.get("model") or {}).get("pretrained")
        if pretrained and (Path(pretrained) / "config.json").is_file():
            architecture = {"hf_config": str(pretrained)}
        else:
            raise ConfigError(f"{where}: plan.architecture: missing; a method config names the architecture to plan "
                              f"for (e.g. plan: {{architecture: {{preset: llama3-8b}}}}) unless model.pretrained is a "
                              f"local directory with a config.json")
    view = {"model": architecture, "train": data.get("train") or {}, "plan": target}
    if data.get("decode") is not None:
        view["decode"] = data["decode"]
    return view


def load_plan_config(path: str | Path, overrides=()) -> tuple[PlanConfig, list[str]]:
    """Read the planner's sections from a YAML file (a planner or a method config), then ``--set``; returns
    (config, ignored sections)."""
    data = apply_overrides(read_yaml(path), overrides)
    if isinstance(data.get("method"), str):
        view = _method_config_view(data, str(path))
        return from_dict(PlanConfig, view, where=str(path)), []
    keys = {f.name for f in dataclasses.fields(PlanConfig)}
    if "model" not in data:
        raise ConfigError(f"{path}: missing 'model' section (e.g. model: {{preset: llama3-8b}}; presets: "
                          f"{', '.join(sorted(PRESETS))})")
    config = from_dict(PlanConfig, {k: v for k, v in data.items() if k in keys}, where=str(path))
    return config, sorted(set(data) - keys)


def accelerator_spec(name: str) -> tuple[float, int | None]:
    """``v5p-8`` -> (95.0, 4 devices); ``h100`` -> (80.0, None). Unknown names are a ConfigError."""
    match = re.fullmatch(r"([a-z0-9]+?(?:-40gb)?)(?:-(\d+))?", name.lower())
    kind, count = (match.group(1), match.group(2)) if match else (name, None)
    if kind not in ACCELERATORS:
        raise ConfigError(f"accelerator {name!r}: unknown; expected one of {sorted(ACCELERATORS)} "
                          f"(TPUs with their size, e.g. v5p-8, v4-32)")
    gib, cores_per_chip = ACCELERATORS[kind]
    if cores_per_chip is None or count is None:
        return gib, None
    if int(count) % cores_per_chip:
        raise ConfigError(f"accelerator {name!r}: {kind} sizes count TensorCores, a multiple of {cores_per_chip}")
    return gib, int(count) // cores_per_chip


def plannable(row: Architecture) -> Architecture:
    """``row`` if the planner has its estimates (``activation_bytes``, ``decode_cache``), else a clear error."""
    if row.activation_bytes is None or row.decode_cache is None:
        raise ConfigError(f"model: the model registry has no planner estimate for {row.name}; plannable model "
                          f"types: {', '.join(planner_model_types())}")
    return row


def planner_model_types() -> list[str]:
    """HF model_types the planner estimates (those of registry rows with the planner's functions)."""
    return [t for t, row in MODEL_TYPES.items() if row.activation_bytes is not None and row.decode_cache is not None]


def resolve_model(spec: ModelSpec):
    """The model config (LlamaConfig, T5Config, ...) described by ``spec``."""
    try:
        if spec.preset is not None:
            model_type, fields = PRESETS[spec.preset]
            return for_model_type(model_type).config(model_type=model_type, **{**fields, **spec.arch})
        if spec.hf_config is not None:
            path = Path(spec.hf_config)
            path = path / "config.json" if path.is_dir() else path
            if not path.is_file():
                raise ConfigError(f"model.hf_config: {path} not found (an HF config.json or its directory)")
            try:
                hf = json.loads(path.read_text())
            except json.JSONDecodeError as e:
                raise ConfigError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
            untied = {"lm_head.weight"} if hf.get("tie_word_embeddings") is False else set()
            return config_from_hf(hf, untied, source=str(path), **spec.arch)
        return for_model_type(spec.type).config(model_type=spec.type, **spec.arch)
    except TypeError as e:  # unknown or missing architecture field
        raise ConfigError(f"model.arch: {e}") from None


# ------------------------------------------------------------------------------------ parameters
@dataclasses.dataclass(frozen=True)
class ParamInfo:
    path: tuple
    shape: tuple[int, ...]
    axes: tuple | None
    trained: bool


def parameter_inventory(arch, lora: LoraConfig) -> list[ParamInfo]:
    """Every parameter of the model (LoRA applied as the trainer does), built without allocating."""
    def build():
        model = build_model(arch)
        apply_lora(model, lora)
        return model

    model = nnx.eval_shape(build)
    check_trainable(model, lora)
    trained = {path for path, _ in nnx.to_flat_state(nnx.state(model, trainable_filter(lora)))}
    return [ParamInfo(path, tuple(v.shape), variable_axes(v), path in trained)
            for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))]


def _mesh_like(shape: dict[str, int]) -> Any:
    return types.SimpleNamespace(shape=shape)  # all that the sharding rules read from a Mesh


def shard_elements(info: ParamInfo, mesh_shape: dict[str, int]) -> int:
    """Elements of the parameter held by one device under the default logical-axis rules."""
    spec = logical_to_spec(info.axes, info.shape, _mesh_like(mesh_shape))
    count = 1
    for i, size in enumerate(info.shape):
        axes = spec[i] if i < len(spec) else None
        axes = () if axes is None else (axes,) if isinstance(axes, str) else axes
        count *= size // math.prod(mesh_shape[a] for a in axes)
    return count


def _layer_key(path: tuple) -> tuple:
    """Group parameters by block: the path up to its first integer (a layer index), else the path."""
    for i, part in enumerate(path):
        if isinstance(part, int):
            return tuple(path[: i + 1])
    return tuple(path)


# ---------------------------------------------------------------------------------------- planner
REMEDY_PARAMS = "sharding the weights over more devices (train.mesh.fsdp), or train.compute_dtype=bfloat16"
REMEDY_TRAINED = "more fsdp (train.mesh.fsdp), or LoRA adapters (train.lora.mode=lora) instead of every weight"
REMEDY_LOGITS = "a smaller micro-batch (raise train.grad_accum) or sharding the vocabulary (train.mesh.tensor)"
REMEDY_CACHE = "a smaller decode.batch_size or fewer decode.num_beams, or more devices on the data axes"


def _activation_remedy(remat: str) -> str:
    return ("a smaller micro-batch (raise train.grad_accum / lower train.batch_size), a shorter train.data.seq_len"
            + (", or recomputing layers in the backward pass (train.remat=full)"
               if remat != "full" else ""))


def estimate(config: PlanConfig, *, devices: int | None = None, device_memory_gib: float | None = None) -> MemoryPlan:
    """The per-device memory plan of ``config`` (``devices`` / ``device_memory_gib`` override it)."""
    acc_gib, acc_devices = accelerator_spec(config.plan.accelerator) if config.plan.accelerator else (None, None)
    devices = devices or config.plan.devices or acc_devices or _local_device_count()
    gib = device_memory_gib or config.plan.device_memory_gib or acc_gib
    memory = int(gib * GIB) if gib else _local_device_memory()
    train = config.train
    data, fsdp, tensor = train.mesh.shape(devices)
    mesh = {"data": data, "fsdp": fsdp, "tensor": tensor}
    arch = resolve_model(config.model)
    row = plannable(for_config(arch))
    inventory = parameter_inventory(arch, train.lora)
    p = 2 if train.compute_dtype == "bfloat16" else 4
    frozen = sum(shard_elements(i, mesh) for i in inventory if not i.trained) * (p if train.lora.mode == "lora" else 4)
    trained = sum(shard_elements(i, mesh) for i in inventory if i.trained)

    remat = train.remat
    trained_names = {str(part) for i in inventory if i.trained for part in i.path}
    shards = data * fsdp
    if train.batch_size % (shards * train.grad_accum):
        raise ConfigError(f"train.batch_size={train.batch_size} must split into grad_accum={train.grad_accum} "
                          f"micro-batches that each divide across the {shards} data shards (data x fsdp)")
    rows = train.batch_size // (shards * train.grad_accum)
    seq, target_len = train.data.seq_len, config.plan.target_len
    acts = row.activation_bytes(arch, rows, seq, target_len, p, tensor, remat, trained_names)
    if row.encoder_decoder:
        lm_tokens = rows * target_len
        shape = f"{train.batch_size} rows x {seq} input + {target_len} target tokens"
    else:
        lm_tokens = rows * seq
        shape = f"{train.batch_size} rows x {seq} tokens"
    shape += (f", micro-batch {rows} rows per device, grad_accum {train.grad_accum}, remat {remat}, "
              f"{train.compute_dtype}")
    logits = lm_tokens * tensor_share(arch.vocab_size, tensor) * (8 + (p if p < 4 else 0))
    parts = [Component(f"params (frozen, {train.compute_dtype})", frozen, REMEDY_PARAMS)] if frozen else []
    parts.append(Component("params (trained, fp32 master)", trained * 4, REMEDY_TRAINED))
    if p < 4:
        parts.append(Component(f"params (trained, {train.compute_dtype} copy)", trained * p, REMEDY_TRAINED))
    parts += [Component("optimizer (AdamW mu+nu, fp32)", trained * 8, REMEDY_TRAINED),
              Component("gradients (fp32" + (" + accumulator)" if train.grad_accum > 1 else ")"),
                        trained * 4 * (2 if train.grad_accum > 1 else 1), REMEDY_TRAINED)]
    if fsdp > 1:
        unsharded = {"data": data, "fsdp": 1, "tensor": tensor}
        blocks: dict[tuple, int] = {}
        for info in inventory:
            key = _layer_key(info.path)
            blocks[key] = blocks.get(key, 0) + shard_elements(info, unsharded) * p
        parts.append(Component("fsdp all-gather (2 layers)", 2 * max(blocks.values()),
                               "more tensor parallelism (train.mesh.tensor) for very large layers"))
    parts += [Component(f"activations (remat={remat})", int(acts), _activation_remedy(remat)),
              Component("logits + grad (fp32)", int(logits), REMEDY_LOGITS)]
    phases = [Phase("train", shape, tuple(parts))]
    if config.decode is not None:
        all_params = sum(shard_elements(i, mesh) for i in inventory) * p
        phases.append(_decode_phase(arch, row, config.decode, all_params, p, shards, tensor, train.compute_dtype))
    kind = arch.model_type
    name = config.model.preset or (Path(config.model.hf_config).name if config.model.hf_config else kind)
    return MemoryPlan(model=f"{name} ({kind})", devices=devices, mesh=mesh,
                      params=sum(math.prod(i.shape) for i in inventory),
                      trained_params=sum(math.prod(i.shape) for i in inventory if i.trained),
                      device_memory=memory, usable_fraction=config.plan.usable_fraction, phases=tuple(phases))


def _decode_phase(arch, row: Architecture, dec: DecodeSpec, params: int, p: int, shards: int, t: int,
                  dtype: str) -> Phase:
    users = math.ceil(dec.batch_size / shards)
    k, g, prompt = dec.num_beams, dec.max_new_tokens, dec.prompt_len
    layers, kv, h = row.decode_cache(arch, t)
    prefix = users * prompt * layers * 2 * kv * p
    prefix_name = ("cross-attention K/V (per user, shared by beams)" if row.encoder_decoder else
                   "prompt KV cache (per user, shared by beams)")
    generated = users * k * g * layers * 2 * kv * p
    workspace = max(users * h * prompt * prompt * 8, users * k * tensor_share(arch.vocab_size, t) * 4 * 3)
    shape = (f"{dec.batch_size} users x {prompt} prompt tokens, {k} beams x {g} new tokens, "
             f"{users} users per device, {dtype}")
    return Phase("decode", shape, (
        Component(f"params ({dtype})", params, REMEDY_PARAMS),
        Component(prefix_name, int(prefix), REMEDY_CACHE),
        Component("generated KV cache (per beam)", int(generated), REMEDY_CACHE),
        Component("workspace (prefill scores / step logits)", int(workspace), REMEDY_CACHE)))


def _local_device_count() -> int:
    import jax

    return jax.device_count()


def _local_device_memory() -> int | None:
    """The memory limit of the local accelerator (None on CPU or when the runtime does not say)."""
    import jax

    device = jax.devices()[0]
    if device.platform == "cpu":
        return None
    stats = device.memory_stats() or {}
    return stats.get("bytes_limit")


def _gib(n: float | None) -> str:
    return "?" if n is None else f"{n / GIB:.2f} GiB"
