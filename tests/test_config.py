import dataclasses
from pathlib import Path
from typing import Literal, Optional

import pytest

from jaxrec.config import apply_overrides, from_dict, load_config, to_dict
from jaxrec.errors import ConfigError


@dataclasses.dataclass
class Inner:
    lr: float = 1e-3
    steps: int = 10
    ks: tuple[int, ...] = (1, 5, 10)


@dataclasses.dataclass
class Root:
    name: str
    kind: Literal["a", "b"] = "a"
    inner: Inner = dataclasses.field(default_factory=Inner)
    path: Optional[str] = None
    flag: bool = False


def test_yaml_with_base_and_overrides(tmp_path):
    (tmp_path / "base.yaml").write_text("name: x\ninner:\n  lr: 0.1\n  steps: 3\n")
    (tmp_path / "c.yaml").write_text("base: base.yaml\ninner:\n  steps: 5\n")
    cfg = load_config(Root, tmp_path / "c.yaml", ["inner.lr=3e-4", "inner.ks=[1,2]", "flag=true", "kind=b"])
    assert cfg == Root(name="x", kind="b", inner=Inner(lr=3e-4, steps=5, ks=(1, 2)), flag=True)
    assert from_dict(Root, to_dict(cfg)) == cfg


@pytest.mark.parametrize(
    "data, message",
    [
        ({"name": "x", "inner": {"lr": 1, "stpes": 3}}, "unknown key 'inner.stpes'"),
        ({"name": "x", "inner": {"steps": "many"}}, "'inner.steps' expected an integer"),
        ({"name": "x", "kind": "c"}, "'kind' must be one of"),
        ({"name": "x", "flag": "yes"}, "'flag' expected true/false"),
        ({}, "missing required key 'name'"),
    ],
)
def test_bad_configs_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(Root, data, where="f.yaml")


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["novalue"])
    with pytest.raises(ConfigError, match="is a value, not a section"):
        apply_overrides({"a": 1}, ["a.b=2"])


CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("path", sorted(str(p) for p in [*CONFIGS.glob("*/*.yaml"), *CONFIGS.glob("demo/quick/*.yaml")]
                                        if p.parent.name not in ("scale", "rqvae")),
                         ids=lambda p: str(Path(p).relative_to(CONFIGS)))
def test_every_method_config_loads(path):
    """Each configs/<method>/*.yaml is a valid config of its method (keys, types, ranges); the demo's rows
    (configs/demo/[quick/]<row>.yaml) are configs of the method their row names."""
    import argparse

    from jaxrec.commands.run import load_method_config

    method, config = load_method_config(argparse.Namespace(config=path, overrides=[]))
    in_demo = "demo" in Path(path).relative_to(CONFIGS).parts
    assert config.method == (Path(path).stem.removesuffix("_llm") if in_demo else Path(path).parent.name)


@pytest.mark.parametrize("override, message", [
    ("train.steps=0", "'train.steps' must be >= 1, got 0"),
    ("train.batch_size=-4", "'train.batch_size' must be >= 1, got -4"),
    ("train.optim.learning_rate=-1e-3", "'train.optim.learning_rate' must be > 0, got -0.001"),
    ("train.checkpoint.every=-1", "'train.checkpoint.every' must be >= 0, got -1"),
    ("train.lora.dropout=1", "'train.lora.dropout' must be >= 0 and < 1, got 1.0"),
])
def test_out_of_range_values_are_one_error_naming_the_key_and_where_it_came_from(override, message):
    from jaxrec.methods import bigrec

    path = Path(__file__).parents[1] / "configs" / "bigrec" / "embedded.yaml"
    with pytest.raises(ConfigError) as e:
        load_config(bigrec.Config, path, [override])
    assert str(e.value) == f"--set {override.split('=')[0]}: {message}"


def test_ranges_hold_for_configs_built_in_python_and_base_cycles_are_named(tmp_path):
    from jaxrec.train.config import TrainConfig

    with pytest.raises(ValueError, match="'batch_size' must be >= 1, got 0"):
        TrainConfig(batch_size=0)
    (tmp_path / "a.yaml").write_text("base: b.yaml\nx: 1\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match=r"b.yaml: 'base:' files form a cycle: .*a.yaml -> .*b.yaml -> .*a.yaml"):
        load_config(dict, tmp_path / "a.yaml")
