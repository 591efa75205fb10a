"""`jaxrec <command>`: one thin entry point over the library.

Each command group lives next to the code it drives and exposes ``register(subparsers)``; this file
only wires them together and turns :class:`~jaxrec.errors.JaxrecError` into a one-line message.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from jaxrec import __version__
from jaxrec.compile_cache import enable_compilation_cache
from jaxrec.errors import JaxrecError

# command name -> module exposing register(subparsers)
COMMANDS = {
    "data": "jaxrec.data.commands",
    "baseline": "jaxrec.commands.baseline",
    "train": "jaxrec.commands.run",
    "eval": "jaxrec.commands.run",
    "demo": "jaxrec.commands.demo",
    "index": "jaxrec.index.commands",
    "bench": "jaxrec.bench.commands",
    "plan": "jaxrec.train.plan_commands",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxrec",
        description="LLM-based generative recommenders in JAX: train, evaluate over the full catalog, benchmark.",
    )
    parser.add_argument("--version", action="version", version=f"jaxrec {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for module_name in dict.fromkeys(COMMANDS.values()):
        importlib.import_module(module_name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        enable_compilation_cache()
        _join_multi_process_run()
        result = args.func(args)
    except JaxrecError as e:
        print(f"jaxrec: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader of our output went away (e.g. `| head`): stop quietly, as a shell tool
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as e:  # the file system said no: read-only, full, missing, a file where a folder should be
        where = f": {e.filename}" if e.filename else ""
        print(f"jaxrec: error: {e.strerror or e}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("jaxrec: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


def _join_multi_process_run() -> None:
    """Join a multi-host run when the launch scripts ask for it (see tpu_scripts/).

    ``JAXREC_DISTRIBUTED=auto``: JAX discovers the cluster (TPU pod slices, SLURM);
    ``JAXREC_COORDINATOR`` / ``JAXREC_NUM_PROCESSES`` / ``JAXREC_PROCESS_ID``: explicit.
    """
    import os

    if os.environ.get("JAXREC_DISTRIBUTED") != "auto" and not os.environ.get("JAXREC_COORDINATOR"):
        return
    from jaxrec.parallel.distributed import DistributedConfig, initialize

    initialize(DistributedConfig(auto=True) if os.environ.get("JAXREC_DISTRIBUTED") == "auto" else None)


if __name__ == "__main__":
    sys.exit(main())
