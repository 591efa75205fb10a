"""One writer per output: a second jaxrec command on a locked output stops with one line; stale locks of
processes that are gone are taken over; the lock is released however the command ends."""

import json
import subprocess
import sys

import pytest

from jaxrec.atomic import HOST
from jaxrec.errors import JaxrecError
from jaxrec.run_lock import lock_path, output_lock

CLI = [sys.executable, "-c", "import sys; from jaxrec.cli import main; sys.exit(main(sys.argv[1:]))"]


def test_a_second_writer_gets_one_line_naming_the_holder(tmp_path):
    out = tmp_path / "ds"
    with output_lock(out, "train"):
        holder = json.loads(lock_path(out).read_text())
        second = subprocess.run(CLI + ["data", "prepare", "--format", "synthetic", "--input", "tiny", "--out", str(out)],
                                capture_output=True, text=True, timeout=300)
    assert second.returncode == 2
    assert second.stderr.strip().splitlines() == [
        f"jaxrec: error: {out} is in use by `jaxrec train` (pid {holder['pid']} on host {HOST}, since "
        f"{holder['started']}); wait for it to finish, or if it is no longer running, delete {lock_path(out)}"]
    assert not out.exists() and not lock_path(out).exists()  # nothing written; released on exit


def test_stale_locks_are_taken_over_only_when_provably_stale(tmp_path, caplog):
    out = tmp_path / "run"
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    lock_path(out).write_text(json.dumps({"pid": dead, "host": HOST, "command": "train", "started": "x"}))
    with caplog.at_level("WARNING"), output_lock(out, "eval"):
        assert json.loads(lock_path(out).read_text())["command"] == "eval"
    assert f"taking over a stale lock of `jaxrec train` (pid {dead} is gone)" in caplog.text
    assert not lock_path(out).exists()

    lock_path(out).write_text(json.dumps({"pid": dead, "host": "elsewhere", "command": "train", "started": "x"}))
    with pytest.raises(JaxrecError, match="pid .* on host elsewhere"):  # cannot check another host's pid
        with output_lock(out, "eval"):
            pass
    assert json.loads(lock_path(out).read_text())["host"] == "elsewhere"  # not ours to remove


def test_the_lock_is_released_when_the_command_fails(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RuntimeError):
        with output_lock(out, "train"):
            raise RuntimeError("boom")
    assert not lock_path(out).exists()
