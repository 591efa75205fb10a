"""Benchmark JSON → the BENCHMARKS.md table (figure, peer, ratio, device, date, command) and a PNG plot.

The table lives between the marker comments :data:`BEGIN` / :data:`END`; everything outside them
(hand-written notes) is left as it is. Inside, a hidden JSON comment keeps the rows, so an update
merges: a row is keyed by (benchmark, device, command) and replaced by a newer run with the same
key; rows of other devices stay. Re-writing the same results gives the same bytes.

What a row shows is read from the benchmark's JSON: an explicit ``"summary": {"figure", "value",
"peer", "peer_value", "ratio"}`` wins; otherwise the first top-level ``*_per_s`` number is the figure,
``peer_<same key>`` the peer (named by ``"peer"`` when given) and the ratio is figure / peer; a
``"ours"`` / ``"reference"`` pair (quality benchmarks) gives NDCG@10 against the published number.
Sweeps — top-level lists of records with an ``items`` / ``catalog_size`` or ``batch`` / ``batch_size``
field and a ``*_per_s`` field (e.g. ``jaxrec bench decode --scale ...``) — are plotted as throughput
against catalog size / batch size.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from jaxrec.atomic import atomic_file

BEGIN = "<!-- jaxrec-bench:begin (written by `jaxrec bench all`; edit outside these markers) -->"
END = "<!-- jaxrec-bench:end -->"
ROWS_PREFIX = "<!-- rows: "
COLUMNS = ("benchmark", "figure", "peer", "ratio", "device", "date", "command")
SWEEP_AXES = {"items": "catalog size (items)", "catalog_size": "catalog size (items)",
              "batch": "batch size", "batch_size": "batch size"}


def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _fmt(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.4g}"


def device_of(result: dict) -> str:
    hw = result.get("hardware") or {}
    kind = hw.get("device_kind", "?")
    count = hw.get("device_count")
    return f"{kind} x{count}" if count else kind


def summarize(result: dict, command: str) -> dict:
    """One table row (strings) for a benchmark's JSON ``result`` run by ``command``."""
    name = str(result.get("benchmark", command.split()[2] if len(command.split()) > 2 else "?"))
    summary = result.get("summary")
    if summary is None:
        summary = _summary_from_keys(result)
    figure = f"{summary['figure']} = {_fmt(summary['value'])}" if summary.get("value") is not None else "-"
    peer = "-"
    if summary.get("peer_value") is not None:
        peer = f"{summary.get('peer', 'peer')}: {_fmt(summary['peer_value'])}"
    ratio = summary.get("ratio")
    if ratio is None and summary.get("peer_value") and summary.get("value") is not None:
        ratio = summary["value"] / summary["peer_value"]
    return {"benchmark": name, "figure": figure, "peer": peer, "ratio": "-" if ratio is None else f"{ratio:.2f}x",
            "device": device_of(result), "date": str((result.get("hardware") or {}).get("date", "-")),
            "command": command}


def _summary_from_keys(result: dict) -> dict:
    if isinstance(result.get("ours"), dict) and isinstance(result.get("reference"), dict):
        metric = "NDCG@10" if "NDCG@10" in result["ours"] else next(
            (k for k, v in result["ours"].items() if _num(v) and k in result["reference"]), None)
        if metric is not None:
            ref = result["reference"]
            return {"figure": metric, "value": result["ours"][metric],
                    "peer": f"published ({ref.get('source', 'reference')})", "peer_value": ref.get(metric)}
    key = next((k for k, v in result.items() if k.endswith("_per_s") and _num(v)
                and not k.startswith(("peer_", "unconstrained_"))), None)
    if key is None:
        return {"figure": "-", "value": None}
    peer_value = result.get(f"peer_{key}")
    peer_name = result.get("peer") if isinstance(result.get("peer"), str) else "peer"
    return {"figure": key, "value": result[key], "peer": peer_name,
            "peer_value": peer_value if _num(peer_value) else None}


def sweeps(result: dict) -> list[dict]:
    """Throughput series in ``result``: {label, axis, x, y, metric} per top-level list of records."""
    out = []
    for field, records in result.items():
        if not (isinstance(records, list) and records and all(isinstance(r, dict) for r in records)):
            continue
        x_key = next((k for k in SWEEP_AXES if all(_num(r.get(k)) for r in records)), None)
        y_key = next((k for k in records[0] if k.endswith("_per_s") and all(_num(r.get(k)) for r in records)), None)
        if x_key and y_key:
            points = sorted((r[x_key], r[y_key]) for r in records)
            out.append({"label": f"{result.get('benchmark', '?')} {field} ({device_of(result)})",
                        "axis": SWEEP_AXES[x_key], "x": [p[0] for p in points], "y": [p[1] for p in points],
                        "metric": y_key})
    return out


def merge_rows(old: list[dict], new: list[dict]) -> list[dict]:
    """``old`` updated by ``new`` (same benchmark, device and command: replaced), in a stable order."""
    key = lambda r: (r["benchmark"], r["device"], r["command"])  # noqa: E731
    merged = {key(r): r for r in old}
    merged.update({key(r): r for r in new})
    return [merged[k] for k in sorted(merged)]


def render(rows: list[dict], plot: str | None) -> str:
    """The block between (and including) the markers."""
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = [BEGIN, ROWS_PREFIX + json.dumps(rows, sort_keys=True).replace("--", "\\u002d\\u002d") + " -->", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(r[c]) if c != "command" else f"`{cell(r[c])}`" for c in COLUMNS) + " |"
              for r in rows]
    if plot:
        lines += ["", f"![throughput vs batch / catalog size]({plot})"]
    lines.append(END)
    return "\n".join(lines)


def read_rows(text: str) -> list[dict]:
    """The rows stored in the hidden comment of an existing block ([] when there is none)."""
    match = re.search(re.escape(BEGIN) + r".*?" + re.escape(ROWS_PREFIX) + r"(.*?) -->", text, re.S)
    return json.loads(match.group(1)) if match else []


def update_markdown(path: str | Path, rows: list[dict], plot: str | None = None) -> list[dict]:
    """Merge ``rows`` into the table of ``path`` (created when missing); returns all rows."""
    path = Path(path)
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    merged = merge_rows(read_rows(text), rows)
    block = render(merged, plot)
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n## Results (`jaxrec bench all`)\n\n" + block + "\n"
    with atomic_file(path) as f:
        f.write(text)
    return merged


def plot_sweeps(series: list[dict], path: str | Path) -> bool:
    """Write a PNG (one panel per sweep axis, log x); False when matplotlib (extra ``bench``) is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    axes_names = sorted({s["axis"] for s in series})
    fig, axes = plt.subplots(1, len(axes_names), figsize=(6 * len(axes_names), 4), squeeze=False)
    for ax, axis_name in zip(axes[0], axes_names):
        for s in (s for s in series if s["axis"] == axis_name):
            ax.plot(s["x"], s["y"], marker="o", label=s["label"])
        ax.set_xscale("log")
        ax.set_xlabel(axis_name)
        ax.set_ylabel(" / ".join(sorted({s["metric"] for s in series if s["axis"] == axis_name})))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_file(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120, metadata={"Software": None})
    plt.close(fig)
    return True
