"""`jaxrec bench sasrec-scale`: SASRec over a catalog of a million items on this machine, with peak memory.

Training (``--loss``) uses either the full softmax through the chunked cross-entropy (``softmax``,
``train.softmax_chunk``: an online log-sum-exp over item chunks, so no [B,T,N] logits exist) or the sampled
softmax with logQ correction (``sampled_softmax``: ``--negatives`` items per row from the ``--proposal``,
uniform or popularity, shared by the batch). Evaluation ranks every item through the tiled rank kernel.
Peak memory is per process: run one loss per command. The data is seeded and vectorized, and carries no
signal beyond popularity: ``--users`` sequences of 5..``--max-len`` items drawn from a Zipf(1) popularity
over ``--items`` items. This measures throughput and memory, not quality.

Reported: data generation seconds; training (``--epochs`` over every user, compile and the validation ranking
included) and the whole fit with the test ranking; peak resident memory of the process (``getrusage``); and, as the peer that
cannot run, the bytes the unchunked path's float32 logits [B,T,N] alone would need.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time

import numpy as np


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sasrec-scale", help="SASRec train + full-catalog eval over 1M items: time and peak memory",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--users", type=int, default=2_000)
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--loss", choices=("softmax", "sampled_softmax"), default="softmax", help="train.loss")
    p.add_argument("--chunk", type=int, default=16_384, help="items per chunk of the softmax (train.softmax_chunk)")
    p.add_argument("--negatives", type=int, default=64, help="sampled_softmax: items drawn per row (train.negatives)")
    p.add_argument("--proposal", choices=("uniform", "popularity"), default="popularity", help="train.proposal")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def scale_dataset(num_users: int, num_items: int, max_len: int, seed: int):
    """A :class:`~jaxrec.data.dataset.Dataset` of Zipf(1)-popular items, built without Python loops over items."""
    from jaxrec.data.dataset import Dataset

    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, num_items + 1)
    lengths = rng.integers(5, max_len + 1, num_users)
    item_ids = rng.choice(num_items, int(lengths.sum()), p=popularity / popularity.sum()).astype(np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    items = [{"raw_id": str(i)} for i in range(num_items)]
    return Dataset(items=items, user_raw_ids=[str(u) for u in range(num_users)], offsets=offsets, item_ids=item_ids,
                   name="zipf-scale")


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1024 ** 3  # ru_maxrss is KiB on Linux


def run(args: argparse.Namespace) -> int:
    from jaxrec import seqrec
    from jaxrec.bench.hardware import hardware_info
    from jaxrec.config import from_dict
    from jaxrec.data.splits import leave_one_out
    from jaxrec.seqrec.batches import EpochBatches, training_pairs

    start = time.perf_counter()
    ds = scale_dataset(args.users, args.items, args.max_len, args.seed)
    split = leave_one_out(ds)
    data_s = time.perf_counter() - start
    print(f"jaxrec bench sasrec-scale: {ds.num_items:,} items, {ds.num_users:,} users, {ds.num_interactions:,} "
          f"interactions ({data_s:.1f} s)", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="jaxrec-sasrec-scale-") as out:
        config = from_dict(seqrec.Config, {
            "out_dir": out, "model": {"max_len": args.max_len, "hidden_size": args.hidden, "num_layers": 2, "num_heads": 1},
            "train": {"epochs": args.epochs, "batch_size": args.batch, "loss": args.loss, "softmax_chunk": args.chunk,
                      "negatives": args.negatives, "proposal": args.proposal, "seed": args.seed,
                      "eval_every": args.epochs, "progress": True},
            "eval": {"ks": [10], "exclude_history": False, "batch_size": 256}})
        start = time.perf_counter()
        result = seqrec.fit(config, ds, split)
        fit_s = time.perf_counter() - start
    inputs, labels = training_pairs(split.train, args.max_len)
    steps = args.epochs * EpochBatches(inputs, labels, args.batch, args.epochs, args.seed).steps_per_epoch
    evaluated = 2 * ds.num_users  # valid + test, each over the whole catalog
    settings = ("items", "users", "max_len", "hidden", "batch", "epochs", "loss", "chunk", "negatives", "proposal", "seed")
    out = {"benchmark": "sasrec-scale", "config": {k: getattr(args, k) for k in settings},
           "interactions": ds.num_interactions, "data_s": round(data_s, 1), "train_and_eval_s": round(fit_s, 1),
           "steps": steps, "train_s_with_valid_eval": result["train_seconds"], "test": result["test"],
           "peak_rss_gib": round(_peak_rss_gib(), 2),
           "protocol": result["protocol"], "unchunked_logits_gib": round(args.batch * args.max_len * args.items * 4 / 1024 ** 3, 1),
           "evaluated_users": evaluated, "hardware": hardware_info()}
    print(json.dumps(out, indent=2))
    return 0
