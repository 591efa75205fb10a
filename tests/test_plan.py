"""`jaxrec plan`: config reading, sharding arithmetic, train.remat ordering, KV cache sizes, the CLI verdict."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from jaxrec.cli import main
from jaxrec.data.pipeline import TokenDataConfig
from jaxrec.errors import ConfigError, JaxrecError
from jaxrec.models import build_model
from jaxrec.models.lora import LoraConfig
from jaxrec.parallel.mesh import MeshConfig
from jaxrec.train.config import TrainConfig
from jaxrec.train.plan import (DecodeSpec, ModelSpec, PlanConfig, TargetSpec, accelerator_spec, estimate,
                               load_plan_config, resolve_model)

SCALE = Path(__file__).resolve().parents[1] / "configs" / "scale"


def tiny(preset="tiny-llama", arch=None, **train):
    fields = dict(batch_size=16, mesh=MeshConfig(8, 1, 1), data=TokenDataConfig(seq_len=64))
    fields.update(train)
    return PlanConfig(model=ModelSpec(preset=preset, arch=arch or {}), train=TrainConfig(**fields),
                      plan=TargetSpec(target_len=16))


def parts(plan, phase=0):
    return {c.name: c.bytes for c in plan.phases[phase].components}


def test_fsdp_shards_weights_and_optimizer():
    dp = estimate(tiny(lora=LoraConfig(mode="full")), devices=8)
    fsdp = estimate(tiny(lora=LoraConfig(mode="full"), mesh=MeshConfig(1, 8, 1)), devices=8)
    for name in ("params (trained, fp32 master)", "optimizer (AdamW mu+nu, fp32)", "gradients (fp32)"):
        assert parts(fsdp)[name] == parts(dp)[name] // 8  # every tiny weight has an fsdp-divisible 'embed' dim
    assert parts(dp)["params (trained, fp32 master)"] == dp.params * 4
    assert "fsdp all-gather (2 layers)" in parts(fsdp) and "fsdp all-gather (2 layers)" not in parts(dp)


def test_lora_trains_only_adapters_and_train_remat_orders_activations():
    remats = ("none", "dots", "dots_with_no_batch_dims", "full")
    plans = {r: estimate(tiny(remat=r, arch={"num_layers": 8}), devices=8) for r in remats}
    acts = {r: parts(p)[f"activations (remat={r})"] for r, p in plans.items()}
    assert acts["none"] > acts["dots"] > acts["dots_with_no_batch_dims"] > acts["full"] > 0
    # checkpoint_dots also keeps the attention products: fp32 scores 4*h*s and values p*q per token and layer
    # (tiny-llama: 4 heads x 32, 2 rows x 64 tokens per device, 8 layers, float32)
    assert acts["dots"] - acts["dots_with_no_batch_dims"] == 2 * 64 * 8 * (4 * 4 * 64 + 4 * 4 * 32)
    lora = plans["none"]
    assert 0 < lora.trained_params < lora.params // 50  # q/v adapters of rank 8
    assert parts(lora)["optimizer (AdamW mu+nu, fp32)"] == 2 * parts(lora)["params (trained, fp32 master)"]


@pytest.mark.parametrize("preset", ["tiny-llama", "tiny-t5"])
def test_decode_cache_matches_the_model_prefill_state(preset):
    decode = DecodeSpec(batch_size=2, prompt_len=24, num_beams=3, max_new_tokens=4)
    config = PlanConfig(model=ModelSpec(preset=preset), decode=decode, train=TrainConfig(
        batch_size=2, mesh=MeshConfig(1, 1, 1), lora=LoraConfig(target_modules=("q",) if "t5" in preset else ("q_proj",))))
    plan = estimate(config, devices=1)
    model = build_model(resolve_model(config.model))
    ids = jnp.ones((decode.batch_size, decode.prompt_len), jnp.int32)
    state, _ = jax.eval_shape(lambda i, m: model.prefill(i, m, num_beams=3, max_new_tokens=4), ids, ids)
    nbytes = lambda arrays: sum(a.size * a.dtype.itemsize for a in arrays)  # noqa: E731
    prefix = state.cross_k + state.cross_v if "t5" in preset else state.prefix_k + state.prefix_v
    decode_parts = parts(plan, 1)
    prefix_name = next(n for n in decode_parts if "K/V" in n or "KV cache (per user" in n)
    assert decode_parts[prefix_name] == nbytes(prefix)
    assert decode_parts["generated KV cache (per beam)"] == nbytes(state.gen_k + state.gen_v)


def test_accelerators():
    assert accelerator_spec("v5p-8") == (95.0, 4)
    assert accelerator_spec("v4-32") == (32.0, 16)
    assert accelerator_spec("v5litepod-16") == (16.0, 16)
    assert accelerator_spec("h100") == (80.0, None)
    with pytest.raises(ConfigError, match="unknown"):
        accelerator_spec("v9x-8")


def test_config_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {preset: llama3-8b, type: llama}\n")
    with pytest.raises(ConfigError, match="exactly one of"):
        load_plan_config(bad)
    bad.write_text("train: {batch_size: 8}\n")
    with pytest.raises(ConfigError, match="missing 'model'"):
        load_plan_config(bad)
    bad.write_text("model: {type: llama, arch: {vocab_size: 10}}\n")
    with pytest.raises(ConfigError, match="model.arch"):
        resolve_model(load_plan_config(bad)[0].model)
    bad.write_text("model: {type: gpt2}\n")
    with pytest.raises(ConfigError, match="unsupported model_type 'gpt2'; expected one of llama, qwen2, mistral, t5, "
                                          "bert"):
        load_plan_config(bad)
    bad.write_text("model: {type: bert}\n")
    with pytest.raises(ConfigError, match="no planner estimate for bert; plannable model types: llama, qwen2, "
                                          "mistral, t5$"):
        load_plan_config(bad)
    bad.write_text("model: {preset: tiny-llama}\nplan: {remat: full}\n")  # the planner reads train.remat
    with pytest.raises(ConfigError, match="unknown key 'plan.remat'"):
        load_plan_config(bad)
    with pytest.raises(ConfigError, match="must split"):
        estimate(tiny(batch_size=12), devices=8)


def test_scale_configs_are_method_configs_whose_dry_run_state_matches_the_plan():
    """Every configs/scale file is a method config (`jaxrec train`/`eval` parse it, skipping the planner's sections)
    and a plan; `jaxrec train --dry-run` builds its sharded state on as many fake CPU devices as its mesh spans, and
    the bytes each device holds of trained params, optimizer state and frozen params equal the planner's."""
    import argparse
    import subprocess
    import sys

    from jaxrec.commands.run import load_method_config

    files = sorted(SCALE.glob("*.yaml"))
    assert len(files) >= 6
    runs = []
    for path in files:
        config, ignored = load_plan_config(path)
        assert ignored == [] and config.plan.accelerator is not None
        method, run_config = load_method_config(argparse.Namespace(config=str(path), overrides=[]))
        assert run_config.method == method.__name__.rsplit(".", 1)[-1] and run_config.train == config.train
        runs.append(subprocess.Popen([sys.executable, "-m", "jaxrec.cli", "train", "--config", str(path), "--dry-run"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for path, proc in zip(files, runs):
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, (path, err)
        report = json.loads(out.strip().splitlines()[-1])
        devices = report["devices"]
        assert devices == accelerator_spec(load_plan_config(path)[0].plan.accelerator)[1] or devices == 1
        for part, planned in report["planned_bytes"].items():
            assert report["sharded_bytes"][part] == pytest.approx(planned, rel=1e-3, abs=1024), (path.name, part)
        assert report["sharded_bytes"]["params_trained"] > 0 and report["fits"]


def test_cli_prints_table_and_json_and_refuses_what_does_not_fit(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text("model: {preset: tiny-llama}\ntrain: {batch_size: 16, data: {seq_len: 64}}\n"
                      "decode: {batch_size: 8, prompt_len: 32, num_beams: 4, max_new_tokens: 3}\nmethod: {x: 1}\n")
    assert main(["plan", str(config), "--devices", "8", "--device-memory", "1", "--json", str(tmp_path / "p.json")]) == 0
    out, err = capsys.readouterr()
    report = json.loads(out.strip().splitlines()[-1])
    assert report["fits"] and set(report["phases"]) == {"train", "decode"} and "ignored: method" in err
    assert "activations (remat=none)" in out and json.loads((tmp_path / "p.json").read_text()) == report
    assert main(["plan", str(config), "--devices", "8", "--set", "train.remat=full"]) == 0
    full = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["phases"]["train"]["components"]
    expected = parts(estimate(tiny(remat="full"), devices=8))["activations (remat=full)"]
    assert full["activations (remat=full)"] == expected

    assert main(["plan", str(config), "--devices", "8", "--device-memory", "0.01",
                 "--set", "train.data.seq_len=1024"]) == 2
    out, err = capsys.readouterr()
    assert "DOES NOT FIT" in out
    assert "train needs" in err and "the biggest part is activations (remat=none)" in err and "train.grad_accum" in err


def test_check_names_the_kv_cache_for_decoding():
    config = PlanConfig(model=ModelSpec(preset="tiny-llama"), train=TrainConfig(batch_size=8, mesh=MeshConfig(8, 1, 1)),
                        decode=DecodeSpec(batch_size=64, prompt_len=4096, num_beams=50, max_new_tokens=64))
    plan = estimate(config, devices=8, device_memory_gib=0.05)
    assert plan.phases[0].total <= plan.limit < plan.phases[1].total
    with pytest.raises(JaxrecError, match="decode needs .* biggest part is .*(KV cache|workspace)"):
        plan.check()
