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
    "all": "jaxrec.bench.all",
}
# Registered as commands but not run by `jaxrec bench all`: they need a real pretrained model or accelerator-sized
# shapes, and take minutes on a CPU host.
STANDALONE = {
    "llm-eval": "jaxrec.bench.llm_eval",
    "attention": "jaxrec.bench.attention",  # accelerator shapes by default (tpu_scripts/accelerator_check.sh)
    "sasrec-scale": "jaxrec.bench.sasrec_scale",  # a million items: minutes of CPU
    "data": "jaxrec.bench.data",  # 25M ratings + 10M reviews generated and prepared: minutes of CPU, GBs of disk
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="throughput benchmarks against a peer (prints JSON)",
                       description="Run a benchmark; each prints JSON with the figure, the hardware and the peer.")
    bench_sub = p.add_subparsers(dest="bench", metavar="<benchmark>", required=True)
    for module_name in (*BENCHMARKS.values(), *STANDALONE.values()):
        importlib.import_module(module_name).register(bench_sub)
    for bench_parser in bench_sub.choices.values():
        add_profile_arg(bench_parser)


def add_profile_arg(parser: argparse.ArgumentParser) -> None:
    """Give ``parser`` a ``--profile DIR`` flag that traces its command with ``jax.profiler``."""
    parser.add_argument("--profile", metavar="DIR", default=None,
                        help="write a jax.profiler trace (TensorBoard / Perfetto) of the run to DIR")
    func = parser.get_default("func")
    if func is None:
        return

    def profiled(args: argparse.Namespace):
        from jaxrec.profiling import profile

        with profile(args.profile):
            return func(args)

    parser.set_defaults(func=profiled)
