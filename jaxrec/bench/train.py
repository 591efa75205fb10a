"""`jaxrec bench train`: LoRA fine-tuning throughput of the jaxrec engine vs HF transformers + PEFT.

Both sides train the same Llama (random weights, random tokens, every position scored) with LoRA
on q/v, AdamW and global-norm clipping, in fp32, one after the other in the same process; the JSON
reports tokens/s of each and jaxrec's MFU (FLOP formula in :mod:`jaxrec.train.mfu`).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
PRESETS = {
    "cpu-small": dict(vocab_size=8000, hidden_size=512, num_layers=8, num_heads=8, intermediate_size=1376,
                      seq_len=256, batch_size=8, rank=8, alpha=16.0, targets=("q_proj", "v_proj"), dtype="float32"),
    # a 1.1B Llama (TinyLlama's shape) with LoRA on every linear layer: one accelerator (accelerator_check.sh)
    "accelerator-1b": dict(vocab_size=32000, hidden_size=2048, num_layers=22, num_heads=32, intermediate_size=5632,
                           seq_len=2048, batch_size=4, rank=16, alpha=32.0, targets=ALL_LINEAR, dtype="bfloat16"),
    "tiny": dict(vocab_size=512, hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128, seq_len=64,
                 batch_size=4, rank=4, alpha=8.0, targets=("q_proj", "v_proj"), dtype="float32"),
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="LoRA training throughput vs HF transformers + PEFT",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu-small")
    p.add_argument("--peer", choices=["hf", "none"], default="hf")
    p.add_argument("--steps", type=int, default=5, help="timed optimizer steps per side")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (compilation, caches)")
    p.set_defaults(func=main)


def jaxrec_side(preset: dict, steps: int, warmup: int, tokens: np.ndarray) -> dict:
    import jax

    from jaxrec.models import LlamaConfig, build_model
    from jaxrec.models.lora import LoraConfig
    from jaxrec.parallel.mesh import MeshConfig
    from jaxrec.train import mfu
    from jaxrec.train.config import OptimConfig, TrainConfig
    from jaxrec.train.trainer import Trainer

    b, t = tokens.shape[0], tokens.shape[1] - 1  # tokens [B, T+1]: inputs and shifted targets
    cfg = LlamaConfig(vocab_size=preset["vocab_size"], hidden_size=preset["hidden_size"],
                      intermediate_size=preset["intermediate_size"], num_layers=preset["num_layers"],
                      num_heads=preset["num_heads"], num_kv_heads=preset["num_heads"],
                      head_dim=preset["hidden_size"] // preset["num_heads"], max_position_embeddings=t,
                      dtype=preset["dtype"], param_dtype=preset["dtype"])
    train = TrainConfig(batch_size=b, steps=steps + warmup, progress=False, mesh=MeshConfig(),
                        compute_dtype=preset["dtype"],
                        lora=LoraConfig(rank=preset["rank"], alpha=preset["alpha"], target_modules=preset["targets"]),
                        optim=OptimConfig(learning_rate=1e-4, clip_norm=1.0))
    trainer = Trainer(build_model(cfg), train)
    from jaxrec.parallel.rules import batch_sharding
    sh = batch_sharding(trainer.mesh, 2)
    batch = {"input_ids": jax.device_put(tokens[:, :-1], sh), "targets": jax.device_put(tokens[:, 1:], sh),
             "loss_mask": jax.device_put(np.ones((b, t), np.float32), sh),
             "attention_mask": jax.device_put(np.ones((b, t), np.int32), sh)}
    for _ in range(warmup):
        metrics = trainer.train_step(batch)
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(steps):
        metrics = trainer.train_step(batch)
    jax.block_until_ready((metrics, trainer.state))
    seconds = time.perf_counter() - start
    tps = b * t * steps / seconds
    flops_tok = mfu.flops_per_token(trainer.n_matmul, trainer.n_trained, cfg.num_layers, cfg.hidden_size, t)
    peak, source = mfu.device_peak()
    return {"tokens_per_s": tps, "step_s": seconds / steps, "loss": float(metrics["loss"]),
            "flops_per_token": flops_tok, "mfu": tps * flops_tok / peak, "peak_flops": peak, "peak_source": source,
            "matmul_params": trainer.n_matmul, "trained_params": trainer.n_trained}


def hf_side(preset: dict, steps: int, warmup: int, tokens: np.ndarray) -> dict:
    import peft
    import torch
    import transformers

    b, t = tokens.shape[0], tokens.shape[1] - 1  # tokens [B, T+1]: inputs and shifted targets
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=preset["vocab_size"], hidden_size=preset["hidden_size"],
                                   intermediate_size=preset["intermediate_size"],
                                   num_hidden_layers=preset["num_layers"], num_attention_heads=preset["num_heads"],
                                   num_key_value_heads=preset["num_heads"], max_position_embeddings=t,
                                   tie_word_embeddings=False)
    model = transformers.LlamaForCausalLM(cfg).to(torch.float32)
    model = peft.get_peft_model(model, peft.LoraConfig(r=preset["rank"], lora_alpha=preset["alpha"],
                                                       target_modules=list(preset["targets"]), lora_dropout=0.0))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    ids = torch.tensor(tokens[:, :-1], dtype=torch.long)
    labels = torch.tensor(tokens[:, 1:], dtype=torch.long)

    def step():
        logits = model(input_ids=ids).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        loss = step()
    seconds = time.perf_counter() - start
    return {"tokens_per_s": b * t * steps / seconds, "step_s": seconds / steps, "loss": loss,
            "torch_threads": torch.get_num_threads()}


def main(args: argparse.Namespace) -> int:
    from jaxrec.bench.hardware import hardware_info

    preset = PRESETS[args.preset]
    tokens = np.random.RandomState(0).randint(0, preset["vocab_size"], (preset["batch_size"], preset["seq_len"] + 1))
    ours = jaxrec_side(preset, args.steps, args.warmup, tokens.astype(np.int32))
    out = {"benchmark": "train", "preset": args.preset, "config": {k: v for k, v in preset.items()},
           "steps": args.steps, "tokens_per_s": ours.pop("tokens_per_s"), "mfu": ours.pop("mfu"), **ours,
           "flop_formula": "per token: 4*N_matmul + 2*N_trained + 12*L*T*d (see jaxrec/train/mfu.py)"}
    if args.peer == "hf":
        peer = hf_side(preset, args.steps, args.warmup, tokens)
        out.update(peer="transformers+peft (torch, CPU)", peer_tokens_per_s=peer["tokens_per_s"],
                   peer_step_s=peer["step_s"], peer_loss=peer["loss"], speedup=out["tokens_per_s"] / peer["tokens_per_s"])
    out["hardware"] = hardware_info()
    print(json.dumps(out, indent=2))
    return 0
