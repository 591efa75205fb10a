"""Dry runs of the launch scripts print every command and submit nothing."""

import subprocess
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "tpu_scripts"


def run(script, *args):
    return subprocess.run(["bash", str(SCRIPTS / script), *args], capture_output=True, text=True)


def test_tpu_all_steps_dry_run():
    r = run("tpu_vm.sh", "all", "--zone", "us-east5-a", "--accelerator", "v4-32", "--name", "t1", "--dry-run",
            "--", "train", "--config", "configs/scale/x.yaml", "--set", "train.steps=10")
    assert r.returncode == 0, r.stderr
    lines = [l for l in r.stdout.splitlines() if l.startswith("+ ")]
    joined = "\n".join(lines)
    assert lines[0].startswith("+ gcloud compute tpus tpu-vm create t1 --zone us-east5-a --accelerator-type v4-32")
    assert "--version tpu-ubuntu2204-base" in lines[0]  # the v4 runtime, not v5p's
    assert "--worker=all" in joined and "python3.11\\ -m\\ venv" in joined and "\\[tpu\\]" in joined
    assert "jaxrec\\ train\\ --config\\ configs/scale/x.yaml\\ --set\\ train.steps=10" in joined
    assert lines[-1] == "+ gcloud compute tpus tpu-vm delete t1 --zone us-east5-a --quiet"


@pytest.mark.parametrize("accelerator, image", [("v5litepod-16", "v2-alpha-tpuv5-lite"), ("v5p-8", "v2-alpha-tpuv5"),
                                                 ("v6e-8", "v2-alpha-tpuv6e")])
def test_tpu_runtime_image_follows_the_accelerator_family(accelerator, image):
    r = run("tpu_vm.sh", "create", "--zone", "z", "--accelerator", accelerator, "--dry-run")
    assert r.returncode == 0 and f"--version {image}" in r.stdout
    r = run("tpu_vm.sh", "create", "--zone", "z", "--accelerator", accelerator, "--version", "mine", "--dry-run")
    assert "--version mine" in r.stdout


@pytest.mark.parametrize("args, message", [
    (["create", "--dry-run"], "--zone"),
    (["launch", "--zone", "z"], "unknown step"),
    (["run", "--zone", "z", "--dry-run"], "needs jaxrec arguments"),
    (["create", "--zone", "z", "--bogus"], "unknown option '--bogus'"),
])
def test_tpu_errors(args, message):
    r = run("tpu_vm.sh", *args)
    assert r.returncode == 2 and message in r.stderr


def test_gpu_slurm_dry_run():
    r = run("gpu_slurm.sh", "--nodes", "4", "--gpus-per-node", "8", "--partition", "a100", "--dry-run",
            "--", "train", "--config", "c.yaml")
    assert r.returncode == 0, r.stderr
    assert "#SBATCH --nodes=4" in r.stdout and "#SBATCH --partition=a100" in r.stdout
    assert "JAXREC_NUM_PROCESSES=$SLURM_NTASKS JAXREC_PROCESS_ID=$SLURM_PROCID jaxrec train --config c.yaml" in r.stdout
    assert "+ sbatch" in r.stdout
    assert run("gpu_slurm.sh", "--nodes", "0", "--", "x").returncode == 2


FAKE_GCLOUD = """#!/usr/bin/env bash
# records every call; the run (the ssh command starting jaxrec) exits with the next status in $STATUSES
echo "$*" >> "$CALLS"
if [[ "$*" == *JAXREC_DISTRIBUTED=auto* ]]; then
  n=$(grep -c JAXREC_DISTRIBUTED=auto "$CALLS")
  exit "$(echo "$STATUSES" | cut -d, -f"$n")"
fi
"""


@pytest.mark.parametrize("statuses, attempts, rc, runs", [("143,255,0", 5, 0, 3), ("143,143", 2, 2, 2), ("1", 5, 2, 1)])
def test_spot_reruns_the_same_command_after_each_preemption_until_it_finishes(tmp_path, statuses, attempts, rc, runs):
    """`spot` with a stand-in gcloud: a run that exits 143 (SIGTERM) or loses its ssh connection (255) is re-created
    and re-run with the same command; exit 0 copies the results and deletes the VM; another failure stops at once
    and keeps the VM; --attempts bounds the retries."""
    import os

    gcloud = tmp_path / "gcloud"
    gcloud.write_text(FAKE_GCLOUD)
    gcloud.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "CALLS": str(tmp_path / "calls"),
           "STATUSES": statuses, "TPU_RETRY_WAIT": "0"}
    r = subprocess.run(["bash", str(SCRIPTS / "tpu_vm.sh"), "spot", "--zone", "z", "--name", "s1", "--attempts",
                        str(attempts), "--compile-cache", "gs://b/xla", "--dest", str(tmp_path / "out"), "--",
                        "train", "--config", "c.yaml"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == rc, r.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    run_calls = [c for c in calls if "JAXREC_DISTRIBUTED=auto" in c]
    assert len(run_calls) == runs and len(set(run_calls)) == 1  # the same command every time
    assert "JAXREC_COMPILATION_CACHE=gs://b/xla" in run_calls[0] and "jaxrec train --config c.yaml" in run_calls[0]
    creates = [c for c in calls if c.startswith("compute tpus tpu-vm create s1")]
    assert len(creates) == runs and all("--spot" in c for c in creates)
    deletes = [c for c in calls if c.startswith("compute tpus tpu-vm delete s1")]
    if rc == 0:
        assert len(deletes) == runs and "scp" in calls[-3]  # one delete per preemption, then copy + delete
    elif statuses == "1":
        assert deletes == [] and "the run failed (exit 1)" in r.stderr  # not a preemption: the VM is kept
    else:
        assert "gave up after 2 attempts" in r.stderr


def test_accelerator_check_smoke_runs_every_step_and_writes_json_and_a_markdown_row(tmp_path):
    """The accelerator check with tiny shapes on the CPU (what a GPU/TPU host runs at full size): every step
    succeeds, the report holds each one's figures, and the attention kernels agree with the dense mask."""
    import json

    r = subprocess.run(["bash", str(SCRIPTS / "accelerator_check.sh"), "--smoke", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((tmp_path / "accelerator_check.json").read_text())
    assert all(report[s]["exit"] == 0 for s in ("parity", "train", "decode", "ground", "attention"))
    assert report["parity"]["passed"] >= 4 and "failed" not in report["parity"]
    assert report["train"]["tokens_per_s"] > 0 and 0 < report["train"]["mfu"] < 1
    assert report["ground"]["matmul_peak_fraction"] > 0 and report["decode"]["users_per_s"] > 0
    kernels = report["attention"]["kernels"]
    assert set(kernels) == {"xla-dense", "xla", "splash"} and all(k["max_abs_diff"] < 1e-5 for k in kernels.values())
    row = (tmp_path / "accelerator_check.md").read_text().splitlines()[-1]
    assert row.startswith(f"| {report['hardware']['date']} | cpu x1 (cpu) | parity ") and "attention xla-dense" in row
