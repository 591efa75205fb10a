"""Bad input and hostile environments give one line naming what is wrong, never a traceback, and
nothing half-written: file-system refusals, damaged datasets, stray tokens in raw files, a closed pipe."""

import subprocess
import sys

import numpy as np
import pytest

from jaxrec.cli import main

CLI = [sys.executable, "-c", "import sys; from jaxrec.cli import main; sys.exit(main(sys.argv[1:]))"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("ds") / "tiny"
    assert main(["data", "prepare", "--format", "synthetic", "--input", "tiny", "--out", str(out)]) == 0
    return out


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_an_output_path_the_file_system_refuses_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert main(["data", "synth", "--preset", "tiny", "--out", str(blocker / "ds")]) == 2
    assert one_line(capsys) == f"jaxrec: error: File exists: {blocker}"  # a file where a folder must go
    assert blocker.read_text() == "x"


def test_a_truncated_array_in_a_dataset_names_the_file(dataset, tmp_path, capsys):
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for f in dataset.iterdir():
        (damaged / f.name).write_bytes(f.read_bytes())
    data = (damaged / "item_ids.npy").read_bytes()
    (damaged / "item_ids.npy").write_bytes(data[: len(data) // 2])
    assert main(["data", "stats", str(damaged)]) == 2
    line = one_line(capsys)
    assert line.startswith(f"jaxrec: error: {damaged / 'item_ids.npy'}: not a readable .npy array (")
    assert line.endswith("the dataset is damaged: prepare it again with `jaxrec data prepare`")


def test_stray_tokens_in_raw_files_are_errors_at_file_and_line(tmp_path, capsys):
    ml = tmp_path / "ml"
    ml.mkdir()
    rows = [f"{u}\t{i}\t4\t88125{u}{i}" for u in range(1, 4) for i in range(1, 6)]
    rows[4] = "2\tfoo\t4\t881250949"  # line 5
    (ml / "u.data").write_text("\n".join(rows) + "\n")
    assert main(["data", "prepare", "--format", "movielens", "--input", str(ml / "u.data"), "--out",
                 str(tmp_path / "out")]) == 2
    assert one_line(capsys) == f"jaxrec: error: {ml / 'u.data'}:5: item id must be an integer id, got 'foo'"
    (tmp_path / "s3.txt").write_text("1 2 3\n2 3 4.0\n")
    assert main(["data", "prepare", "--format", "s3rec", "--input", str(tmp_path / "s3.txt"), "--out",
                 str(tmp_path / "out")]) == 2
    assert one_line(capsys) == f"jaxrec: error: {tmp_path / 's3.txt'}:2: item id must be an integer id, got '4.0'"
    assert main(["data", "prepare", "--format", "movielens", "--input", str(ml / "u.data") + "x", "--out",
                 str(tmp_path / "out")]) == 2
    capsys.readouterr()
    (ml / "u.item").mkdir()
    assert main(["data", "prepare", "--format", "s3rec", "--input", str(ml), "--out", str(tmp_path / "out")]) == 2
    assert one_line(capsys) == (f"jaxrec: error: {ml} is a directory; expected a file (name the file itself, "
                                f"e.g. {ml}/u.data)")
    assert not (tmp_path / "out").exists()


def test_a_reader_that_closes_the_pipe_ends_the_command_quietly(dataset):
    proc = subprocess.Popen(CLI + ["data", "stats", str(dataset)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # as `| head -c 0` would, before the command writes anything
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and err == ""


def test_kill_9_at_random_points_of_prepare_leaves_nothing_half_written(tmp_path):
    """SIGKILL `data prepare` (the demo preset: 3,000 users) at seeded random moments of its run time:
    each time the output is either absent or complete, and the next run cleans up what the killed one
    left (temp dir, lock) and writes the same dataset as an undisturbed run."""
    import signal
    import time

    from jaxrec.data.dataset import Dataset

    def command(out):
        return CLI + ["data", "prepare", "--format", "synthetic", "--input", "demo", "--out", str(out)]

    start = time.perf_counter()
    assert subprocess.run(command(tmp_path / "reference"), capture_output=True, timeout=300).returncode == 0
    duration, reference = time.perf_counter() - start, Dataset.load(tmp_path / "reference")
    out = tmp_path / "work" / "ds"
    for fraction in np.random.default_rng(0).uniform(0.2, 1.0, 4):
        proc = subprocess.Popen(command(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(fraction * duration)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        if out.exists():
            np.testing.assert_array_equal(Dataset.load(out).item_ids, reference.item_ids)  # complete or absent
    assert subprocess.run(command(out), capture_output=True, timeout=300).returncode == 0
    np.testing.assert_array_equal(Dataset.load(out).item_ids, reference.item_ids)
    assert sorted(p.name for p in out.parent.iterdir()) == ["ds"]


def test_a_full_disk_while_writing_is_one_line_and_leaves_nothing(tmp_path):
    """The file-size limit (RLIMIT_FSIZE) makes every write past 64 KiB fail as a full disk would: `data
    prepare` exits 2 with one line, and neither the output nor a temp dir is left."""
    import resource
    import signal

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing us
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    out = tmp_path / "ds"
    proc = subprocess.run(CLI + ["data", "prepare", "--format", "synthetic", "--input", "demo", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, preexec_fn=limit)
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("jaxrec: error: File too large"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_kill_9_during_training_then_rerunning_gives_the_uninterrupted_model(tmp_path):
    """SIGKILL `jaxrec train` (tiny BIGRec, a checkpoint every step) at two seeded moments of its run time,
    rerun the same command each time: the final model is bit-identical to an undisturbed run's."""
    import json
    import signal
    import time

    import yaml
    from test_bigrec import TINY

    def command(out):
        cfg = {**TINY, "out_dir": str(out),
               "train": {**TINY["train"], "steps": 6, "checkpoint": {"dir": str(out / "ck"), "every": 1}}}
        (tmp_path / f"{out.name}.yaml").write_text(yaml.safe_dump(cfg))
        return CLI + ["train", "--config", str(tmp_path / f"{out.name}.yaml")]

    start = time.perf_counter()
    assert subprocess.run(command(tmp_path / "reference"), capture_output=True, timeout=600).returncode == 0
    duration = time.perf_counter() - start
    out = tmp_path / "killed"
    for fraction in np.random.default_rng(1).uniform(0.5, 1.0, 2):
        proc = subprocess.Popen(command(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(fraction * duration)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert subprocess.run(command(out), capture_output=True, timeout=600).returncode == 0
    assert json.loads((out / "run.json").read_text())["state"] == "finished"
    for name in ("model/model.safetensors", "tokenizer/tokenizer.json"):
        assert (out / name).read_bytes() == (tmp_path / "reference" / name).read_bytes(), name


def test_kill_9_at_random_points_of_index_build_leaves_nothing_half_written(tmp_path):
    """SIGKILL `index build` at seeded moments: the index and its report are absent or whole; the rerun
    writes the same index as an undisturbed run."""
    import signal
    import time

    from test_index_rqvae import TINY

    rng = np.random.default_rng(0)
    np.save(tmp_path / "emb.npy", rng.normal(size=(300, 16)).astype(np.float32))

    def command(out):
        sets = [arg for s in TINY for arg in ("--set", s)]
        return CLI + ["index", "build", "--embeddings", str(tmp_path / "emb.npy"), "--out", str(out), *sets]

    start = time.perf_counter()
    assert subprocess.run(command(tmp_path / "reference.json"), capture_output=True, timeout=600).returncode == 0
    duration = time.perf_counter() - start
    out = tmp_path / "work" / "index.json"
    out.parent.mkdir()
    for fraction in rng.uniform(0.3, 1.0, 2):
        proc = subprocess.Popen(command(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(fraction * duration)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        if out.exists():
            assert out.read_text() == (tmp_path / "reference.json").read_text()  # whole, or not there
    assert subprocess.run(command(out), capture_output=True, timeout=600).returncode == 0
    assert out.read_text() == (tmp_path / "reference.json").read_text()
    assert sorted(p.name for p in out.parent.iterdir()) == ["index.json", "index.report.json"]
