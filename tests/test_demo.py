"""`jaxrec demo --quick`: the baselines on the tiny synthetic shop, table + JSON.

LC-Rec and TIGER have their own end-to-end tests (tests/test_lcrec.py, tests/test_tiger.py).
"""

import json

from jaxrec.cli import main
from jaxrec.methods.demo import RUNNERS, format_table


def test_demo_quick(tmp_path, capsys):
    assert main(["demo", "--quick", "--out", str(tmp_path / "demo"), "--seed", "0",
                 "--methods", "popularity,sasrec"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    rows = {row["method"]: row for row in result["rows"]}
    assert list(rows) == ["popularity", "sasrec"]
    assert {"popularity", "sasrec", "tiger", "lcrec"} <= set(RUNNERS)
    for row in rows.values():
        assert {f"{m}@{k}" for m in ("HR", "NDCG") for k in (1, 5, 10, 20)} <= set(row)
        assert row["users"] == result["dataset"]["users"]
    assert rows["sasrec"]["NDCG@10"] > rows["popularity"]["NDCG@10"]
    assert "popularity" in captured.err and "NDCG@10" in captured.err  # the table
    assert json.loads((tmp_path / "demo" / "results.json").read_text()) == result
    assert (tmp_path / "demo" / "dataset" / "meta.json").is_file()


def test_unknown_method_is_a_clear_error(tmp_path, capsys):
    assert main(["demo", "--quick", "--out", str(tmp_path), "--methods", "popularity,nope"]) == 2
    assert "nope" in capsys.readouterr().err


def test_table_format():
    row = {"method": "x", "seconds": 1.0, **{f"{m}@{k}": 0.5 for m in ("HR", "NDCG") for k in (1, 5, 10, 20)}}
    lines = format_table([row]).splitlines()
    assert lines[0].split()[:3] == ["method", "HR@1", "NDCG@1"] and lines[1].startswith("x")
