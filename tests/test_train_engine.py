"""The sharded training engine end to end on a tiny Llama with LoRA (8 fake CPU devices):
same losses under every mesh (and with gradient accumulation), exact resume, a 2-process
``jax.distributed`` run equal to the single-process one, early stopping / best checkpoints, and
clear errors before compilation."""

import dataclasses
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from jaxrec.errors import ConfigError
from jaxrec.data.pipeline import TokenDataConfig
from jaxrec.models.lora import LoraConfig
from jaxrec.parallel.mesh import MeshConfig
from jaxrec.train.config import CheckpointConfig, OptimConfig, TrainConfig

STEPS = 4


@pytest.fixture(scope="module", autouse=True)
def fast_compile():
    """Tiny programs, compiled many times: skip XLA's expensive optimizations (every run compared here,
    the 2-process workers included, compiles the same way)."""
    import jax

    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)


def examples(n=64, seed=0):
    rs = np.random.RandomState(seed)
    return [dict(prompt_ids=rs.randint(3, 60, rs.randint(2, 10)).tolist(),
                 response_ids=rs.randint(3, 60, rs.randint(1, 5)).tolist()) for _ in range(n)]


def config(mesh=(8, 1, 1), ckdir=None, log_dir=None, dropout=0.1, **train):
    return TrainConfig(
        batch_size=8, steps=STEPS, log_every=1, progress=False, log_dir=log_dir, mesh=MeshConfig(*mesh),
        peak_flops=1e12, lora=LoraConfig(rank=4, alpha=8, dropout=dropout, target_modules=("q_proj", "v_proj")),
        optim=OptimConfig(learning_rate=1e-2, warmup_steps=1, weight_decay=0.01),
        data=TokenDataConfig(seq_len=16), checkpoint=CheckpointConfig(dir=ckdir, every=2), **train)


def run(cfg, steps=None, evaluate=None, data=None, loss_fn=None, **fit):
    """Train on ``data`` (default :func:`examples`) for ``steps`` (default the config's: ``steps`` or
    ``epochs``); returns (per-step losses from the JSONL log, final trained params in the layer-list
    layout, fit result)."""
    import jax
    from flax import nnx

    from jaxrec.data.pipeline import CausalFeatures, make_batches
    from jaxrec.models.lora import trainable_filter
    from jaxrec.train.losses import causal_lm_loss
    from jaxrec.train.trainer import Trainer

    data = examples() if data is None else data
    trainer = Trainer(tiny_model(), cfg, loss_fn or causal_lm_loss, num_examples=len(data))
    batches = make_batches(data, CausalFeatures(cfg.data.seq_len, eos_id=2, bos_id=1), cfg.data,
                           trainer.mesh, global_batch=cfg.batch_size, seed=cfg.seed, num_epochs=cfg.epochs)
    result = trainer.fit(batches, evaluate=evaluate, steps=steps, **fit)
    trainer.close()
    params = {".".join(map(str, p)): np.asarray(jax.device_get(v[...]))
              for p, v in nnx.to_flat_state(nnx.state(trainer.model(), trainable_filter(cfg.lora)))}
    rows = [json.loads(line) for line in (Path(cfg.log_dir) / "metrics.jsonl").read_text().splitlines()]
    losses = {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}
    return losses, params, result


_BASE = []


def tiny_model():
    """A fresh copy of one tiny Llama (built once: eager initialization is slow on a busy CPU)."""
    from flax import nnx

    from jaxrec.models import build_model, tiny_llama_config

    if not _BASE:
        _BASE.append(build_model(tiny_llama_config(64, hidden_size=32, intermediate_size=64, head_dim=8,
                                                   num_layers=1), seed=0))
    return nnx.clone(_BASE[0])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    log = tmp_path_factory.mktemp("ref")
    return run(config(log_dir=str(log)))


def assert_same_run(a, b, atol=1e-5, what=""):
    (losses_a, params_a, _), (losses_b, params_b, _) = a, b
    assert sorted(losses_a) == sorted(losses_b)
    np.testing.assert_allclose([losses_a[s] for s in sorted(losses_a)], [losses_b[s] for s in sorted(losses_b)],
                               atol=atol, err_msg=what)
    for k in params_b:
        np.testing.assert_allclose(params_a[k], params_b[k], atol=atol, err_msg=f"{what} {k}")


