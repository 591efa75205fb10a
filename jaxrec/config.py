"""Typed configs: YAML files → nested dataclasses, with ``--set a.b=c`` overrides.

A config schema is a (frozen or plain) dataclass whose fields are scalars, lists/tuples, ``Literal``
choices, optional values or nested dataclasses. Loading is strict: an unknown key, a missing required
field or a value of the wrong type raises :class:`~jaxrec.errors.ConfigError` naming the dotted key
and the file it came from.

A YAML file may name ``base: other.yaml`` (relative to itself); the base is loaded first and the file's
keys are merged over it, recursively. ``--set`` values are parsed as YAML scalars/lists, so
``--set train.lr=3e-4``, ``--set eval.ks=[1,5,10]`` and ``--set lora.enabled=false`` all work.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence, TypeVar, get_args, get_origin, get_type_hints

import yaml

from jaxrec.errors import ConfigError

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Range:
    """Bounds of a numeric config field: ``steps: Annotated[int, Range(min=1)] = 1000``."""

    min: float | None = None
    max: float | None = None
    min_open: bool = False  # exclusive lower bound (e.g. a learning rate > 0)
    max_open: bool = False

    def check(self, value: Any, where: str, key: str) -> None:
        if value is None:
            return
        low = self.min is not None and (value <= self.min if self.min_open else value < self.min)
        high = self.max is not None and (value >= self.max if self.max_open else value > self.max)
        if low or high:
            raise ConfigError(f"{where}: '{key}' must be {self}, got {value!r}")

    def __str__(self) -> str:
        parts = []
        if self.min is not None:
            parts.append(f"{'>' if self.min_open else '>='} {_number(self.min)}")
        if self.max is not None:
            parts.append(f"{'<' if self.max_open else '<='} {_number(self.max)}")
        return " and ".join(parts)


def check_ranges(config: Any) -> None:
    """Check a dataclass instance's :class:`Range`-annotated fields (for ``__post_init__``: configs built
    in Python get the same bounds as those read from YAML); raises ValueError naming the field."""
    for name, bounds in _ranges(type(config)):
        for bound in bounds:
            try:
                bound.check(getattr(config, name), "", name)
            except ConfigError as e:
                raise ValueError(str(e).removeprefix(": ")) from None


@functools.cache
def _ranges(schema: type) -> tuple[tuple[str, tuple[Range, ...]], ...]:
    hints = get_type_hints(schema, include_extras=True)
    return tuple((name, tuple(m for m in tp.__metadata__ if isinstance(m, Range))) for name, tp in hints.items()
                 if get_origin(tp) is typing.Annotated)


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def read_yaml(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML mapping, resolving ``base:`` inheritance. Errors name the file."""
    path = Path(path)
    if path.resolve() in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain, path.resolve()))
        raise ConfigError(f"{_chain[-1]}: 'base:' files form a cycle: {cycle}")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    base = data.pop("base", None)
    if base is not None:
        data = deep_merge(read_yaml(path.parent / base, (*_chain, path.resolve())), data)
    return data


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``base`` updated by ``over``; nested mappings are merged, everything else replaced."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` strings to a nested dict (values parsed as YAML)."""
    data = dict(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"--set {key}: '{part}' is a value, not a section")
            node[part] = child = dict(child)
            node = child
        node[parts[-1]] = value
    return data


def from_dict(schema: type[T], data: Mapping[str, Any], *, where: str = "config", prefix: str = "") -> T:
    """Build dataclass ``schema`` from ``data`` strictly (unknown keys and wrong types are errors)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: '{prefix or '<root>'}' must be a mapping, got {_describe(data)}")
    hints = get_type_hints(schema, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(schema) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        key = _join(prefix, unknown[0])
        raise ConfigError(
            f"{where}: unknown key '{key}' (valid keys under '{prefix or '<root>'}': {', '.join(sorted(fields))})"
        )
    kwargs = {}
    for name, field in fields.items():
        key = _join(prefix, name)
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], where, key)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where}: missing required key '{key}'")
    try:
        return schema(**kwargs)
    except (ValueError, TypeError) as e:  # __post_init__ validation
        raise ConfigError(f"{where}: {prefix or '<root>'}: {e}") from None


def to_dict(config: Any) -> Any:
    """The inverse of :func:`from_dict` (dataclasses → plain dicts/lists), for saving next to outputs."""
    if dataclasses.is_dataclass(config):
        return {f.name: to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, (list, tuple)):
        return [to_dict(v) for v in config]
    if isinstance(config, dict):
        return {k: to_dict(v) for k, v in config.items()}
    return config


def load_config(schema: type[T], path: str | Path | None = None, overrides: Sequence[str] = (),
                skip: Sequence[str] = ()) -> T:
    """Load ``schema`` from a YAML file (or its defaults when ``path`` is None) plus overrides; top-level
    sections named in ``skip`` (another tool's, e.g. the planner's) are left out."""
    data = read_yaml(path) if path is not None else {}
    data = apply_overrides(data, overrides)
    data = {k: v for k, v in data.items() if k not in skip}
    where = str(path) if path is not None else "config"
    try:
        return from_dict(schema, data, where=where)
    except ConfigError as e:  # a bad value given with --set: say so, not the file
        keys = [item.split("=", 1)[0].strip() for item in overrides]
        culprit = next((k for k in reversed(keys) if f"'{k}'" in str(e) or f"'{k}." in str(e)), None)
        if culprit is None:
            raise
        raise ConfigError(str(e).replace(f"{where}:", f"--set {culprit}:", 1)) from None


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _convert(tp: Any, value: Any, where: str, key: str) -> Any:
    origin = get_origin(tp)
    args = get_args(tp)
    if tp is Any:
        return value
    if origin is typing.Annotated:
        out = _convert(args[0], value, where, key)
        for bound in tp.__metadata__:
            if isinstance(bound, Range):
                bound.check(out, where, key)
        return out
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, where, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: '{key}' expected {_type_name(tp)}, got {_describe(value)}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: '{key}' must be one of {list(args)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value if value is not None else {}, where=where, prefix=key)
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            value = [value] if isinstance(value, (int, float, str)) and not isinstance(value, bool) else value
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: '{key}' expected a list, got {_describe(value)}")
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(args) != len(value):
                raise ConfigError(f"{where}: '{key}' expected {len(args)} values, got {len(value)}")
            return tuple(_convert(a, v, where, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        elem = args[0] if args else Any
        items = [_convert(elem, v, where, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple or tp is tuple else items
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: '{key}' expected a mapping, got {_describe(value)}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: '{key}' expected true/false, got {_describe(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where}: '{key}' expected an integer, got {_describe(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: '{key}' expected a number, got {_describe(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: '{key}' expected a string, got {_describe(value)}")
    raise ConfigError(f"{where}: '{key}' has unsupported type {tp!r} in the schema")


def _type_name(tp: Any) -> str:
    args = [a for a in get_args(tp) if a is not type(None)]
    return " or ".join(getattr(a, "__name__", str(a)) for a in args) + " or null"
