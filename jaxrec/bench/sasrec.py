"""`jaxrec bench sasrec --data DIR`: SASRec on a prepared dataset dir next to the published numbers.

Trains with ``configs/sasrec/beauty.yaml`` (``--config`` and ``--set`` change it), evaluates on the
leave-one-out test split over the full catalog and prints JSON: our Recall/NDCG@{5,10,20}
(Recall@K = HR@K with one target per user), the evaluation protocol, the published row for the
dataset (:data:`REFERENCES`, keyed by the dataset's name; none, with a note, for a dataset without
one), the ratio ours/reference, wall time, the validation learning curve and the hardware.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

REPO_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "sasrec" / "beauty.yaml"
# published SASRec rows by dataset name (Dataset.name, lower case): the S3-Rec split, every item ranked
REFERENCES = {
    "beauty": {"source": "TIGER (Rajput et al., NeurIPS 2023), main results table, SASRec row, Amazon Beauty",
               "Recall@5": 0.0387, "NDCG@5": 0.0249, "Recall@10": 0.0605, "NDCG@10": 0.0318},
}


def reference_for(name: str) -> tuple[dict | None, str | None]:
    """(the published row for dataset ``name``, None) or (None, a note saying there is none)."""
    row = REFERENCES.get(name.lower())
    if row is not None:
        return row, None
    return None, (f"no published SASRec row for dataset {name!r} (rows exist for: {', '.join(sorted(REFERENCES))}); "
                  f"compare with popularity or another run instead")


def run(data: str, config_path: str | Path = REPO_CONFIG, overrides: list[str] = (), out_dir: str | None = None) -> dict:
    """Train + evaluate SASRec on the prepared dataset ``data``; return the benchmark record."""
    from jaxrec.bench.hardware import hardware_info
    from jaxrec.config import load_config
    from jaxrec.data.dataset import Dataset
    from jaxrec.methods import sasrec

    sets = [f"data.path={data}", "data.synthetic=null", *overrides] + ([f"out_dir={out_dir}"] if out_dir else [])
    config = load_config(sasrec.Config, config_path, sets)
    start = time.time()
    result = sasrec.train(config)
    wall = time.time() - start
    test = result["test"]
    reference, note = reference_for(Dataset.load(data).name)
    ours = {}
    for k in (5, 10, 20):
        ours[f"Recall@{k}"] = test[f"HR@{k}"]
        ours[f"NDCG@{k}"] = test[f"NDCG@{k}"]
    return {
        "benchmark": "sasrec",
        "data": data,
        "protocol": result["protocol"],
        "ours": {**ours, "MRR": test["MRR"], "users": test["users"]},
        "reference": reference,
        **({"reference_note": note} if note else {}),
        "ratio_to_reference": {k: round(ours[k] / v, 3) for k, v in (reference or {}).items() if k in ours},
        "wall_seconds": round(wall, 1),
        "train_seconds": result["train_seconds"],
        "epochs_run": result["epochs_run"],
        "best_epoch": result["best_epoch"],
        "valid": result["valid"],
        "curve": result["curve"],
        "config": str(config_path),
        "overrides": list(overrides),
        "hardware": hardware_info(),
    }


def _bench(args: argparse.Namespace) -> int:
    print(json.dumps(run(args.data, args.config, args.overrides, args.out), indent=2))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sasrec", help="SASRec on a prepared dataset vs the published numbers for it",
                       description="Train and evaluate SASRec on a prepared dataset dir and print JSON with our "
                                   "Recall/NDCG@5/10/20, the protocol, the published SASRec row for that dataset "
                                   "(Amazon Beauty: TIGER's table; none for a dataset without one), wall time and "
                                   "hardware.")
    p.add_argument("--data", required=True, help="dataset dir from `jaxrec data prepare --format s3rec ...`")
    p.add_argument("--config", default=str(REPO_CONFIG), help="SASRec config (default configs/sasrec/beauty.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=20 (repeatable)")
    p.add_argument("--out", default=None, help="run dir (default: the config's out_dir)")
    p.set_defaults(func=_bench)
