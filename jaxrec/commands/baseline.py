"""`jaxrec baseline popularity`: the popularity baseline on a prepared dataset (prints JSON)."""

from __future__ import annotations

import argparse
import json

from jaxrec.errors import JaxrecError


def parse_ks(text: str) -> list[int]:
    """``"1,5,10"`` -> ``[1, 5, 10]`` (positive integers)."""
    try:
        ks = [int(k) for k in text.split(",") if k.strip()]
    except ValueError:
        raise JaxrecError(f"--ks expects comma-separated integers like 1,5,10,20, got {text!r}") from None
    if not ks or min(ks) < 1:
        raise JaxrecError(f"--ks expects positive integers, got {text!r}")
    return ks


def _popularity(args: argparse.Namespace) -> int:
    from jaxrec.methods import popularity
    from jaxrec.data.source import DataConfig

    config = popularity.Config(data=DataConfig(path=args.data),
                               eval=popularity.EvalConfig(split=args.split, ks=parse_ks(args.ks)))
    print(json.dumps(popularity.evaluate(config), indent=2))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("baseline", help="non-learned baselines (popularity)",
                       description="Evaluate a non-learned baseline over the full catalog; prints JSON.")
    baseline_sub = p.add_subparsers(dest="baseline", metavar="<baseline>", required=True)
    q = baseline_sub.add_parser(
        "popularity", help="rank items by training-portion counts",
        description="Popularity: counts from each user's sequence without its last two items; leave-one-out "
                    "target; every item ranked; ties go to the lower item id.")
    q.add_argument("--data", required=True, help="dataset dir written by `jaxrec data prepare`")
    q.add_argument("--split", choices=("test", "valid"), default="test")
    q.add_argument("--ks", default="1,5,10,20", help="cut-offs, comma-separated (default 1,5,10,20)")
    q.set_defaults(func=_popularity)
