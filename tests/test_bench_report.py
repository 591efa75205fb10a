"""`jaxrec bench all` reporting: fake benchmark JSON -> BENCHMARKS.md table (idempotent, hand text kept) + PNG."""

import argparse
import importlib.util
import json

from jaxrec.bench import all as bench_all
from jaxrec.bench.report import BEGIN, END, read_rows, summarize, sweeps

HW_CPU = {"date": "2025-01-02", "device_kind": "cpu", "device_count": 8}
HW_TPU = {"date": "2025-01-03", "device_kind": "TPU v5p", "device_count": 4}
TRAIN = {"benchmark": "train", "tokens_per_s": 5000.0, "mfu": 0.1, "peer": "transformers+peft (torch, CPU)",
         "peer_tokens_per_s": 2000.0, "speedup": 2.5, "hardware": HW_CPU}
DECODE = {"benchmark": "decode", "users_per_s": 40.0, "unconstrained_users_per_s": 50.0, "peer_users_per_s": 8.0,
          "scale": [{"items": 100000, "users_per_s": 30.0}, {"items": 10000, "users_per_s": 38.0}],
          "hardware": HW_CPU}
SASREC = {"benchmark": "sasrec", "ours": {"NDCG@10": 0.033, "Recall@10": 0.06},
          "reference": {"source": "TIGER table", "NDCG@10": 0.0318}, "hardware": HW_CPU}
EXPLICIT = {"benchmark": "ground", "summary": {"figure": "queries/s", "value": 1e6, "peer": "torch.cdist",
                                               "peer_value": 2.5e5, "ratio": 4.0}, "hardware": HW_TPU}


def saved(tmp_path, name, command, result):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"command": command, "result": result}))
    return str(path)


def run_all(tmp_path, files):
    args = argparse.Namespace(from_json=files, markdown=str(tmp_path / "BENCHMARKS.md"), plot=None,
                              results_dir=None, extra=[], only="", skip="", timeout=None)
    return bench_all.run(args)


def test_rows_read_figure_peer_and_ratio():
    row = summarize(TRAIN, "jaxrec bench train")
    assert row["figure"] == "tokens_per_s = 5,000" and row["peer"].startswith("transformers+peft")
    assert row["ratio"] == "2.50x" and row["device"] == "cpu x8" and row["date"] == "2025-01-02"
    assert summarize(DECODE, "jaxrec bench decode")["ratio"] == "5.00x"
    assert summarize(SASREC, "jaxrec bench sasrec")["figure"] == "NDCG@10 = 0.033"
    assert summarize(EXPLICIT, "jaxrec bench ground")["ratio"] == "4.00x"
    (series,) = sweeps(DECODE)
    assert series["x"] == [10000, 100000] and series["axis"].startswith("catalog size")


def test_markdown_update_is_idempotent_and_keeps_hand_written_text(tmp_path):
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n\nHand-written intro | with a pipe.\n")
    files = [saved(tmp_path, "train", "jaxrec bench train --steps 5", TRAIN),
             saved(tmp_path, "decode", "jaxrec bench decode --scale 10000,100000", DECODE),
             saved(tmp_path, "sasrec", "jaxrec bench sasrec --data d", SASREC)]
    assert run_all(tmp_path, files) == 0
    first = md.read_text()
    assert first.startswith("# Benchmarks\n\nHand-written intro | with a pipe.\n")
    assert first.count(BEGIN) == 1 and first.count(END) == 1
    assert "| train | tokens_per_s = 5,000 |" in first and "`jaxrec bench decode --scale 10000,100000`" in first
    has_matplotlib = importlib.util.find_spec("matplotlib") is not None  # the plot is the `bench` extra
    assert ("![throughput vs batch / catalog size](bench_throughput.png)" in first) == has_matplotlib
    if has_matplotlib:
        assert (tmp_path / "bench_throughput.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    md.write_text(first + "\nNotes written after the table.\n")
    assert run_all(tmp_path, files) == 0
    assert md.read_text() == first + "\nNotes written after the table.\n"  # same results: same bytes

    faster = dict(TRAIN, tokens_per_s=6000.0)
    assert run_all(tmp_path, [saved(tmp_path, "train2", "jaxrec bench train --steps 5", faster),
                              saved(tmp_path, "ground", "jaxrec bench ground", EXPLICIT)]) == 0
    rows = read_rows(md.read_text())
    assert len(rows) == 4  # train replaced (same device and command), ground added, others kept
    assert [r["figure"] for r in rows if r["benchmark"] == "train"] == ["tokens_per_s = 6,000"]
    assert md.read_text().endswith("\nNotes written after the table.\n")
