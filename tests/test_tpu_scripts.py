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
