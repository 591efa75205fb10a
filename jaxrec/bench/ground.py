"""`jaxrec bench ground`: exact top-k grounding throughput against the BIGRec torch peer.

Both sides rank the same random queries [Q,d] against the same random catalog [N,d] (float32,
l2): jaxrec with :func:`jaxrec.ground.topk` (tiled, running top-k), the peer as BIGRec's
evaluation scripts do, ``torch.cdist(queries, items)`` then ``topk(largest=False)``, chunked over
items only when the [Q,N] distance matrix would not fit in half the available memory.

Each side runs in its own fresh process (one after the other, not concurrently), so its memory
figures are its own: ``peak_rss_mb`` is the process's peak resident set (VmHWM) during the timed
runs (the count is restarted after the inputs are in place and, for jaxrec, after compilation) and
``working_mb`` that peak minus the resident set at the restart, i.e. the memory the ranking itself
needed. On accelerators ``device_peak_mb`` is JAX's ``peak_bytes_in_use``, and
``matmul_peak_fraction`` compares the kernel's matmul FLOP rate (2·Q·N·d per run) with a large
plain matmul of the same dtype measured on the same device in the same run
(``plain_matmul_tflops``; ``peer_plain_matmul_tflops`` is torch's own matmul rate, which bounds
what the peer can reach: both sides are matmul-bound on CPU).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import statistics
import time


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ground", help="exact top-k grounding kernel vs torch.cdist + topk",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--queries", type=int, default=1024)
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--k", type=int, default=50)
    p.add_argument("--metric", default="l2", choices=("l2", "cosine", "dot"))
    p.add_argument("--tile", type=int, default=None, help="items per tile (default: the kernel's)")
    p.add_argument("--compute-dtype", default="float32", help="matmul input dtype of the jaxrec side")
    p.add_argument("--repeats", type=int, default=1, help="timed runs per side (median reported)")
    p.add_argument("--peer", choices=("torch", "none"), default="torch")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args) -> int:
    config = {k: getattr(args, k) for k in ("queries", "items", "dim", "k", "metric", "tile",
                                             "compute_dtype", "repeats", "seed")}
    from jaxrec.bench.hardware import hardware_info

    result = {"benchmark": "ground", "config": config, "hardware": hardware_info()}
    result.update(_in_fresh_process(_jaxrec_side, config))
    if args.peer == "torch":
        peer = _in_fresh_process(_torch_side, config)
        result.update({f"peer_{k}": v for k, v in peer.items()})
        result["speedup_vs_peer"] = round(result["queries_per_s"] / result["peer_queries_per_s"], 3)
        result["topk_agreement"] = _agreement(result.pop("indices"), result.pop("peer_indices"))
    result.pop("indices", None)  # --peer none: nothing to compare with
    print(json.dumps(result, indent=2))
    return 0


def _in_fresh_process(fn, config: dict) -> dict:
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(fn, config).result()


def _inputs(config: dict):
    import numpy as np

    rng = np.random.default_rng(config["seed"])
    queries = rng.standard_normal((config["queries"], config["dim"]), dtype=np.float32)
    items = rng.standard_normal((config["items"], config["dim"]), dtype=np.float32)
    return queries, items


def _rss_mb(field: str) -> float:
    """VmRSS (current) or VmHWM (peak) of this process in MiB, from /proc."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> float:
    """Restart the peak-RSS count here (Linux clear_refs "5"); returns the current RSS in MiB."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _rss_mb("VmRSS")


def _figures(times: list[float], config: dict, rss_inputs: float) -> dict:
    seconds = statistics.median(times)
    return {
        "seconds": round(seconds, 4),
        "queries_per_s": round(config["queries"] / seconds, 2),
        "peak_rss_mb": round(_rss_mb("VmHWM"), 1),
        "working_mb": round(_rss_mb("VmHWM") - rss_inputs, 1),
    }


def _agreement(ours, peer) -> float:
    """Mean fraction of each query's top-k ids both sides return (1.0 up to float near-ties)."""
    import numpy as np

    return round(float(np.mean([len(np.intersect1d(a, b)) / len(a) for a, b in zip(ours, peer)])), 5)


