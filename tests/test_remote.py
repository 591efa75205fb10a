"""Bucket paths against a real local GCS emulator (the ``gcs`` fixture: gcp-storage-emulator on 127.0.0.1): a dataset
prepared into gs:// and read back, one-shot outputs that appear whole or not at all, and a training run whose
run directory and checkpoints live in the bucket, preempted by SIGTERM and resumed to the uninterrupted model."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from jaxrec.cli import main

CLI = [sys.executable, "-c", "import sys; from jaxrec.cli import main; sys.exit(main(sys.argv[1:]))"]
BUCKET = "jaxrec-test"  # the gcs fixture's


def test_a_dataset_prepared_into_a_bucket_reads_back_equal_and_is_replaced_only_as_a_dataset(gcs, tmp_path):
    from jaxrec.data.dataset import Dataset

    local, url = tmp_path / "tiny", f"gs://{BUCKET}/data/tiny"
    for out in (str(local), url):
        assert main(["data", "prepare", "--format", "synthetic", "--input", "tiny", "--out", out]) == 0
    fs = gcs.fs()
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.find(f"{BUCKET}/data/tiny")) == sorted(
        p.name for p in local.iterdir())
    a, b = Dataset.load(local), Dataset.load(url)
    assert a.num_users == b.num_users and a.num_items == b.num_items
    assert np.array_equal(a.offsets, b.offsets) and np.array_equal(a.item_ids, b.item_ids)
    # preparing again replaces a dataset; a prefix holding something else is refused, and left as it was
    assert main(["data", "prepare", "--format", "synthetic", "--input", "tiny", "--out", url]) == 0
    fs.pipe(f"{BUCKET}/other/notes.txt", b"mine")
    assert main(["data", "prepare", "--format", "synthetic", "--input", "tiny", "--out", f"gs://{BUCKET}/other"]) == 2
    assert fs.find(f"{BUCKET}/other") == [f"{BUCKET}/other/notes.txt"]


def test_a_bucket_object_is_fetched_again_only_when_it_changes(gcs, tmp_path):
    from jaxrec.remote import local_input

    fs = gcs.fs()
    fs.pipe(f"{BUCKET}/inputs/a.json", b'{"v": 1}')
    first = local_input(f"gs://{BUCKET}/inputs/a.json")
    assert first.read_text() == '{"v": 1}'
    assert local_input(f"gs://{BUCKET}/inputs/a.json").stat().st_mtime_ns == first.stat().st_mtime_ns  # cached
    fs.pipe(f"{BUCKET}/inputs/a.json", b'{"v": 22}')
    assert local_input(f"gs://{BUCKET}/inputs/a.json").read_text() == '{"v": 22}'
    from jaxrec.errors import JaxrecError

    with pytest.raises(JaxrecError, match="no such object or prefix"):
        local_input(f"gs://{BUCKET}/inputs/missing.json")


def test_training_in_a_bucket_is_preempted_and_resumes_to_the_uninterrupted_model(gcs, tmp_path):
    """Data, run directory and orbax checkpoints all in gs://: SIGTERM mid-run exits 143 with run.json in the
    bucket saying "preempted"; the same command resumes from the bucket's checkpoint; the final model equals
    an uninterrupted local run's, byte for byte."""
    from test_bigrec import TINY

    from jaxrec.remote import bucket_shadow

    from jaxrec.config import from_dict
    from jaxrec.data.source import DataConfig, load_dataset

    data = f"gs://{BUCKET}/data/tiny-bigrec"
    load_dataset(from_dict(DataConfig, TINY["data"])).save(data)
    train = {**TINY["train"], "steps": 100000, "optim": {"decay": "constant"}}

    def config(out: str, ck: str, name: str) -> list[str]:
        cfg = {**TINY, "data": {"path": data}, "out_dir": out, "train": {**train, "checkpoint": {"dir": ck, "every": 1}}}
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
        return CLI + ["train", "--config", str(tmp_path / f"{name}.yaml")]

    url = f"gs://{BUCKET}/runs/bigrec"
    cli = config(url, f"{url}/ck", "bucket")
    proc = subprocess.Popen(cli, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log, deadline = bucket_shadow(url) / "logs" / "metrics.jsonl", time.time() + 300
    while proc.poll() is None and time.time() < deadline and not (log.is_file() and len(log.read_text().splitlines()) >= 2):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err
    fs = gcs.fs()
    meta = json.loads(fs.cat(f"{BUCKET}/runs/bigrec/run.json"))
    assert meta["state"] == "preempted" and meta["step"] >= 2
    assert meta["config"]["out_dir"] == url  # the run records its URL, not the local copy
    assert json.loads(out)["out_dir"] == url
    assert fs.exists(f"{BUCKET}/runs/bigrec/ck/last/{meta['step']}")
    steps = meta["step"] + 2

    done = subprocess.run(cli + ["--set", f"train.steps={steps}", "--set", "train.checkpoint.allow_config_change=true"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    finished = json.loads(fs.cat(f"{BUCKET}/runs/bigrec/run.json"))
    assert finished["state"] == "finished" and finished["step"] == steps

    local = tmp_path / "reference"
    ref = subprocess.run(config(str(local), str(local / "ck"), "local") + ["--set", f"train.steps={steps}"],
                         capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr
    for name in ("model/model.safetensors", "tokenizer/tokenizer.json"):
        assert fs.cat(f"{BUCKET}/runs/bigrec/{name}") == (local / name).read_bytes(), name

    def losses(lines):
        return {r["step"]: r["train/loss"] for r in map(json.loads, lines) if "train/loss" in r}

    bucket_log = losses(fs.cat(f"{BUCKET}/runs/bigrec/logs/metrics.jsonl").decode().splitlines())
    assert bucket_log == losses((local / "logs" / "metrics.jsonl").read_text().splitlines())  # the same trajectory
    assert sorted(bucket_log) == list(range(1, steps + 1))


def test_a_run_copy_whose_upload_never_completed_is_kept_aside_not_deleted(gcs):
    """A command killed before its upload (or whose upload failed) leaves results only in the local copy: the next
    command on that run moves the copy aside, with a warning, instead of replacing it with the bucket's."""
    from jaxrec.remote import StagedOutput

    url = f"gs://{BUCKET}/runs/unpushed"
    first = StagedOutput(url)
    first.pull()
    (first.local / "results.json").write_text('{"only": "here"}')  # then killed: no push
    second = StagedOutput(url)
    second.pull()
    kept = [p for p in first.local.parent.iterdir() if p.name.startswith(f"{first.local.name}.not-uploaded-")]
    assert len(kept) == 1 and (kept[0] / "results.json").read_text() == '{"only": "here"}'
    assert not (second.local / "results.json").exists()
    (second.local / "results.json").write_text('{"v": 2}')
    second.push()  # a complete upload: the next pull replaces the copy, nothing more is set aside
    third = StagedOutput(url)
    third.pull()
    assert (third.local / "results.json").read_text() == '{"v": 2}'
    assert len([p for p in first.local.parent.iterdir() if p.name.startswith(f"{first.local.name}.not-uploaded-")]) == 1
