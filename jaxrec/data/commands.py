"""`jaxrec data prepare | stats | synth`: build canonical datasets and summarise them."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from jaxrec.atomic import check_output_dir
from jaxrec.data.dataset import Dataset, is_dataset_dir
from jaxrec.data.processing import process
from jaxrec.data.readers import FORMATS, get_reader, raw_from_dataset
from jaxrec.data.synthetic import PRESETS, make_preset
from jaxrec.errors import DataError
from jaxrec.remote import local_input
from jaxrec.run_lock import output_lock


def prepare(fmt: str, input: str | None, out: str | Path, meta: str | None = None, kcore: int = 0,
            min_rating: float | None = None, drop_items_without_meta: bool = False, remap: str = "first",
            seed: int = 0, overwrite: bool = False, **reader_options) -> Dataset:
    """Read ``input`` in format ``fmt``, process it and save the canonical dataset at ``out`` (atomically).

    For ``fmt="synthetic"`` ``input`` names a preset (``tiny`` or ``demo``; default ``demo``) and
    ``seed`` also seeds the generator. An existing ``out`` that is not a dataset directory is refused
    before anything is read, unless ``overwrite``.
    """
    check_output_dir(out, is_dataset_dir, "jaxrec dataset directory", overwrite)
    if fmt == "synthetic":
        raw = raw_from_dataset(make_preset(input or "demo", seed=seed))
    else:
        if not input:
            raise DataError(f"--input is required for --format {fmt}")
        raw = get_reader(fmt).read(local_input(input), local_input(meta) if meta else None, **reader_options)
    ds = process(raw, kcore=kcore, min_rating=min_rating, drop_items_without_meta=drop_items_without_meta,
                 remap=remap, seed=seed)
    ds.save(out, overwrite)
    return ds


def _prepare(args: argparse.Namespace) -> int:
    options = {"csv_columns": args.csv_columns} if args.csv_columns else {}
    with output_lock(args.out, "data prepare"):
        ds = prepare(args.format, args.input, args.out, meta=args.meta, kcore=args.kcore, min_rating=args.min_rating,
                     drop_items_without_meta=args.drop_items_without_meta, remap=args.remap, seed=args.seed,
                     overwrite=args.overwrite, **options)
    print(json.dumps({"out": str(args.out), **ds.stats()}, indent=2))
    return 0


def _stats(args: argparse.Namespace) -> int:
    print(json.dumps(Dataset.load(args.dir).stats(), indent=2))
    return 0


def _synth(args: argparse.Namespace) -> int:
    check_output_dir(args.out, is_dataset_dir, "jaxrec dataset directory", args.overwrite)
    ds = make_preset(args.preset, seed=args.seed)
    with output_lock(args.out, "data synth"):
        ds.save(args.out, args.overwrite)
    print(json.dumps({"out": str(args.out), **ds.stats()}, indent=2))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="prepare, inspect and generate datasets",
                          description="Build canonical jaxrec datasets (docs/DATA_FORMAT.md) from raw formats.")
    commands = data.add_subparsers(dest="data_command", metavar="<data command>", required=True)

    p = commands.add_parser("prepare", help="raw files -> canonical dataset directory",
                            description="Read a published raw format, dedup, k-core, remap ids and write a "
                                        "canonical dataset directory (atomically).")
    p.add_argument("--format", required=True, choices=(*FORMATS, "synthetic"),
                   help="source format (synthetic: --input names a preset: " + ", ".join(PRESETS) + ")")
    p.add_argument("--input", help="ratings/reviews/sequence file or folder of the source")
    p.add_argument("--out", required=True, help="output dataset directory")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out even if it is not a jaxrec dataset directory (default: refuse)")
    p.add_argument("--meta", help="item metadata file (default: found next to --input where the format has one)")
    p.add_argument("--kcore", type=int, default=0, help="iterative k-core filter (0 = off; papers use 5)")
    p.add_argument("--min-rating", type=float, default=None, help="keep interactions rated >= this")
    p.add_argument("--drop-items-without-meta", action="store_true", help="drop items with no text fields")
    p.add_argument("--remap", choices=("first", "random"), default="first",
                   help="id order: first appearance (default) or a seeded random permutation")
    p.add_argument("--seed", type=int, default=0, help="seed for --remap random and the synthetic generator")
    p.add_argument("--csv-columns", help="amazon ratings CSV column order, e.g. item,user,rating,timestamp "
                                         "(default user,item,rating,timestamp, or the CSV's header)")
    p.set_defaults(func=_prepare)

    p = commands.add_parser("stats", help="print a dataset's summary as JSON")
    p.add_argument("dir", help="canonical dataset directory")
    p.set_defaults(func=_stats)

    p = commands.add_parser("synth", help="write the embedded synthetic dataset",
                            description="Write the embedded synthetic dataset (deterministic by seed).")
    p.add_argument("--out", required=True, help="output dataset directory")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out even if it is not a jaxrec dataset directory (default: refuse)")
    p.add_argument("--preset", choices=tuple(PRESETS), default="demo", help="size preset (default demo)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_synth)