def _jaxrec_side(config: dict) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxrec.ground.topk import DEFAULT_TILE, topk

    queries, items = _inputs(config)
    queries, items = jnp.asarray(queries), jnp.asarray(items)
    jax.block_until_ready(items)
    tile = config["tile"] or DEFAULT_TILE

    def once():
        return jax.block_until_ready(topk(queries, items, config["k"], config["metric"], tile=tile,
                                          compute_dtype=config["compute_dtype"]))

    start = time.perf_counter()
    _, indices = once()  # compile + first run
    first = time.perf_counter() - start
    rss_inputs = _reset_peak_rss()
    times = []
    for _ in range(config["repeats"]):
        start = time.perf_counter()
        _, indices = once()
        times.append(time.perf_counter() - start)
    out = {"compile_and_first_run_s": round(first, 3), "tile": tile,
           **_figures(times, config, rss_inputs), "indices": np.asarray(indices)}
    stats = jax.devices()[0].memory_stats()
    if stats and "peak_bytes_in_use" in stats:
        out["device_peak_mb"] = round(stats["peak_bytes_in_use"] / 2**20, 1)
    flops = 2 * config["queries"] * config["items"] * config["dim"]
    out["matmul_tflops"] = round(flops / out["seconds"] / 1e12, 4)
    peak = _matmul_peak_tflops(config["compute_dtype"])
    out["plain_matmul_tflops"] = round(peak, 4)
    out["matmul_peak_fraction"] = round(out["matmul_tflops"] / peak, 3)
    return out


def _matmul_peak_tflops(dtype: str) -> float:
    """Throughput of a large plain matmul in ``dtype`` (float32 at full precision) on this device."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    n = 2048 if jax.default_backend() == "cpu" else 16384
    a = jnp.ones((n, n), dtype)
    precision = lax.Precision.HIGHEST if a.dtype == jnp.float32 else lax.Precision.DEFAULT
    matmul = jax.jit(lambda a, b: lax.dot(a, b, precision=precision, preferred_element_type=jnp.float32))
    jax.block_until_ready(matmul(a, a))
    runs = 3
    start = time.perf_counter()
    for _ in range(runs):
        out = matmul(a, a)
    jax.block_until_ready(out)
    return 2 * n**3 * runs / (time.perf_counter() - start) / 1e12


def _torch_side(config: dict) -> dict:
    import torch

    queries, items = _inputs(config)
    queries, items = torch.from_numpy(queries), torch.from_numpy(items)
    q, n, k = config["queries"], config["items"], config["k"]
    with open("/proc/meminfo") as f:
        available = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    # cdist's matmul path holds the [Q,N] result plus an augmented [N,d+2] copy of the items.
    per_item_bytes = 4 * (q + config["dim"] + 2)
    chunk = n if n * per_item_bytes <= available // 2 else max(k, available // 2 // per_item_bytes)

    def distance(a, b):
        if config["metric"] == "l2":
            return torch.cdist(a, b, p=2)
        if config["metric"] == "cosine":
            return -torch.nn.functional.normalize(a, dim=1) @ torch.nn.functional.normalize(b, dim=1).T
        return -(a @ b.T)

    def once():
        best_d, best_i = None, None
        for start in range(0, n, chunk):
            d, i = distance(queries, items[start:start + chunk]).topk(k, dim=1, largest=False)
            i = i + start
            if best_d is not None:
                d, pos = torch.cat([best_d, d], 1).topk(k, dim=1, largest=False)
                i = torch.gather(torch.cat([best_i, i], 1), 1, pos)
            best_d, best_i = d, i
        return best_i

    times = []
    rss_inputs = _reset_peak_rss()
    with torch.inference_mode():
        for _ in range(config["repeats"]):
            start = time.perf_counter()
            indices = once()
            times.append(time.perf_counter() - start)
    size = 2048
    a = torch.ones(size, size)
    a @ a
    start = time.perf_counter()
    for _ in range(3):
        a @ a
    plain = 2 * size**3 * 3 / (time.perf_counter() - start) / 1e12
    return {"torch_threads": torch.get_num_threads(), "chunks": -(-n // chunk),
            "plain_matmul_tflops": round(plain, 4),
            **_figures(times, config, rss_inputs), "indices": indices.numpy()}
