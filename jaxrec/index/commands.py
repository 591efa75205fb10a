"""`jaxrec index build` (embeddings → LC-Rec index file + report) and `jaxrec index stats`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from jaxrec.atomic import atomic_file
from jaxrec.config import load_config, to_dict
from jaxrec.errors import DataError, JaxrecError
from jaxrec.run_lock import output_lock


def _embeddings(args: argparse.Namespace):
    """(float32 [N, d] item embeddings, a description of where they came from) for ``index build``."""
    from jaxrec.index.item_embeddings import load_item_embeddings

    if args.embeddings:
        return load_item_embeddings(args.embeddings, args.source), {"embeddings": str(args.embeddings),
                                                                     "source": args.source}
    from jaxrec.data.dataset import Dataset
    from jaxrec.data.tasks.item_text import documents
    from jaxrec.ground.embed import encode_texts

    fields = [f.strip() for f in args.fields.split(",") if f.strip()]
    texts = documents(Dataset.load(args.item_text), fields)
    empty = [i for i, t in enumerate(texts) if not t]
    if empty:
        raise DataError(f"{args.item_text}: {len(empty)} items have none of the fields {fields} (first: item {empty[0]})")
    table = encode_texts(args.encoder, texts, pooling="mean", batch_size=args.batch_size)
    return table, {"item_text": str(args.item_text), "encoder": args.encoder, "fields": fields}


def _build(args: argparse.Namespace) -> int:
    from jaxrec.index.build import IndexConfig, build_semantic_index
    from jaxrec.index.index_io import write_index

    config = load_config(IndexConfig, args.config, args.overrides)
    out = Path(args.out)
    report_path = out.with_name(out.name.removesuffix(".json") + ".report.json")
    if not args.overwrite:
        _check_replaceable(out)
    with output_lock(out, "index build"):
        embeddings, source = _embeddings(args)
        codes, report = build_semantic_index(embeddings, config, seed=args.seed, progress=True)
        write_index(out, codes)
        with atomic_file(report_path) as f:
            json.dump({**source, "config": to_dict(config), **report}, f, indent=1)
    summary = {k: report[k] for k in ("items", "levels", "collision_rate_before", "rounds_run",
                                      "collision_rate_after_rounds", "extra_level", "collision_rate_final",
                                      "code_usage", "wall_s")}
    print(json.dumps({"index": str(out), "report": str(report_path), **summary}, indent=1))
    return 0


def _check_replaceable(out: Path) -> None:
    """An existing ``out`` is replaced only if it is an index file (one jaxrec could have written)."""
    from jaxrec.index.index_io import read_index

    if not (out.exists() or out.is_symlink()):
        return
    try:
        read_index(out)
    except (DataError, OSError, ValueError):
        raise JaxrecError(f"{out} exists and is not a semantic index file; refusing to replace it: choose another "
                          f"--out, or pass --overwrite to replace it") from None


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
                                         "rates, code usage). The embeddings come from a .npy file, or "
                                         "from item text: --item-text DATASET --encoder minilm-l6 (a "
                                         "sentence encoder, as TIGER) or --encoder smollm2-135m (an LLM's "
                                         "mean-pooled last layer, as LC-Rec).")
    source = b.add_mutually_exclusive_group(required=True)
    source.add_argument("--embeddings", help=".npy item embeddings [items, dim]")
    source.add_argument("--item-text", metavar="DATASET", help="a prepared dataset whose item text is embedded")
    b.add_argument("--encoder", default="minilm-l6",
                   help="with --item-text: a pretrained name, .gguf file or HF directory (default minilm-l6)")
    b.add_argument("--fields", default="title,description",
                   help="with --item-text: item fields to embed, comma-separated (e.g. title,categories)")
    b.add_argument("--batch-size", type=int, default=64, help="with --item-text: texts per forward pass")
    b.add_argument("--source", choices=("npy", "sasrec"), default="npy",
                   help="npy: row i = item i; sasrec: a SASRec item table whose row 0 is padding")
    b.add_argument("--out", required=True, help="index file to write, e.g. Beauty.index.json")
    b.add_argument("--overwrite", action="store_true",
                   help="replace --out even if it is not an index file (default: refuse)")
    b.add_argument("--config", default=None, help="YAML config (configs/rqvae/*.yaml); default: LC-Rec's recipe")
    b.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=200 (repeatable)")
    b.add_argument("--seed", type=int, default=0)
    b.set_defaults(func=_build)
    s = index_sub.add_parser("stats", help="collision rate and code usage of an index file")
    s.add_argument("--index", required=True, help="an LC-Rec index file")
    s.set_defaults(func=_stats)
