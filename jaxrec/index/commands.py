"""`jaxrec index build` (embeddings → LC-Rec index file + report) and `jaxrec index stats`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from jaxrec.atomic import atomic_file
from jaxrec.config import load_config, to_dict


def _build(args: argparse.Namespace) -> int:
    from jaxrec.index.build import IndexConfig, build_semantic_index
    from jaxrec.index.index_io import write_index
    from jaxrec.index.item_embeddings import load_item_embeddings

    config = load_config(IndexConfig, args.config, args.overrides)
    embeddings = load_item_embeddings(args.embeddings, args.source)
    codes, report = build_semantic_index(embeddings, config, seed=args.seed, progress=True)
    out = Path(args.out)
    write_index(out, codes)
    report_path = out.with_name(out.name.removesuffix(".json") + ".report.json")
    with atomic_file(report_path) as f:
        json.dump({"embeddings": str(args.embeddings), "source": args.source, "config": to_dict(config),
                   **report}, f, indent=1)
    summary = {k: report[k] for k in ("items", "levels", "collision_rate_before", "rounds_run",
                                      "collision_rate_after_rounds", "extra_level", "collision_rate_final",
                                      "code_usage", "wall_s")}
    print(json.dumps({"index": str(out), "report": str(report_path), **summary}, indent=1))
    return 0


def _stats(args: argparse.Namespace) -> int:
    from jaxrec.index.collisions import code_usage, collision_rate
    from jaxrec.index.index_io import read_index

    codes = read_index(args.index)
    print(json.dumps({"items": int(codes.shape[0]), "levels": int(codes.shape[1]),
                      "collision_rate": float(collision_rate(codes)),
                      "code_usage": code_usage(codes, int(codes.max()) + 1)}, indent=1))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("index", help="build or inspect semantic item indices (RQ-VAE codes)",
                       description="Semantic item indices in LC-Rec's format {item: [\"<a_12>\", \"<b_7>\", ...]}.")
    index_sub = p.add_subparsers(dest="index_command", metavar="<action>", required=True)
    b = index_sub.add_parser("build", help="train an RQ-VAE on item embeddings and write an index file",
                             description="Train an RQ-VAE on item embeddings, resolve collisions, write "
                                         "OUT (the index) and OUT's .report.json (history, collision "
                                         "rates, code usage).")
    b.add_argument("--embeddings", required=True, help=".npy item embeddings [items, dim]")
    b.add_argument("--source", choices=("npy", "sasrec"), default="npy",
                   help="npy: row i = item i; sasrec: a SASRec item table whose row 0 is padding")
    b.add_argument("--out", required=True, help="index file to write, e.g. Beauty.index.json")
    b.add_argument("--config", default=None, help="YAML config (configs/rqvae/*.yaml); default: LC-Rec's recipe")
    b.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=200 (repeatable)")
    b.add_argument("--seed", type=int, default=0)
    b.set_defaults(func=_build)
    s = index_sub.add_parser("stats", help="collision rate and code usage of an index file")
    s.add_argument("--index", required=True, help="an LC-Rec index file")
    s.set_defaults(func=_stats)
