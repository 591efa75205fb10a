"""`jaxrec bench all`: run every registered benchmark, collect their JSON, update BENCHMARKS.md + a plot.

Each benchmark runs in its own fresh process (``python -m jaxrec.cli bench NAME ARGS``) so none sees
another's compilation caches or memory. Per-benchmark arguments come from ``--with NAME="ARGS"``
(``jaxrec bench all --with sasrec="--data data/beauty" --with decode="--scale 10000,100000"``);
a benchmark whose required arguments are missing fails alone and the others still report.
``--from-json FILE ...`` rebuilds the table from saved results without running anything.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

from jaxrec.atomic import atomic_file
from jaxrec.errors import JaxrecError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("all", help="run every benchmark and update the BENCHMARKS.md table and plot",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default="", help="comma-separated benchmarks to run (default: all registered)")
    p.add_argument("--skip", default="", help="comma-separated benchmarks not to run")
    p.add_argument("--with", dest="extra", action="append", default=[], metavar='NAME="ARGS"',
                   help="arguments for one benchmark (repeatable)")
    p.add_argument("--markdown", default="BENCHMARKS.md", help="file whose table is written/updated")
    p.add_argument("--plot", default=None, help="PNG of the sweeps (default: bench_throughput.png next to it)")
    p.add_argument("--results-dir", default=None, help="also keep each benchmark's raw JSON here")
    p.add_argument("--from-json", nargs="+", default=None, metavar="FILE",
                   help="use saved results (objects with 'command' and 'result', or plain benchmark JSON)")
    p.add_argument("--timeout", type=float, default=None, help="seconds allowed per benchmark")
    p.set_defaults(func=run)


def benchmark_names() -> list[str]:
    """Registered benchmarks whose module exists (excluding this one)."""
    import importlib.util

    from jaxrec.bench.commands import BENCHMARKS

    return [name for name, module in BENCHMARKS.items()
            if module != __name__ and importlib.util.find_spec(module) is not None]


def run_one(name: str, args: list[str], timeout: float | None) -> dict:
    """Run ``jaxrec bench NAME ARGS`` in a fresh process; its stdout must be one JSON object."""
    cmd = [sys.executable, "-m", "jaxrec.cli", "bench", name, *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise JaxrecError(f"bench {name}: no result within {timeout:.0f} s") from None
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise JaxrecError(f"bench {name} exited with status {proc.returncode}: {tail}")
    text = proc.stdout
    try:
        return json.loads(text[text.index("{"):])
    except ValueError:
        raise JaxrecError(f"bench {name}: stdout is not one JSON object: {text[:200]!r}") from None


def _parse_extra(items: list[str]) -> dict[str, list[str]]:
    out = {}
    for item in items:
        name, sep, rest = item.partition("=")
        if not sep:
            raise JaxrecError(f'--with expects NAME="ARGS", got {item!r}')
        out[name.strip()] = shlex.split(rest)
    return out


def _load_saved(files: list[str]) -> list[tuple[str, dict]]:
    out = []
    for file in files:
        try:
            data = json.loads(Path(file).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise JaxrecError(f"{file}: not a readable JSON file ({e})") from None
        if "result" in data and "command" in data:
            out.append((data["command"], data["result"]))
        else:
            out.append((f"jaxrec bench {data.get('benchmark', '?')}", data))
    return out


def run(args: argparse.Namespace) -> int:
    from jaxrec.bench.report import plot_sweeps, summarize, sweeps, update_markdown

    failures = []
    if args.from_json:
        results = _load_saved(args.from_json)
    else:
        extra = _parse_extra(args.extra)
        names = benchmark_names()
        only = [n for n in args.only.split(",") if n]
        skip = {n for n in args.skip.split(",") if n}
        unknown = sorted((set(only) | skip | set(extra)) - set(names))
        if unknown:
            raise JaxrecError(f"unknown benchmark(s) {unknown}; available: {names}")
        results = []
        for name in [n for n in (only or names) if n not in skip]:
            command = shlex.join(["jaxrec", "bench", name, *extra.get(name, [])])
            print(f"jaxrec bench all: {command}", file=sys.stderr, flush=True)
            try:
                result = run_one(name, extra.get(name, []), args.timeout)
            except JaxrecError as e:
                failures.append(str(e))
                print(f"jaxrec bench all: {e}", file=sys.stderr)
                continue
            results.append((command, result))
            if args.results_dir:
                with atomic_file(Path(args.results_dir) / f"{name}.json") as f:
                    json.dump({"command": command, "result": result}, f, indent=2)
    markdown = Path(args.markdown)
    series = [s for _, result in results for s in sweeps(result)]
    plot_path = Path(args.plot) if args.plot else markdown.with_name("bench_throughput.png")
    plotted = bool(series) and plot_sweeps(series, plot_path)
    if series and not plotted:
        print("jaxrec bench all: matplotlib is not installed (pip install 'jaxrec[bench]'); no plot", file=sys.stderr)
    plot_ref = None
    if plot_path.exists():  # this run's plot, or an earlier one that still stands
        try:
            plot_ref = plot_path.resolve().relative_to(markdown.resolve().parent).as_posix()
        except ValueError:
            plot_ref = str(plot_path.resolve())
    rows = [summarize(result, command) for command, result in results]
    if rows:
        update_markdown(markdown, rows, plot_ref)
    print(json.dumps({"rows": rows, "plot": str(plot_path) if plotted else None, "failures": failures}, indent=2))
    return 1 if failures else 0
