"""LoRA (low-rank adaptation) for any NNX model whose linear layers hold a ``kernel`` [in, out].

``apply_lora(model, config)`` replaces each targeted linear module by :class:`LoRALinear`, which
keeps the original module as ``base`` and adds ``lora_a`` [in, r] and ``lora_b`` [r, out]:
``y = base(x) + dropout(x) @ A @ B * (alpha / r)``. A and B inherit the base kernel's logical axis
on their non-rank dimension (``lora_a``: (in_axis, "lora_rank"), ``lora_b``: ("lora_rank", out_axis)),
so they shard like the weight they adapt. ``B`` starts at zero: a fresh adapter leaves the model
unchanged.

What is trained is decided by :func:`trainable_filter` (LoRA weights + ``LoraConfig.trainable``
extras, or every ``nnx.Param`` in ``mode: full``); :func:`row_masks` restricts vocabulary
parameters to the rows of newly added tokens.

Module/parameter patterns (``target_modules``, ``trainable``) match a module or parameter when the
pattern equals one component of its dotted path (HF PEFT's plain names: ``q_proj``, ``lm_head``) or
fully matches the whole dotted path as a regular expression (``.*layers\\.[0-3]\\..*q_proj``).
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Annotated, Any, Iterable, Literal, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxrec.config import Range, check_ranges
from jaxrec.errors import ConfigError
from jaxrec.parallel.rules import variable_axes


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    """What is trained (the ``train.lora`` section): LoRA adapters (``mode: lora``) or every parameter (``mode: full``).

    ``target_modules``: regular expressions matched (``re.search``) against the dotted module path,
    e.g. ``q_proj`` or ``layers\\.\\d+\\.self_attn\\.(q|v)_proj$``; HF PEFT's plain names work as-is.
    ``trainable``: path patterns of extra parameters trained in full (e.g. ``embed_tokens``,
    ``lm_head``). ``new_token_rows_from``: if set, only rows >= this index of the vocabulary
    parameters matched by ``trainable`` are updated (LC-Rec's added item tokens).
    """

    mode: Literal["lora", "full"] = "lora"
    rank: Annotated[int, Range(min=1)] = 8
    alpha: Annotated[float, Range(min=0, min_open=True)] = 16.0
    dropout: Annotated[float, Range(min=0, max=1, max_open=True)] = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    trainable: tuple[str, ...] = ()
    new_token_rows_from: Annotated[int | None, Range(min=0)] = None

    def __post_init__(self):
        check_ranges(self)

    @property
    def scale(self) -> float:
        """The LoRA scaling alpha / rank."""
        return self.alpha / self.rank


class LoraWeight(nnx.Param):
    """A LoRA adapter parameter (the default trainable set in ``mode: lora``)."""


class LoRALinear(nnx.Module):
    """``base(x) + dropout(x) @ lora_a @ lora_b * scale`` around a linear module with ``kernel`` [in,out]."""

    def __init__(self, base: nnx.Module, rank: int, alpha: float, dropout: float, *, rngs: nnx.Rngs):
        kernel = base.kernel
        in_dim, out_dim = kernel.shape
        in_axis, out_axis = variable_axes(kernel) or (None, None)
        bound = 1.0 / math.sqrt(in_dim)  # kaiming-uniform(a=sqrt(5)), as HF PEFT initializes A
        self.base = base
        self.lora_a = LoraWeight(
            jax.random.uniform(rngs.params(), (in_dim, rank), jnp.float32, -bound, bound),
            out_sharding=(in_axis, "lora_rank"), eager_sharding=False)
        self.lora_b = LoraWeight(jnp.zeros((rank, out_dim), jnp.float32),
                                 out_sharding=("lora_rank", out_axis), eager_sharding=False)
        self.scale = alpha / rank
        self.dropout = nnx.Dropout(dropout, rngs=rngs) if dropout > 0 else None
        self.merged = False

    def __call__(self, x: jax.Array, *args, **kwargs) -> jax.Array:
        y = self.base(x, *args, **kwargs)
        if self.merged:
            return y
        h = self.dropout(x) if self.dropout is not None else x
        a = self.lora_a[...].astype(h.dtype)
        b = self.lora_b[...].astype(h.dtype)
        return y + ((h @ a) @ b * self.scale).astype(y.dtype)

    def delta(self) -> jax.Array:
        """The weight update ``A @ B * scale`` [in, out] (fp32)."""
        return (self.lora_a[...].astype(jnp.float32) @ self.lora_b[...].astype(jnp.float32)) * self.scale

    def merge(self) -> None:
        """Fold the adapter into ``base.kernel`` (inference speed); :meth:`unmerge` undoes it."""
        if not self.merged:
            k = self.base.kernel
            k[...] = (k[...].astype(jnp.float32) + self.delta()).astype(k.dtype)
            self.merged = True

    def unmerge(self) -> None:
        if self.merged:
            k = self.base.kernel
            k[...] = (k[...].astype(jnp.float32) - self.delta()).astype(k.dtype)
            self.merged = False


def path_matches(pattern: str, path: Sequence[Any]) -> bool:
    """True when ``pattern`` equals a component of ``path`` or fully matches its dotted form."""
    parts = [str(p) for p in path]
    return pattern in parts or re.fullmatch(pattern, ".".join(parts)) is not None


def _linear_modules(model: nnx.Module) -> Iterable[tuple[tuple, nnx.Module]]:
    for path, module in nnx.iter_modules(model):
        kernel = getattr(module, "kernel", None)
        if path and isinstance(kernel, nnx.Param) and kernel.ndim == 2 and not isinstance(module, LoRALinear):
            yield path, module


def apply_lora(model: nnx.Module, config: LoraConfig, *, seed: int = 0) -> list[str]:
    """Wrap the targeted linear modules of ``model`` in place; returns their dotted paths.

    Raises ConfigError (before anything is compiled) when a target pattern matches no module.
    """
    if config.mode != "lora":
        return []
    linears = list(_linear_modules(model))
    for pattern in config.target_modules:
        if not any(path_matches(pattern, p) for p, _ in linears):
            names = sorted({str(p[-1]) for p, _ in linears})
            raise ConfigError(
                f"lora.target_modules: '{pattern}' matches no linear module of {type(model).__name__}; "
                f"linear module names are {names}")
    rngs = nnx.Rngs(params=seed, dropout=seed + 1)
    wrapped = []
    for path, module in linears:
        if any(path_matches(p, path) for p in config.target_modules):
            _set_child(model, path, LoRALinear(module, config.rank, config.alpha, config.dropout, rngs=rngs))
            wrapped.append(".".join(map(str, path)))
    return wrapped


def _set_child(model: nnx.Module, path: tuple, child: nnx.Module) -> None:
    parent = model
    for key in path[:-1]:
        parent = parent[key] if isinstance(key, int) else getattr(parent, key)
    if isinstance(path[-1], int):
        parent[path[-1]] = child
    else:
        setattr(parent, path[-1], child)


def lora_modules(model: nnx.Module) -> list[tuple[tuple, LoRALinear]]:
    return [(p, m) for p, m in nnx.iter_modules(model) if isinstance(m, LoRALinear)]


def merge_lora(model: nnx.Module) -> None:
    for _, m in lora_modules(model):
        m.merge()


def unmerge_lora(model: nnx.Module) -> None:
    for _, m in lora_modules(model):
        m.unmerge()


def remove_lora(model: nnx.Module, merge: bool = True) -> None:
    """Put the base modules back (after merging the adapters into them unless ``merge=False``)."""
    for path, m in lora_modules(model):
        if merge:
            m.merge()
        elif m.merged:
            m.unmerge()
        _set_child(model, path, m.base)


def trainable_filter(config: LoraConfig):
    """The NNX filter selecting trained parameters for ``config``."""
    if config.mode == "full":
        return nnx.Param
    extras = tuple(config.trainable)

    def is_trainable(path, value) -> bool:
        if isinstance(value, LoraWeight):
            return True
        return isinstance(value, nnx.Param) and any(path_matches(p, path) for p in extras)

    return is_trainable


def check_trainable(model: nnx.Module, config: LoraConfig) -> None:
    """Raise ConfigError when a ``trainable`` pattern matches no parameter."""
    paths = [p for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))]
    for pattern in config.trainable:
        if not any(path_matches(pattern, p) for p in paths):
            raise ConfigError(f"lora.trainable: '{pattern}' matches no parameter; e.g. "
                              f"{['.'.join(map(str, p)) for p in paths[:6]]}")


def row_masks(trainable_state: nnx.State, config: LoraConfig) -> list | None:
    """Per leaf of ``trainable_state`` (``jax.tree.leaves`` order), None or a bool mask broadcastable
    to it that is True on the rows of new tokens (index >= ``new_token_rows_from`` along the
    parameter's ``vocab`` axis). Only ``trainable`` extras are masked, never LoRA weights.
    Returns None when nothing is masked.
    """
    start = config.new_token_rows_from
    if start is None or config.mode == "full":
        return None

    def one(path, v):
        if isinstance(v, LoraWeight):
            return None
        axes = variable_axes(v)
        if not axes or "vocab" not in axes:
            raise ConfigError(
                f"lora.new_token_rows_from: trainable parameter {'.'.join(map(str, path))} has no 'vocab' "
                f"axis (logical axes {axes}); list only embedding / output-layer parameters in lora.trainable")
        axis = list(axes).index("vocab")
        shape = [1] * v.ndim
        shape[axis] = v.shape[axis]
        return (jnp.arange(v.shape[axis]) >= start).reshape(shape)

    flat = nnx.to_flat_state(trainable_state)
    masks = [one(path, v) for path, v in flat]
    return masks if any(m is not None for m in masks) else None
