"""Outputs never destroy what jaxrec did not write: `data prepare`/`synth` refuse an --out that is a file
or a directory of other content (unless --overwrite), replace their own dataset directories, and clean up
(or restore) what a killed run left beside the output."""

import json
import os
import subprocess
import sys

import pytest

from jaxrec.atomic import HOST, atomic_dir
from jaxrec.cli import main
from jaxrec.models.run_dir import start_run


def prepare(out, *extra):
    return main(["data", "prepare", "--format", "synthetic", "--input", "tiny", "--out", str(out), *extra])


def test_a_directory_of_other_content_or_a_file_is_refused_and_left_intact(tmp_path, capsys):
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    assert prepare(mine) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"jaxrec: error: {mine} exists and is a directory with other content, not a jaxrec dataset "
                   f"directory; refusing to replace it: choose another output path, or pass --overwrite to replace it"]
    assert (mine / "thesis.tex").read_text() == "years of work" and sorted(os.listdir(tmp_path)) == ["notes"]

    file = tmp_path / "data.csv"
    file.write_text("u,i\n")
    assert main(["data", "synth", "--preset", "tiny", "--out", str(file)]) == 2
    assert "exists and is a file" in capsys.readouterr().err and file.read_text() == "u,i\n"

    assert prepare(mine, "--overwrite") == 0  # asked for explicitly
    assert json.loads((mine / "meta.json").read_text())["format"] == "jaxrec-dataset"


def test_a_dataset_directory_or_an_empty_one_is_replaced(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert prepare(empty) == 0
    before = (empty / "meta.json").stat().st_mtime_ns
    assert prepare(empty, "--seed", "1") == 0  # our own output: replaced without asking
    assert (empty / "meta.json").stat().st_mtime_ns != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]  # no temp or backup left


def test_leftovers_of_killed_runs_are_removed_or_restored(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    out = tmp_path / "ds"
    stale = tmp_path / f".ds.tmp-{HOST}-{dead}-x1y2"  # a killed writer's half-written temp dir
    stale.mkdir()
    (stale / "offsets.npy").write_bytes(b"half")
    running = tmp_path / f".ds.tmp-{HOST}-{os.getpid()}-live"  # a writer still running: not touched
    running.mkdir()
    other_host = tmp_path / f".ds.tmp-otherhost-{dead}-z"  # another machine's: cannot tell, not touched
    other_host.mkdir()
    assert prepare(out) == 0
    assert not stale.exists() and running.is_dir() and other_host.is_dir()

    # killed between moving the old output aside and moving the new one in: the old one comes back
    aside = tmp_path / f".ds.tmp-{HOST}-{dead}-old"
    out.rename(aside)
    with pytest.raises(RuntimeError):
        with atomic_dir(out, lambda p: True):
            assert (out / "meta.json").is_file()  # restored before this write began
            raise RuntimeError("the new write fails")
    assert (out / "meta.json").is_file() and not aside.exists()


def test_index_build_refuses_to_replace_a_file_that_is_not_an_index(tmp_path, capsys):
    import numpy as np

    np.save(tmp_path / "emb.npy", np.zeros((4, 3), np.float32))
    notes = tmp_path / "notes.json"
    notes.write_text('{"not": "an index"}')
    assert main(["index", "build", "--embeddings", str(tmp_path / "emb.npy"), "--out", str(notes)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"jaxrec: error: {notes} exists and is not a semantic index file; refusing to replace it: choose another "
        f"--out, or pass --overwrite to replace it")
    assert notes.read_text() == '{"not": "an index"}'


def test_a_run_dir_of_another_model_size_is_refused_before_anything_is_written(tmp_path):
    from jaxrec.errors import ConfigError
    from jaxrec.models.section import ModelSection
    from jaxrec.models import build_model, tiny_llama_config

    section = ModelSection()
    small = build_model(tiny_llama_config(64, hidden_size=16, intermediate_size=32, num_layers=1), seed=0)
    start_run(tmp_path, section, small, None)
    before = (tmp_path / "base_model" / "model.safetensors").read_bytes()
    start_run(tmp_path, section, small, None)  # a resumed run: the base model is kept as it is
    wider = build_model(tiny_llama_config(64, hidden_size=32, intermediate_size=32, num_layers=1), seed=0)
    with pytest.raises(ConfigError, match="holds a run of another model .*hidden_size=16, this config 32"):
        start_run(tmp_path, section, wider, None)
    assert (tmp_path / "base_model" / "model.safetensors").read_bytes() == before


def test_a_file_output_removes_the_temp_file_a_killed_writer_left(tmp_path):
    import subprocess
    import sys

    from jaxrec.atomic import write_json

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    (tmp_path / f".r.json.tmp-{HOST}-{dead}-abc").write_text('{"half')
    write_json(tmp_path / "r.json", {"ok": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]
