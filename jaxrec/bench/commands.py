"""`jaxrec bench <name>`: throughput benchmarks that measure a peer side by side and print JSON.

Each benchmark module exposes ``register(subparsers)`` adding its own sub-command.
"""

from __future__ import annotations

import argparse
import importlib

BENCHMARKS = {
    "sasrec": "jaxrec.bench.sasrec",
    "train": "jaxrec.bench.train",
    "decode": "jaxrec.bench.decode",
    "ground": "jaxrec.bench.ground",
    "tiger": "jaxrec.bench.tiger",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="throughput benchmarks against a peer (prints JSON)",
                       description="Run a benchmark; each prints JSON with the figure, the hardware and the peer.")
    bench_sub = p.add_subparsers(dest="bench", metavar="<benchmark>", required=True)
    for module_name in BENCHMARKS.values():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name == module_name:
                continue  # not built yet
            raise
        module.register(bench_sub)