def test_meshes_and_grad_accumulation_give_the_same_losses(reference, tmp_path):
    assert len(reference[0]) == STEPS and reference[0][STEPS] < reference[0][1]
    assert_same_run(run(config((2, 2, 2), log_dir=str(tmp_path / "a"))), reference, what="mesh (2,2,2)")
    # dropout masks depend on how a batch is cut into micro-batches: compare accumulation without dropout
    plain = run(config((8, 1, 1), log_dir=str(tmp_path / "b"), dropout=0.0))
    accumulated = run(config((1, 1, 8), log_dir=str(tmp_path / "c"), dropout=0.0, grad_accum=2))
    assert_same_run(accumulated, plain, what="mesh (1,1,8) with grad_accum=2")


def test_scanned_rematerialised_layers_train_like_the_layer_loop(reference, tmp_path):
    """Stacked layers under one lax.scan with full remat: same LoRA-dropout masks, losses and weights."""
    assert_same_run(run(config(log_dir=str(tmp_path), scan_layers=True, remat="full")), reference,
                    what="scan_layers + remat=full")


def test_sigterm_saves_a_final_checkpoint_that_resumes_exactly(reference, tmp_path):
    """A real SIGTERM (TPU preemption) mid-run: the loop stops after that step and saves it (step 3, off
    the every=2 schedule); the resumed run finishes like the uninterrupted one."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers are installed from the main thread only")
    ck, log = str(tmp_path / "ck"), str(tmp_path / "log")

    def preempt_at_step_3(model, calls=[]):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return {}

    def previous(signum, frame):  # the handler a caller had installed before training
        raise AssertionError("the trainer's handler should have caught this SIGTERM")

    before = signal.signal(signal.SIGTERM, previous)
    try:
        _, _, result = run(config(ckdir=ck, log_dir=log, eval_every=1), evaluate=preempt_at_step_3)
        assert signal.getsignal(signal.SIGTERM) is previous  # the caller's handler is back
    finally:
        signal.signal(signal.SIGTERM, before)
    assert result["stopped"] == "sigterm" and result["step"] == 3
    assert sorted(p.name for p in (Path(ck) / "last").iterdir() if p.name.isdigit()) == ["3"]
    assert_same_run(run(config(ckdir=ck, log_dir=log)), reference, atol=1e-6, what="resumed after SIGTERM")


def test_early_stopping_state_resumes_and_eval_last_validates_the_last_step(tmp_path):
    """The best metric and the count of validations without improvement are saved with the checkpoint: a run
    stopped by SIGTERM and resumed stops early at the same step as one never interrupted (a fresh count would
    train on). ``eval_last`` validates a last step off the ``eval_every`` schedule."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers are installed from the main thread only")
    scores = [0.5, 0.4, 0.3, 0.2]  # by validation: the first is the best

    def scripted(calls, preempt_at=None):
        def evaluate(model):
            calls.append(1)
            if len(calls) == preempt_at:
                os.kill(os.getpid(), signal.SIGTERM)
            return {"m": scores[len(calls) - 1]}
        return evaluate

    def cfg(name):
        c = config(log_dir=str(tmp_path / name / "log"), eval_every=1, patience=2)
        return dataclasses.replace(c, checkpoint=CheckpointConfig(dir=str(tmp_path / name / "ck"), every=2,
                                                                  best_metric="m"))

    _, whole_params, whole = run(cfg("whole"), evaluate=scripted([]))
    assert (whole["stopped"], whole["step"], whole["best_metric"]) == ("early_stopping", 3, 0.5)
    calls = []
    _, _, first = run(cfg("resumed"), evaluate=scripted(calls, preempt_at=2))
    assert (first["stopped"], first["step"]) == ("sigterm", 2)
    _, params, resumed = run(cfg("resumed"), evaluate=scripted(calls))
    assert (resumed["stopped"], resumed["step"], resumed["best_metric"]) == ("early_stopping", 3, 0.5)
    for k in whole_params:
        np.testing.assert_allclose(params[k], whole_params[k], atol=1e-6, err_msg=k)
    # eval_every=3 over 4 steps: validations at steps 3 and 4 (the last) with eval_last, only 3 without
    for eval_last, expected in ((False, [3]), (True, [3, 4])):
        log = tmp_path / f"last{eval_last}"
        run(config(log_dir=str(log), eval_every=3), evaluate=lambda model: {"m": 1.0}, eval_last=eval_last)
        rows = [json.loads(line) for line in (log / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows if "eval/m" in r] == expected


def test_bf16_compute_keeps_fp32_master_weights(reference, tmp_path):
    losses, params, _ = run(config(log_dir=str(tmp_path), compute_dtype="bfloat16"))
    assert all(v.dtype == np.float32 for v in params.values())
    ref_losses = reference[0]
    np.testing.assert_allclose([losses[s] for s in sorted(ref_losses)], [ref_losses[s] for s in sorted(ref_losses)],
                               rtol=2e-2)
    assert losses[STEPS] < losses[1]


def test_epochs_and_training_only_new_token_rows(tmp_path):
    """``epochs=1`` over 24 examples with batch 8: 3 steps. Embedding/lm_head rows of the old vocabulary
    (< 48) stay bit-identical despite weight decay; the new-token rows are trained."""
    lora = LoraConfig(rank=4, alpha=8, target_modules=("q_proj",), trainable=("embed_tokens", "lm_head"),
                      new_token_rows_from=48)
    cfg = dataclasses.replace(config(log_dir=str(tmp_path), epochs=1), lora=lora,
                              optim=OptimConfig(learning_rate=1e-2, weight_decay=0.1))
    losses, params, result = run(cfg, data=examples(24))
    assert result["step"] == 3 and sorted(losses) == [1, 2, 3] and result["stopped"] == "steps"
    from flax import nnx
    before = {".".join(map(str, p)): np.asarray(v[...]) for p, v in nnx.to_flat_state(nnx.state(tiny_model()))}
    for name, axis in [("embed_tokens.embedding", 0), ("lm_head.kernel", 1)]:
        old, new = np.split(params[name], [48], axis=axis), np.split(before[name], [48], axis=axis)
        np.testing.assert_array_equal(old[0], new[0], err_msg=name)
        assert np.abs(old[1] - new[1]).max() > 1e-4, name


def test_interrupted_and_resumed_run_equals_uninterrupted(reference, tmp_path):
    ck, log = str(tmp_path / "ck"), str(tmp_path / "log")
    cfg = dataclasses.replace(config(ckdir=ck, log_dir=log, eval_every=1, patience=1),
                              checkpoint=CheckpointConfig(dir=ck, every=2, keep=1, best_metric="score"))
    # validation scores 2, 1, ...: best at step 1, no improvement at step 2 -> early stop after step 2
    scores = iter([2.0, 1.0, 0.0])
    first, _, result = run(cfg, evaluate=lambda model: {"score": next(scores)})
    assert result["stopped"] == "early_stopping" and result["step"] == 2
    assert sorted(p.name for p in (Path(ck) / "best").iterdir() if p.name.isdigit()) == ["1"]
    resumed = run(config(ckdir=ck, log_dir=log))  # resumes at step 2
    assert resumed[2]["step"] == STEPS
    # the JSONL holds steps 1-2 from the first run and 3-4 from the resumed one
    assert_same_run(resumed, reference, atol=1e-6, what="resumed")

    other = dataclasses.replace(config().lora, rank=8)
    from jaxrec.train.trainer import Trainer
    with pytest.raises(ConfigError, match="different configuration.*'rank': checkpoint has 4, this run has 8"):
        Trainer(tiny_model(), dataclasses.replace(config(ckdir=ck), lora=other)).restore()
    faster = dataclasses.replace(config(ckdir=ck), optim=dataclasses.replace(config().optim, learning_rate=1.0))
    with pytest.raises(ConfigError, match="other settings \\(optim: 'learning_rate': checkpoint has 0.01, this run "
                                          "has 1.0\\); resume with the same config, or set checkpoint.allow_config"):
        Trainer(tiny_model(), faster).restore()
    allowed = dataclasses.replace(faster, checkpoint=dataclasses.replace(faster.checkpoint, allow_config_change=True))
    assert Trainer(tiny_model(), allowed).restore() == STEPS


WORKER = textwrap.dedent("""
    import json, os, sys
    sys.path.insert(0, {tests!r})
    import jax
    from jaxrec.parallel.distributed import DistributedConfig, initialize
    initialize(DistributedConfig(coordinator_address="localhost:{port}", num_processes=2, process_id={pid}))
    assert jax.device_count() == 8 and jax.local_device_count() == 4
    from test_train_engine import config, run
    losses, params, _ = run(config(log_dir={log!r}))
    if jax.process_index() == 0:
        json.dump(losses, open({out!r}, "w"))
""")


def test_two_process_run_matches_single_process(reference, tmp_path):
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu",
           "JAX_DISABLE_MOST_OPTIMIZATIONS": "1"}
    out = tmp_path / "losses.json"
    procs = []
    for pid in range(2):
        code = WORKER.format(tests=str(Path(__file__).parent), port=port, pid=pid, log=str(tmp_path / "log"), out=str(out))
        procs.append(subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), logs[0][-3000:] + logs[1][-3000:]
    losses = {int(k): v for k, v in json.loads(out.read_text()).items()}
    ref_losses = reference[0]
    np.testing.assert_allclose([losses[s] for s in sorted(ref_losses)], [ref_losses[s] for s in sorted(ref_losses)],
                               atol=1e-5)


