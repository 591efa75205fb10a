"""`jaxrec demo --quick`: the baselines on the tiny synthetic shop, table + JSON.

LC-Rec and TIGER have their own end-to-end tests (tests/test_lcrec.py, tests/test_tiger.py).
"""

import json

import pytest
from jaxrec.cli import main
from jaxrec.commands.demo import ROWS, format_table
from jaxrec.eval.sample import eval_subset
from jaxrec.models.run_dir import make_tokenizer


COLUMNS = [f"{m}@{k}" for k in (1, 5, 10, 20) for m in ("HR", "NDCG")]
# The quick demo's rows at seed 0, as `jaxrec demo --quick --seed 0` prints them (4 decimals; README).
# Popularity is counting and sorting: it reproduces exactly on any host.
POPULARITY = [0.0200, 0.0200, 0.1267, 0.0761, 0.2300, 0.1086, 0.3800, 0.1457]
# SASRec is learned: fp32 reductions may differ across CPUs/BLAS and move a user sitting on a near-tie.
# abs=0.01 lets about 3 of the 300 test users change rank while a broken model (e.g. popularity's
# NDCG@10 0.1086 instead of 0.2068) fails.
SASREC = [0.0700, 0.0700, 0.2767, 0.1713, 0.3867, 0.2068, 0.5367, 0.2437]


def test_demo_quick(tmp_path, capsys):
    assert main(["demo", "--quick", "--out", str(tmp_path / "demo"), "--seed", "0",
                 "--methods", "popularity,sasrec"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    rows = {row["method"]: row for row in result["rows"]}
    assert list(rows) == ["popularity", "sasrec"]
    assert {"popularity", "sasrec", "tiger", "lcrec"} <= set(ROWS)
    assert result["dataset"]["users"] == 300 and all(row["users"] == 300 for row in rows.values())
    assert [round(rows["popularity"][c], 4) for c in COLUMNS] == POPULARITY
    assert [rows["sasrec"][c] for c in COLUMNS] == pytest.approx(SASREC, abs=0.01)
    assert rows["sasrec"]["NDCG@10"] > rows["popularity"]["NDCG@10"] + 0.05
    table = {line.split()[0]: line.split()[1:9] for line in captured.err.splitlines() if line.split()
             and line.split()[0] in rows}  # the printed table: the same figures to 4 decimals
    assert table["popularity"] == [f"{v:.4f}" for v in POPULARITY]
    assert table["sasrec"] == [f"{rows['sasrec'][c]:.4f}" for c in COLUMNS]
    assert json.loads((tmp_path / "demo" / "results.json").read_text()) == result
    assert (tmp_path / "demo" / "dataset" / "meta.json").is_file()


def test_unknown_method_is_a_clear_error(tmp_path, capsys):
    assert main(["demo", "--quick", "--out", str(tmp_path), "--methods", "popularity,nope"]) == 2
    assert "nope" in capsys.readouterr().err


def test_table_format():
    row = {"method": "x", "seconds": 1.0, **{f"{m}@{k}": 0.5 for m in ("HR", "NDCG") for k in (1, 5, 10, 20)}}
    lines = format_table([row]).splitlines()
    assert lines[0].split()[:3] == ["method", "HR@1", "NDCG@1"] and lines[1].startswith("x")


def test_llm_row_needs_llm_and_an_existing_checkpoint(tmp_path, capsys):
    assert main(["demo", "--quick", "--out", str(tmp_path), "--methods", "popularity,lcrec-llm"]) == 2
    assert "needs --llm" in capsys.readouterr().err
    assert main(["demo", "--quick", "--out", str(tmp_path), "--llm", str(tmp_path / "missing.gguf")]) == 2
    assert "missing.gguf" in capsys.readouterr().err
    assert main(["demo", "--quick", "--out", str(tmp_path), "--llm", "minilm-l6"]) == 2
    assert "sentence encoder" in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()


def test_llm_row_runs_lcrec_on_a_pretrained_model(tmp_path):
    """--llm with a saved tiny "pretrained" Llama: LC-Rec with LoRA on it; its popularity line is popularity
    on exactly the sampled test users."""

    from jaxrec.data.splits import leave_one_out
    from jaxrec.data.synthetic import make_preset
    from jaxrec.data.tasks.rows import leave_one_out_rows
    from jaxrec.eval.metrics import metrics_from_ranks
    from jaxrec.methods import lcrec
    from jaxrec.models.section import ModelSection, make_model
    from jaxrec.commands.demo import run_demo
    from jaxrec.eval.ranking import item_counts, static_ranks
    from jaxrec.models import save_pretrained
    from jaxrec.models.tokenizer import save_tokenizer

    ds = make_preset("tiny", seed=0)
    section = ModelSection(vocab_size=400, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2,
                               num_kv_heads=1, max_position_embeddings=512)
    tokenizer = make_tokenizer(section, lambda: lcrec.tokenizer_texts(ds), tmp_path / "bpe")
    save_pretrained(make_model(section, tokenizer), tmp_path / "hf")
    save_tokenizer(tokenizer, tmp_path / "hf")

    result = run_demo(tmp_path / "demo", quick=True, methods=["lcrec-llm"], llm=str(tmp_path / "hf"))
    (row,) = result["rows"]
    assert row["method"] == "lcrec-llm" and row["users"] == 4 and result["llm"] == str(tmp_path / "hf")
    run = json.loads((tmp_path / "demo" / "lcrec-llm-quick" / "run.json").read_text())
    assert run["mode"] == "lora" and run["config"]["train"]["steps"] == 2
    split = leave_one_out(ds)
    chosen = eval_subset(len(leave_one_out_rows(split, "test").users), 4, 0)
    targets = leave_one_out_rows(split, "test").targets[chosen]
    expected = metrics_from_ranks(static_ranks(item_counts(split.train, ds.num_items))[targets], (1, 5, 10, 20))
    assert row["popularity"] == {k: v for k, v in expected.items() if k.split("@")[0] in ("HR", "NDCG")}
    assert "popularity" in format_table(result["rows"]).splitlines()[2]
