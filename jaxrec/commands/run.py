"""`jaxrec train` and `jaxrec eval`: load a method's YAML config and run it."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from jaxrec.bench.commands import add_profile_arg
from jaxrec.config import load_config, read_yaml
from jaxrec.errors import ConfigError
from jaxrec.methods import get_method
from jaxrec.remote import staged_output


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """``--config PATH`` plus repeatable ``--set a.b=c`` overrides."""
    parser.add_argument("--config", required=True, help="YAML config, e.g. configs/sasrec/embedded.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.steps=100 (repeatable)")


def load_method_config(args: argparse.Namespace):
    """Return (method module, typed config) for ``--config``/``--set``."""
    from jaxrec.config import apply_overrides
    from jaxrec.train.plan import PLANNER_SECTIONS  # the planner's sections, which training skips

    raw = apply_overrides(read_yaml(args.config), args.overrides)
    name = raw.get("method")
    if not isinstance(name, str):
        raise ConfigError(f"{args.config}: missing 'method' (e.g. method: sasrec)")
    method = get_method(name)
    return method, load_config(method.Config, args.config, args.overrides, skip=PLANNER_SECTIONS)


def _named_by_url(text: str, staged) -> str:
    """A result that names a bucket run's local copy names its URL instead."""
    return text if staged is None else text.replace(str(staged.local), staged.url)


PREEMPTED_EXIT = 143  # 128 + SIGTERM, as a shell reports a process the signal ended


def _train(args: argparse.Namespace) -> int:
    """Exit 0 when training finished; :data:`PREEMPTED_EXIT` when a SIGTERM stopped it (the same command
    resumes it)."""
    method, config = load_method_config(args)
    if args.dry_run:
        from jaxrec.train import dry_run

        return dry_run.run(args.config, args.overrides)
    with staged_output(config.out_dir, "train") as (out_dir, staged):
        result = method.train(dataclasses.replace(config, out_dir=out_dir))
    print(_named_by_url(json.dumps(result, indent=2), staged))
    stopped = [s for s in (result, *(v for v in result.values() if isinstance(v, dict))) if s.get("stopped") == "sigterm"]
    if stopped:
        print(f"jaxrec: training stopped by SIGTERM at step {stopped[0]['step']} before it finished; run the same "
              f"command to resume it", file=sys.stderr)
        return PREEMPTED_EXIT
    return 0


def _eval(args: argparse.Namespace) -> int:
    method, config = load_method_config(args)
    with staged_output(config.out_dir, "eval") as (out_dir, staged):
        result = method.evaluate(dataclasses.replace(config, out_dir=out_dir))
    print(_named_by_url(json.dumps(result, indent=2), staged))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a method from a YAML config",
                       description="Train a method (sasrec, bigrec, lcrec, tiger, aligned_t5, rsllm) from a YAML config.")
    add_config_args(p)
    p.add_argument("--dry-run", action="store_true",
                   help="build the run's sharded model and optimizer state abstractly on fake CPU devices (as many "
                        "as the mesh spans; no weights are allocated), print the per-device bytes next to "
                        "`jaxrec plan`'s, and exit (2 when the plan does not fit)")
    p.set_defaults(func=_train)
    add_profile_arg(p)
    p = sub.add_parser("eval", help="evaluate a trained run over the full catalog",
                       description="Evaluate a trained run over the full catalog; prints JSON metrics.")
    add_config_args(p)
    p.set_defaults(func=_eval)
    add_profile_arg(p)
