"""`jaxrec plan CONFIG`: print the per-device memory plan (table, then one JSON line) and exit non-zero,
naming the biggest part and a remedy, when a phase does not fit the device memory."""

from __future__ import annotations

import argparse
import json
import sys

from jaxrec.atomic import write_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan", help="estimate per-device memory of a training/decoding config; refuse what will not fit",
        description="Estimate per-device bytes (parameters, optimizer, gradients, activations with the remat "
                    "policy, logits, beam-search KV cache) for a config and mesh. Exits with status 2 when a "
                    "phase exceeds the usable device memory.")
    p.add_argument("config", help="YAML with model / train / decode sections (see jaxrec.train.plan)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.remat=full (repeatable)")
    p.add_argument("--devices", type=int, help="number of devices the mesh spans (default: config, accelerator, "
                                               "or this host's)")
    p.add_argument("--device-memory", type=float, metavar="GIB", help="memory per device in GiB")
    p.add_argument("--json", metavar="PATH", help="also write the JSON plan to PATH")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from jaxrec.train.plan import estimate, load_plan_config

    config, ignored = load_plan_config(args.config, args.overrides)
    if ignored:
        print(f"jaxrec plan: not planner sections, ignored: {', '.join(ignored)}", file=sys.stderr)
    plan = estimate(config, devices=args.devices, device_memory_gib=args.device_memory)
    report = plan.to_json()
    print(plan.table())
    print(json.dumps(report))
    if args.json:
        write_json(args.json, report)
    plan.check()
    return 0
