"""The package's layering, read from the source: imports only point down, and no recipe imports another.

Layers, lowest first (docs/ARCHITECTURE.md): a module may import its own package and those below it.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "jaxrec"
BASE = {"errors", "config", "atomic", "remote", "run_lock", "profiling", "compile_cache", "cache", "timing",
        "__init__", "__version__"}
LAYERS = ["base", "parallel", "data", "models", "train", "decode", "ground", "eval", "index", "seqrec", "methods",
          "top"]
TOP = {"bench", "commands", "cli"}


def layer_of(module: str) -> str:
    """``jaxrec.x.y`` → the layer of package/module ``x``."""
    name = module.split(".")[1] if "." in module else "__init__"
    if name in BASE:
        return "base"
    if name in TOP:
        return "top"
    assert name in LAYERS, f"jaxrec.{name} belongs to no layer: add it to LAYERS/BASE/TOP and docs/ARCHITECTURE.md"
    return name


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported jaxrec module) of every import in ``path``, at any depth (function-local too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "jaxrec":
            if node.module in ("jaxrec", "jaxrec.methods"):  # from jaxrec import seqrec; from jaxrec.methods import x
                found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.split(".")[0] == "jaxrec"]
    return found


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_imports_only_point_down_the_layers():
    backward = []
    for path in sorted(ROOT.rglob("*.py")):
        own = LAYERS.index(layer_of(module_name(path)))
        for line, target in imports(path):
            if LAYERS.index(layer_of(target)) > own:
                backward.append(f"{path.relative_to(ROOT.parent)}:{line} imports {target}")
    assert not backward, "imports pointing up the layers:\n" + "\n".join(backward)


def test_no_recipe_imports_another():
    recipes = {p.stem for p in (ROOT / "methods").glob("*.py") if p.stem != "__init__"}
    crossing = []
    for path in sorted((ROOT / "methods").glob("*.py")):
        for line, target in imports(path):
            name = target.split(".")[2] if target.startswith("jaxrec.methods.") else None
            if name in recipes and name != path.stem:
                crossing.append(f"methods/{path.name}:{line} imports {target}")
    assert not crossing, "recipes importing recipes:\n" + "\n".join(crossing)


def test_the_checker_sees_a_backward_import(tmp_path):
    """The rule is not vacuous: a models module importing the trainer is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from jaxrec.train.trainer import Trainer\n")
    (line, target), = imports(bad)
    assert line == 2 and LAYERS.index(layer_of(target)) > LAYERS.index("models")