PREEMPT_WORKER = textwrap.dedent("""
    import json, os, signal, sys
    sys.path.insert(0, {tests!r})
    import jax
    from jaxrec.parallel.distributed import DistributedConfig, initialize
    initialize(DistributedConfig(coordinator_address="localhost:{port}", num_processes=2, process_id={pid}))
    from test_train_engine import config, run

    def preempt_host_1(model, calls=[]):
        calls.append(1)
        if jax.process_index() == 1 and len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # only this host gets the notice
        return {{}}

    _, _, result = run(config(ckdir={ck!r}, log_dir={log!r}, eval_every=1), steps=400, evaluate=preempt_host_1)
    json.dump({{"step": result["step"], "stopped": result["stopped"]}}, open({out!r} + str({pid}), "w"))
""")


def test_a_sigterm_to_one_host_stops_every_host_at_the_same_step_and_saves_it(tmp_path):
    """Two processes; SIGTERM reaches only process 1 (after its 3rd step): JAX's preemption service tells
    process 0, both stop at the same sync step, report "sigterm" and write that step's checkpoint."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu",
           "JAX_DISABLE_MOST_OPTIMIZATIONS": "1"}
    ck, out = tmp_path / "ck", str(tmp_path / "result")
    procs = [subprocess.Popen([sys.executable, "-c", PREEMPT_WORKER.format(
        tests=str(Path(__file__).parent), port=port, pid=pid, ck=str(ck), log=str(tmp_path / "log"), out=out)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for pid in range(2)]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), logs[0][-3000:] + logs[1][-3000:]
    results = [json.loads(Path(out + str(pid)).read_text()) for pid in range(2)]
    assert results[0] == results[1] and results[0]["stopped"] == "sigterm" and 3 < results[0]["step"] < 400
    assert [p.name for p in (ck / "last").iterdir() if p.name.isdigit()] == [str(results[0]["step"])]


POISON = 61  # a token id absent from examples(): a batch holding it has a NaN loss and NaN gradients


def poisoned_loss(model, batch):
    import jax.numpy as jnp

    from jaxrec.train.losses import causal_lm_loss

    loss, weight, metrics = causal_lm_loss(model, batch)
    return loss * jnp.where(jnp.any(batch["input_ids"] == POISON), jnp.nan, 1.0), weight, metrics


def poisoned_at_step(step, n=64):
    """examples() in order (no shuffling) with one example of batch ``step`` (1-based) poisoned."""
    data = examples(n)
    data[(step - 1) * 8 + 3] = dict(prompt_ids=[5, POISON, 7], response_ids=[9])
    return data


def nan_config(tmp_path, **train):
    cfg = config(ckdir=str(tmp_path / "ck"), log_dir=str(tmp_path / "log"), dropout=0.0)
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, shuffle=False), **{"steps": 8, **train})


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    """NaN at step 5, noticed at the step-6 log: one error naming step 5, no checkpoint after step 4, and
    that checkpoint is exactly the model trained for 4 clean steps."""
    from jaxrec.errors import TrainingDiverged

    clean = run(nan_config(tmp_path / "clean"), steps=4, data=poisoned_at_step(5), loss_fn=poisoned_loss)
    with pytest.raises(TrainingDiverged, match=r"NaN/Inf at step 5 .*last checkpoint \(step 4\)"):
        run(nan_config(tmp_path, log_every=3), data=poisoned_at_step(5), loss_fn=poisoned_loss)
    assert sorted(p.name for p in (tmp_path / "ck" / "last").iterdir() if p.name.isdigit()) == ["4"]
    # resuming the kept checkpoint for 0 more steps gives back the clean step-4 weights, all finite
    _, params, result = run(nan_config(tmp_path), steps=4, data=poisoned_at_step(5), loss_fn=poisoned_loss)
    assert result["step"] == 4 and result["nonfinite_steps"] == 0
    for k in clean[1]:
        np.testing.assert_array_equal(params[k], clean[1][k], err_msg=k)


def test_skip_batch_drops_a_non_finite_step_as_if_the_batch_were_absent(tmp_path):
    data = poisoned_at_step(3)
    losses, params, result = run(nan_config(tmp_path, nan_policy="skip_batch", steps=5), data=data,
                                 loss_fn=poisoned_loss)
    assert result["nonfinite_steps"] == 1 and np.isnan(losses[3])
    without = data[:16] + data[24:]  # batch 3 removed
    _, expected, _ = run(nan_config(tmp_path / "without", steps=5), steps=4, data=without, loss_fn=poisoned_loss)
    for k in expected:
        np.testing.assert_allclose(params[k], expected[k], atol=1e-6, err_msg=k)
    from jaxrec.errors import TrainingDiverged

    with pytest.raises(TrainingDiverged, match=r"1 non-finite steps > train.nan_skip_limit=0"):
        run(nan_config(tmp_path / "limit", nan_policy="skip_batch", nan_skip_limit=0), data=data,
            loss_fn=poisoned_loss)


@pytest.mark.parametrize("damage", ["truncate the arrays", "delete the metadata"])
def test_a_damaged_checkpoint_is_one_error_and_is_left_as_it_was(tmp_path, damage):
    import shutil

    from jaxrec.train.trainer import Trainer

    ck = tmp_path / "ck"
    run(config(ckdir=str(ck), log_dir=str(tmp_path / "log")), steps=2)
    step_dir = ck / "last" / "2"
    if damage == "truncate the arrays":
        for f in (step_dir / "state").rglob("*"):
            if f.is_file() and f.stat().st_size > 64:
                f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    else:
        shutil.rmtree(step_dir / "meta")
    before = sorted((str(p), p.stat().st_size) for p in step_dir.rglob("*"))
    with pytest.raises(ConfigError, match=f"checkpoint {step_dir} cannot be read .*damaged or incomplete"):
        Trainer(tiny_model(), config(ckdir=str(ck))).restore()
    assert sorted((str(p), p.stat().st_size) for p in step_dir.rglob("*")) == before


def test_bad_setups_fail_before_compiling():
    from jaxrec.train.trainer import Trainer

    model = tiny_model
    with pytest.raises(ConfigError, match="needs 6 devices, but 8 are available"):
        Trainer(model(), config(mesh=(3, 2, 1)))
    with pytest.raises(ConfigError, match="batch_size=6 does not divide across the data axes"):
        Trainer(model(), dataclasses.replace(config(), batch_size=6))
    with pytest.raises(ConfigError, match="grad_accum=2"):
        Trainer(model(), dataclasses.replace(config(), grad_accum=2))
    with pytest.raises(ConfigError, match="'gate' matches no linear module"):
        Trainer(model(), dataclasses.replace(config(), lora=LoraConfig(target_modules=("gate",))))
    with pytest.raises(ConfigError, match="lora.trainable: 'lm_heads' matches no parameter"):
        Trainer(model(), dataclasses.replace(config(), lora=LoraConfig(trainable=("lm_heads",))))
