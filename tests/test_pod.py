"""A simulated pod: `jaxrec train` as two processes x 4 CPU devices (jax.distributed with gloo collectives) on a
scale-shaped method config (data x fsdp x tensor mesh, planner sections) whose data, run directory and checkpoints
live in the GCS emulator. SIGTERM to one process stops both at the same step, saved, exit 143; kill -9 of one ends
the other within the heartbeat timeout; relaunching resumes from the last complete checkpoint, and the model equals
an uninterrupted two-process run's, byte for byte."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import yaml

BUCKET = "jaxrec-test"  # the gcs fixture's
HEARTBEAT_S = 10


def _port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def launch(config_path, *overrides: str) -> list[subprocess.Popen]:
    """`jaxrec train --config config_path` on two processes of 4 CPU devices each."""
    port = _port()
    procs = []
    for pid in range(2):
        env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu",
               "JAXREC_COORDINATOR": f"localhost:{port}", "JAXREC_NUM_PROCESSES": "2", "JAXREC_PROCESS_ID": str(pid),
               "JAXREC_HEARTBEAT_TIMEOUT": str(HEARTBEAT_S)}
        args = [sys.executable, "-m", "jaxrec.cli", "train", "--config", str(config_path)]
        for o in overrides:
            args += ["--set", o]
        procs.append(subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def finish(procs, timeout=600) -> list[tuple[int, str]]:
    """(exit status, stderr) of each process."""
    errs = [p.communicate(timeout=timeout)[1] for p in procs]
    return [(p.returncode, err) for p, err in zip(procs, errs)]


def checkpoint_steps(fs, root: str) -> list[int]:
    """Complete checkpoint steps under ``root`` (orbax marks a finished step with _CHECKPOINT_METADATA)."""
    fs.invalidate_cache()
    if not fs.exists(root):
        return []
    return sorted(int(p.rsplit("/", 1)[-1]) for p in fs.ls(root) if p.rsplit("/", 1)[-1].isdigit()
                  and fs.exists(f"{p}/_CHECKPOINT_METADATA"))


def wait_for(predicate, procs, timeout=300):
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline and all(p.poll() is None for p in procs), [p.poll() for p in procs]
        time.sleep(0.3)


def test_a_simulated_pod_is_preempted_survives_a_dead_host_and_resumes_exactly(gcs, tmp_path):
    from test_bigrec import TINY

    from jaxrec.config import from_dict
    from jaxrec.data.source import DataConfig, load_dataset

    fs = gcs.fs()
    data = f"gs://{BUCKET}/pod/data"
    load_dataset(from_dict(DataConfig, TINY["data"])).save(data)

    def config(name: str, out: str) -> str:
        cfg = {**TINY, "data": {"path": data}, "out_dir": out,
               "train": {**TINY["train"], "steps": 100000, "optim": {"decay": "constant"},
                         "mesh": {"data": 2, "fsdp": 2, "tensor": 2},
                         "checkpoint": {"dir": f"{out}/checkpoints", "every": 1}},
               "plan": {"architecture": {"type": "llama", "arch": {
                   "vocab_size": 320, "hidden_size": 32, "intermediate_size": 64, "num_layers": 1, "num_heads": 2,
                   "num_kv_heads": 1, "head_dim": 16}}, "devices": 8},
               "decode": {"batch_size": 8, "prompt_len": 128, "num_beams": 2, "max_new_tokens": 8}}
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return str(path)

    url = f"gs://{BUCKET}/pod/run"
    ck = f"{BUCKET}/pod/run/checkpoints/last"
    pod = config("pod", url)

    # 1. SIGTERM reaches process 1 only: both stop at the same step, save it, and exit 143
    procs = launch(pod)
    wait_for(lambda: len(checkpoint_steps(fs, ck)) and checkpoint_steps(fs, ck)[-1] >= 2, procs)
    procs[1].send_signal(signal.SIGTERM)
    ended = finish(procs)
    assert [rc for rc, _ in ended] == [143, 143], ended[0][1][-2000:] + ended[1][1][-2000:]
    fs.invalidate_cache()
    meta = json.loads(fs.cat(f"{BUCKET}/pod/run/run.json"))
    assert meta["state"] == "preempted" and checkpoint_steps(fs, ck)[-1] == meta["step"]
    preempted = meta["step"]

    # 2. relaunched, then process 1 dies (kill -9): process 0 ends with an error within the heartbeat timeout
    procs = launch(pod)
    wait_for(lambda: checkpoint_steps(fs, ck)[-1] >= preempted + 2, procs)
    procs[1].kill()
    killed_at = time.time()
    (rc0, err0), _ = finish(procs, timeout=HEARTBEAT_S * 6)
    assert rc0 != 0 and time.time() - killed_at < HEARTBEAT_S * 6, err0[-2000:]
    # JAX names the cause: the coordination service's "Task 1 heartbeat timeout", or the collective that lost its peer
    assert any(cause in err0.lower() for cause in ("heartbeat timeout", "task died", "gloo", "connection", "unavailable")), err0[-3000:]
    fs.invalidate_cache()
    assert json.loads(fs.cat(f"{BUCKET}/pod/run/run.json"))["state"] == "preempted"  # never looks finished
    last = checkpoint_steps(fs, ck)[-1]
    assert last >= preempted + 2

    # 3. relaunched to a fixed end: resumes from the last complete checkpoint and finishes
    steps = last + 2
    ended = finish(launch(pod, f"train.steps={steps}", "train.checkpoint.allow_config_change=true"))
    assert [rc for rc, _ in ended] == [0, 0], ended[0][1][-2000:]
    fs.invalidate_cache()
    finished = json.loads(fs.cat(f"{BUCKET}/pod/run/run.json"))
    assert finished["state"] == "finished" and finished["step"] == steps

    # the same model as an uninterrupted two-process run of `steps` steps, and the same losses at every logged step
    reference_url = f"gs://{BUCKET}/pod/reference"
    ended = finish(launch(config("reference", reference_url), f"train.steps={steps}"))
    assert [rc for rc, _ in ended] == [0, 0], ended[0][1][-2000:]
    for name in ("model/model.safetensors", "tokenizer/tokenizer.json"):
        assert fs.cat(f"{BUCKET}/pod/run/{name}") == fs.cat(f"{BUCKET}/pod/reference/{name}"), name

    def losses(prefix):
        lines = fs.cat(f"{BUCKET}/pod/{prefix}/logs/metrics.jsonl").decode().splitlines()
        return {r["step"]: r["train/loss"] for r in map(json.loads, lines) if "train/loss" in r}

    resumed, reference = losses("run"), losses("reference")
    assert set(range(1, preempted + 1)) | {steps} <= set(resumed)
    assert {s: reference[s] for s in resumed} == resumed
