"""`jaxrec bench decode`: trie-constrained beam search vs HF generate + prefix_allowed_tokens_fn.

One random Llama (created in this run, saved once as an HF checkpoint, loaded by both sides) decodes
random semantic IDs (L levels of C codes each, + EOS) for a batch of users with left-padded random
prompts. jaxrec runs :func:`jaxrec.decode.beam_search` (exact trie, and unconstrained for the cost of
the constraint); the peer runs ``transformers`` ``generate(num_beams, num_return_sequences,
prefix_allowed_tokens_fn)`` with the function walking a Python dict trie, as the reference
implementations do. ``top1_agreement`` is the fraction of users whose best item is the same on both
sides. ``--scale 10000,100000,1000000`` adds jaxrec's constrained throughput per catalogue size.
Throughputs are users per second: ``*_per_s`` from the median of ``--repeats`` timed runs after a
warm-up, ``*_per_s_best`` from the fastest run (closest to the unloaded figure on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import numpy as np

PRESETS = {
    "cpu-small": dict(hidden=256, layers=4, heads=4, mlp=688, vocab=2048, prompt=64, items=10_000,
                      levels=4, codes=256, beams=20, batch=8),
    "tiny": dict(hidden=64, layers=2, heads=4, mlp=128, vocab=512, prompt=16, items=1_000,
                 levels=3, codes=64, beams=8, batch=4),
    # a 1.1B Llama over 100k items with 4-level semantic IDs: one accelerator (accelerator_check.sh)
    "accelerator": dict(hidden=2048, layers=22, heads=32, mlp=5632, vocab=32000, prompt=256, items=100_000,
                        levels=4, codes=256, beams=20, batch=64),
}
PAD, BOS, EOS = 0, 1, 2
FIRST_CODE = 3  # level l, code c -> token FIRST_CODE + l * codes + c; the rest of the vocab is text


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("decode", help="constrained beam search vs HF generate + prefix_allowed_tokens_fn",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=tuple(PRESETS), default="cpu-small")
    p.add_argument("--items", type=int, default=None, help="catalogue size (default: the preset's)")
    p.add_argument("--beams", type=int, default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--peer", choices=("hf", "none"), default="hf")
    p.add_argument("--scale", default="", help="comma-separated catalogue sizes for a jaxrec-only table")
    p.add_argument("--peer-threads", type=int, default=None,
                   help="torch intra-op threads for the peer (default: torch's own choice)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def _semantic_ids(n: int, levels: int, codes: int, seed: int) -> np.ndarray:
    """[n, levels] distinct random semantic IDs as token ids."""
    rng = np.random.default_rng(seed)
    raw = np.unique(rng.integers(0, codes, (int(n * 1.2) + 16, levels)), axis=0)
    raw = raw[rng.permutation(len(raw))[:n]]
    return FIRST_CODE + raw + codes * np.arange(levels)


def _prompts(cfg: dict, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Left-padded random prompts [batch, prompt] of 3/4 to full length."""
    rng = np.random.default_rng(seed + 1)
    first_text = FIRST_CODE + cfg["levels"] * cfg["codes"]
    ids = rng.integers(first_text, cfg["vocab"], (cfg["batch"], cfg["prompt"]))
    lengths = rng.integers(cfg["prompt"] * 3 // 4, cfg["prompt"] + 1, cfg["batch"])
    mask = (np.arange(cfg["prompt"])[None, :] >= cfg["prompt"] - lengths[:, None]).astype(np.int32)
    return np.where(mask == 1, ids, PAD).astype(np.int32), mask


def _timed(fns: dict, repeats: int) -> dict:
    """name -> (median, min) seconds of ``repeats`` calls, after one warm-up call each. The functions
    run interleaved (round robin) so that load from other processes hits all of them alike."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(t), min(t)) for name, t in times.items()}


def _save_random_llama(cfg: dict, path: str, seed: int) -> None:
    from jaxrec.models import build_model, save_pretrained
    from jaxrec.models.llama import LlamaConfig

    config = LlamaConfig(vocab_size=cfg["vocab"], hidden_size=cfg["hidden"],
                         intermediate_size=cfg["mlp"], num_layers=cfg["layers"], num_heads=cfg["heads"],
                         num_kv_heads=cfg["heads"], head_dim=cfg["hidden"] // cfg["heads"],
                         bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD)
    save_pretrained(build_model(config, seed=seed), path)


def _jaxrec_side(path: str, cfg: dict, ids, mask, sids, scale: list[int], repeats: int, seed: int) -> dict:
    import jax

    from jaxrec.decode import ItemTrie, beam_search
    from jaxrec.models import load_pretrained

    model = load_pretrained(path)
    search = dict(num_beams=cfg["beams"], num_return_sequences=cfg["beams"],
                  max_new_tokens=cfg["levels"] + 1, eos_token_id=EOS, pad_token_id=PAD)
    start = time.perf_counter()
    trie = ItemTrie.from_sequences(sids, eos_id=EOS, vocab_size=cfg["vocab"])
    build_s = time.perf_counter() - start

    def run(trie, mode="trie"):
        return lambda: jax.block_until_ready(beam_search(model, ids, mask, constraint=trie, mode=mode,
                                                         **search))

    seconds = _timed({"trie": run(trie), "none": run(trie, "none")}, repeats)
    out = beam_search(model, ids, mask, constraint=trie, **search)
    result = {"users_per_s": cfg["batch"] / seconds["trie"][0],
              "users_per_s_best": cfg["batch"] / seconds["trie"][1],
              "unconstrained_users_per_s": cfg["batch"] / seconds["none"][0],
              "unconstrained_users_per_s_best": cfg["batch"] / seconds["none"][1],
              "trie_build_s": build_s, "trie_nodes": trie.num_nodes, "trie_mb": trie.nbytes / 2**20,
              "top_items": np.asarray(out.item_ids[:, 0]).tolist(),
              "all_outputs_are_items": bool((np.asarray(out.item_ids) >= 0).all())}
    tries, table = {}, []
    for n in scale:
        start = time.perf_counter()
        tries[n] = ItemTrie.from_sequences(_semantic_ids(n, cfg["levels"], cfg["codes"], seed), eos_id=EOS)
        table.append({"items": n, "trie_build_s": time.perf_counter() - start,
                      "trie_nodes": tries[n].num_nodes, "trie_mb": tries[n].nbytes / 2**20})
    if table:
        seconds = _timed({n: run(t) for n, t in tries.items()}, repeats)
        for row in table:
            row["users_per_s"] = cfg["batch"] / seconds[row["items"]][0]
            row["users_per_s_best"] = cfg["batch"] / seconds[row["items"]][1]
        result["scale"] = table
    return result


def _hf_side(path: str, cfg: dict, ids, mask, sids, repeats: int, threads: int | None) -> dict:
    import torch
    import transformers

    if threads:
        torch.set_num_threads(threads)
    model = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    root: dict = {}
    for seq in sids.tolist():
        node = root
        for t in seq + [EOS]:
            node = node.setdefault(t, {})
    prompt_len = ids.shape[1]

    def allowed(batch_id, sent):
        node = root
        for t in sent[prompt_len:].tolist():
            node = node.get(t)
            if node is None:
                return [EOS]
        return list(node) or [EOS]

    inputs = dict(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask))
    kwargs = dict(num_beams=cfg["beams"], num_return_sequences=cfg["beams"], do_sample=False,
                  max_new_tokens=cfg["levels"] + 1, prefix_allowed_tokens_fn=allowed,
                  eos_token_id=EOS, pad_token_id=PAD, return_dict_in_generate=True)
    with torch.no_grad():
        median, fastest = _timed({"hf": lambda: model.generate(**inputs, **kwargs)}, repeats)["hf"]
        out = model.generate(**inputs, **kwargs)
    top = out.sequences.reshape(cfg["batch"], cfg["beams"], -1)[:, 0, prompt_len:].tolist()
    return {"peer_users_per_s": cfg["batch"] / median, "peer_users_per_s_best": cfg["batch"] / fastest,
            "peer_torch_threads": torch.get_num_threads(), "peer_best": top}


def run(args) -> int:
    from jaxrec.bench.hardware import hardware_info

    cfg = dict(PRESETS[args.preset])
    for key in ("items", "beams", "batch"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    scale = [int(x) for x in args.scale.split(",") if x.strip()]
    ids, mask = _prompts(cfg, args.seed)
    sids = _semantic_ids(cfg["items"], cfg["levels"], cfg["codes"], args.seed)
    result = {"benchmark": "decode", "preset": args.preset, "config": cfg, "hardware": hardware_info()}
    with tempfile.TemporaryDirectory() as path:
        _save_random_llama(cfg, path, args.seed)
        ours = _jaxrec_side(path, cfg, ids, mask, sids, scale, args.repeats, args.seed)
        if args.peer == "hf":
            peer = _hf_side(path, cfg, ids, mask, sids, args.repeats, args.peer_threads)
            best = peer.pop("peer_best")
            top = [-1 if EOS not in b else int(np.flatnonzero(
                (sids == np.array(b[:cfg["levels"]])).all(1))[0]) for b in best]
            ours["top1_agreement"] = float(np.mean(np.array(top) == np.array(ours["top_items"])))
            ours.update(peer)
            ours["speedup_vs_peer"] = ours["users_per_s"] / ours["peer_users_per_s"]
            ours["speedup_vs_peer_best"] = ours["users_per_s_best"] / ours["peer_users_per_s_best"]
    ours["constrained_vs_unconstrained"] = ours["users_per_s"] / ours["unconstrained_users_per_s"]
    ours["constrained_vs_unconstrained_best"] = (ours["users_per_s_best"]
                                                 / ours["unconstrained_users_per_s_best"])
    ours.pop("top_items")
    result.update(ours)
    print(json.dumps(result, indent=2))
    return 0
