"""`jaxrec bench attention`: one causal self-attention layer's step (forward + backward) per kernel of
``model.attention`` (:func:`jaxrec.models.attention.attend_causal`), side by side on this device.

Each kernel runs the same random q [B,T,N,H], k/v [B,T,Nkv,H] with right padding (the last quarter of every
other row is padding), jitted with its gradient; the step time is the median of ``--repeats`` runs after a
warm-up (compile time reported apart). The dense-mask XLA path (today's before fused kernels, a [B,1,T,T]
mask) is the peer. ``max_abs_diff`` compares each kernel's output with it on the real query rows.
``tflops``: causal attention FLOPs (forward 2 matmuls of B*N*T*T*H/2 multiply-adds, backward twice that)
per second. Kernels that cannot run on this backend are listed under ``skipped`` (cudnn off GPU, splash off
TPU unless ``--interpret``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("attention", help="causal attention step time per kernel (xla, cudnn, splash) vs dense XLA",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    p.add_argument("--interpret", action="store_true", help="run splash in Pallas interpret mode off TPU (slow)")
    p.add_argument("--repeats", type=int, default=5)
    p.set_defaults(func=run)


def _step(impl: str | None, scale: float):
    """A jitted (loss, grads) of attention with kernel ``impl`` (None: the dense-mask peer)."""
    import jax
    import jax.numpy as jnp

    from jaxrec.models.attention import CausalMask, attend, attend_causal

    def out(q, k, v, key_mask):
        mask = CausalMask(key_mask=key_mask, implementation=impl or "xla")
        if impl is None:
            return attend(q, k, v, mask.dense(q.shape[1]), scale=scale)
        return attend_causal(q, k, v, mask, scale=scale)

    def loss(q, k, v, key_mask):
        return jnp.sum(out(q, k, v, key_mask).astype(jnp.float32) ** 2)

    return jax.jit(out), jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))


def run(args: argparse.Namespace) -> int:
    import jax
    import jax.numpy as jnp

    from jaxrec.bench.hardware import hardware_info

    b, t, n, nkv, h = args.batch, args.seq, args.heads, args.kv_heads, args.dim
    rng = np.random.default_rng(0)
    dtype = jnp.dtype(args.dtype)
    q = jnp.asarray(rng.normal(size=(b, t, n, h)), dtype)
    k, v = (jnp.asarray(rng.normal(size=(b, t, nkv, h)), dtype) for _ in range(2))
    real = np.ones((b, t), bool)
    real[1::2, t - t // 4:] = False
    key_mask = jnp.asarray(real)
    backend = jax.default_backend()
    kernels, skipped = [None, "xla"], {}
    if backend == "gpu":
        kernels.append("cudnn")
    else:
        skipped["cudnn"] = f"needs a GPU ({backend})"
    if backend == "tpu" or args.interpret:
        kernels.append("splash")
    else:
        skipped["splash"] = f"needs a TPU ({backend}); --interpret runs it in Pallas interpret mode"
    flops = 3 * 2 * 2 * b * n * t * t * h / 2  # forward + backward (2x), two matmuls, causal half
    reference = None
    results = {}
    for impl in kernels:
        forward, step = _step(impl, h ** -0.5)
        name = impl or "xla-dense"
        try:
            start = time.perf_counter()
            jax.block_until_ready(step(q, k, v, key_mask))
            compile_s = time.perf_counter() - start
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                jax.block_until_ready(step(q, k, v, key_mask))
                times.append(time.perf_counter() - start)
            output = np.asarray(forward(q, k, v, key_mask).astype(jnp.float32))
        except Exception as e:  # noqa: BLE001 -- a kernel this device or shape does not support: report it
            skipped[name] = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}"
            continue
        if reference is None:
            reference = output
        median = statistics.median(times)
        results[name] = {"step_ms": round(median * 1e3, 3), "compile_s": round(compile_s, 2),
                         "tflops": round(flops / median / 1e12, 3),
                         "max_abs_diff": float(np.abs(output[real] - reference[real]).max())}
    peer = results.get("xla-dense", {}).get("step_ms")
    for r in results.values():
        r["speedup_vs_dense"] = round(peer / r["step_ms"], 3) if peer else None
    print(json.dumps({"benchmark": "attention", "config": {"batch": b, "seq": t, "heads": n, "kv_heads": nkv,
                                                           "dim": h, "dtype": args.dtype, "padding": "right, 1/4 of odd rows"},
                      "kernels": results, "skipped": skipped, "hardware": hardware_info()}, indent=2))
    return 0
