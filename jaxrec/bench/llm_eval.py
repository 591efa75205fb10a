"""`jaxrec bench llm-eval`: BIGRec evaluation throughput on a real pretrained LLM, jaxrec vs HF + torch.

Both sides run the same per-user workload on the same weights (a ``.gguf`` file is dequantized to
float32 by each side's own loader), the same token ids and the same catalog:

1. the BIGRec prompt of a test example (BIGRec's temporal split, history 10; the tokenizer's chat
   template when it has one, unless ``--no-chat``), ``[BOS] +`` prompt as :func:`jaxrec.models.prompts.prompt_ids`;
2. free generation by beam search (``--beams``, top beam, ``max_new_tokens`` = longest tokenized
   quoted title + 1), batches of ``--batch`` users;
3. the generated text (cut at EOS, quotes stripped) embedded by the last token's final hidden state
   (in batches of ``--embed-batch`` texts, or all of them when fewer);
4. the whole catalog ranked by L2 distance to the item-title embeddings: the target's 1-based rank.

jaxrec runs the real evaluation path (:func:`jaxrec.decode.driver.generate` with the title trie in
``mode="none"``, as ``bigrec.evaluate`` does, :func:`~jaxrec.decode.driver.decode_texts`,
:func:`~jaxrec.ground.embed.embed_prompt_texts`, :func:`~jaxrec.ground.rank.target_ranks`). The peer runs
what BIGRec's own evaluation code does: ``transformers`` ``generate(num_beams, do_sample=False)`` on
left-padded batches (each padded to its own longest prompt) under ``torch.inference_mode`` in
float32, ``model(..., output_hidden_states=True).hidden_states[-1][:, -1]`` for the embeddings and
``torch.cdist`` + a stable ``argsort`` for the ranks.

The catalog embeddings are computed once per side and timed alone (``catalog_embed_s``; jaxrec's
includes its compilation). jaxrec's first full run is its warm-up (``first_run_s``; ``compile_s`` =
first run minus the steady-state median); the peer warms up on one batch. Then ``--repeats`` timed
runs alternate between the sides (so load from other processes hits both alike): ``users_per_s``
from the median run, ``users_per_s_best`` from the fastest, per-phase medians in ``phases_s``.
``agreement`` is the fraction of users whose top-beam text is identical on both sides,
``rank_agreement`` the fraction whose target rank is identical; ``hr_at_10`` is a sanity figure on
these few users, not a quality claim.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np
from jaxrec.decode.driver import decode_texts, generate, left_pad, padded_length
from jaxrec.ground.rank import target_ranks
from jaxrec.ground.embed import embed_prompt_texts
from jaxrec.models.prompts import bos_id, chat_prompts, encode, prompt_ids

DEFAULT_MODEL = "smollm2-135m"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("llm-eval", help="BIGRec evaluation (generate + embed + rank) vs HF transformers + torch",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"a named checkpoint, .gguf file or HF directory (default {DEFAULT_MODEL})")
    p.add_argument("--data", default=None,
                   help="a prepared dataset directory (default: the embedded synthetic dataset)")
    p.add_argument("--domain", default=None,
                   help="BIGRec prompt wording: movies, games or items (default: items for the synthetic "
                        "dataset, else movies)")
    p.add_argument("--users", type=int, default=16, help="test users (a seeded sample of the test examples)")
    p.add_argument("--beams", type=int, default=4)
    p.add_argument("--batch", type=int, default=8, help="users per generation batch")
    p.add_argument("--embed-batch", type=int, default=64, help="texts per embedding forward")
    p.add_argument("--chat", action=argparse.BooleanOptionalAction, default=None,
                   help="wrap prompts in the tokenizer's chat template (default: when it has one)")
    p.add_argument("--peer", choices=("hf", "none"), default="hf")
    p.add_argument("--peer-threads", type=int, default=None,
                   help="torch intra-op threads for the peer (default: torch's own choice)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def _note(message: str) -> None:
    print(f"jaxrec bench llm-eval: {message}", file=sys.stderr, flush=True)


def _load_1min() -> float | None:
    """The host's 1-minute load average (None where /proc/loadavg is absent)."""
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _query_texts(texts: list[str]) -> list[str]:
    """BIGRec's query: the generated text with surrounding quotes stripped."""
    return [t.strip().strip('"') for t in texts]


def _query_batch(args, texts: list[str]) -> int:
    """Texts per forward when embedding the generated texts: ``--embed-batch``, or all of them when
    fewer (embed_prompt_texts pads a short last batch to the full batch size with copies)."""
    return max(1, min(args.embed_batch, len(texts)))


def _ranks_of_targets(dist, targets) -> np.ndarray:
    """1-based rank of each target in its row of ``dist`` [Q,N] (closest first, ties by lower id)."""
    import torch

    order = torch.argsort(dist, dim=-1, stable=True)
    return (order == torch.as_tensor(targets, dtype=torch.long)[:, None]).nonzero()[:, 1].numpy() + 1


# ----------------------------------------------------------------------------- workload


def prepare(args) -> dict:
    """The shared inputs: prompts (token ids), targets, item titles, tokenizer and search settings."""
    from jaxrec.data.tasks import bigrec_eval_examples
    from jaxrec.data.tasks.item_text import quoted, titles as item_titles
    from jaxrec.methods import bigrec
    from jaxrec.models.section import ModelSection
    from jaxrec.data.source import DataConfig, SyntheticData, load_dataset
    from jaxrec.models.tokenizer import load_tokenizer

    data = DataConfig(path=args.data) if args.data else DataConfig(synthetic=SyntheticData())
    config = bigrec.Config(data=data)
    ds = load_dataset(data)
    split = bigrec.split_of(config, ds)
    domain = args.domain or ("movies" if args.data else "items")
    examples = bigrec_eval_examples(ds, split, "test", domain, config.split.history, args.users, args.seed)
    tokenizer = load_tokenizer(args.model)
    if tokenizer.pad_token is None:  # as make_tokenizer
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    chat = bool(getattr(tokenizer, "chat_template", None)) if args.chat is None else args.chat
    section = ModelSection(pretrained=args.model, chat_template=chat)
    texts = chat_prompts(tokenizer, section, [e.prompt for e in examples])
    prompts = prompt_ids(tokenizer, None, texts)  # decoder-only: [BOS] + prompt when the tokenizer adds one
    titles = item_titles(ds)
    title_ids = encode(tokenizer, [quoted(t) for t in titles])
    return {"data": data, "tokenizer": tokenizer, "chat": chat, "prompts": prompts, "titles": titles,
            "title_ids": title_ids, "targets": np.asarray([e.target for e in examples], np.int32),
            "max_new_tokens": max(len(t) for t in title_ids) + 1, "eos": tokenizer.eos_token_id,
            "pad": tokenizer.pad_token_id, "num_items": ds.num_items}


class JaxrecSide:
    """jaxrec's BIGRec evaluation path (as :func:`jaxrec.methods.bigrec.evaluate`)."""

    def __init__(self, args, w: dict):
        from jaxrec.decode import ItemTrie
        from jaxrec.models import load_pretrained

        start = time.perf_counter()
        self.model = load_pretrained(args.model, dtype="float32")
        self.load_s = time.perf_counter() - start
        self.args, self.w = args, w
        self.trie = ItemTrie.from_sequences(w["title_ids"], eos_id=w["eos"],
                                            vocab_size=self.model.config.vocab_size)
        self.length = padded_length(w["prompts"])
        self.items = None

    def embed_catalog(self) -> float:

        start = time.perf_counter()
        self.items = embed_prompt_texts(self.model, self.w["tokenizer"], {"items": self.w["titles"]},
                                     self.args.embed_batch)["items"]
        return time.perf_counter() - start

    def __call__(self) -> tuple[list[str], np.ndarray, dict]:

        a, w, tok = self.args, self.w, self.w["tokenizer"]
        t0 = time.perf_counter()
        seqs, _, _ = generate(self.model, w["prompts"], num_beams=a.beams, max_new_tokens=w["max_new_tokens"],
                                  eos_id=w["eos"], pad_id=w["pad"], constraint=self.trie, mode="none",
                                  num_return_sequences=1, length_penalty=1.0, batch_size=a.batch,
                                  length=self.length)
        t1 = time.perf_counter()
        texts = decode_texts(tok, seqs[:, 0], w["eos"])
        queries = embed_prompt_texts(self.model, tok, {"q": _query_texts(texts)}, _query_batch(a, texts))["q"]
        t2 = time.perf_counter()
        ranks = np.asarray(target_ranks(queries, self.items, w["targets"], metric="l2"))
        t3 = time.perf_counter()
        return texts, ranks, {"generate": t1 - t0, "embed": t2 - t1, "rank": t3 - t2}


class HFSide:
    """The peer: HF transformers + torch, as BIGRec's evaluation code runs it."""

    def __init__(self, args, w: dict):
        import torch
        import transformers

        from jaxrec.models.checkpoints import resolve_pretrained

        if args.peer_threads:
            torch.set_num_threads(args.peer_threads)
        self.torch, self.args, self.w = torch, args, w
        path = resolve_pretrained(args.model)
        start = time.perf_counter()
        if path.suffix == ".gguf":
            model = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                                      dtype=torch.float32)
        else:
            model = transformers.AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
        self.model = model.eval()
        self.load_s = time.perf_counter() - start
        self.bos = bos_id(w["tokenizer"])
        self.items = None

    def _left_pad(self, rows):

        ids, mask = left_pad(rows, max(len(r) for r in rows), self.w["pad"])
        torch = self.torch
        return torch.as_tensor(ids, dtype=torch.long), torch.as_tensor(mask, dtype=torch.long)

    def _embed(self, texts: list[str], batch: int):
        torch, tok, b = self.torch, self.w["tokenizer"], batch
        rows = [([self.bos] if self.bos is not None else []) + ids
                for ids in tok(texts, add_special_tokens=False)["input_ids"]]
        rows = [r or [self.w["eos"]] for r in rows]
        parts = []
        with torch.inference_mode():
            for start in range(0, len(rows), b):
                ids, mask = self._left_pad(rows[start:start + b])
                out = self.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
                parts.append(out.hidden_states[-1][:, -1, :])
        return torch.cat(parts)

    def embed_catalog(self) -> float:
        start = time.perf_counter()
        self.items = self._embed(self.w["titles"], self.args.embed_batch)
        return time.perf_counter() - start

    def __call__(self, prompts=None, targets=None) -> tuple[list[str], np.ndarray, dict]:

        torch, a, w = self.torch, self.args, self.w
        prompts = w["prompts"] if prompts is None else prompts
        targets = w["targets"] if targets is None else targets
        t0 = time.perf_counter()
        generated = []
        with torch.inference_mode():
            for start in range(0, len(prompts), a.batch):
                ids, mask = self._left_pad(prompts[start:start + a.batch])
                out = self.model.generate(input_ids=ids, attention_mask=mask, num_beams=a.beams,
                                          num_return_sequences=1, max_new_tokens=w["max_new_tokens"],
                                          do_sample=False, early_stopping=False, length_penalty=1.0,
                                          eos_token_id=w["eos"], pad_token_id=w["pad"])
                generated += out[:, ids.shape[1]:].tolist()
        t1 = time.perf_counter()
        width = max(len(g) for g in generated)
        seqs = np.asarray([g + [w["pad"]] * (width - len(g)) for g in generated])
        texts = decode_texts(w["tokenizer"], seqs, w["eos"])
        queries = self._embed(_query_texts(texts), _query_batch(a, texts))
        t2 = time.perf_counter()
        with torch.inference_mode():
            ranks = _ranks_of_targets(torch.cdist(queries, self.items, p=2), targets)
        t3 = time.perf_counter()
        return texts, ranks, {"generate": t1 - t0, "embed": t2 - t1, "rank": t3 - t2}


# ----------------------------------------------------------------------------- measurement


def _figures(times: list[float], phases: list[dict], users: int) -> dict:
    return {"users_per_s": users / statistics.median(times), "users_per_s_best": users / min(times),
            "run_s": [round(t, 3) for t in times],
            "phases_s": {k: round(statistics.median(p[k] for p in phases), 3) for k in phases[0]}}


def measure(args) -> dict:
    """Run both sides; returns the benchmark's JSON object."""
    from jaxrec.bench.hardware import hardware_info
    from jaxrec.errors import JaxrecError

    if args.users < 1 or args.beams < 1 or args.batch < 1 or args.repeats < 1:
        raise JaxrecError("--users, --beams, --batch and --repeats must be >= 1")
    load_start = _load_1min()
    _note(f"preparing {args.users} BIGRec test prompts ({args.data or 'synthetic data'}, {args.model})")
    w = prepare(args)
    users = len(w["prompts"])
    lengths = [len(p) for p in w["prompts"]]
    result = {"benchmark": "llm-eval", "config": {
        "model": args.model, "data": w["data"].describe(), "users": users, "beams": args.beams,
        "batch": args.batch, "embed_batch": args.embed_batch, "query_embed_batch": min(args.embed_batch, users),
        "chat_template": w["chat"],
        "max_new_tokens": w["max_new_tokens"], "catalog_items": w["num_items"],
        "prompt_tokens_mean": round(float(np.mean(lengths)), 1), "prompt_tokens_max": max(lengths),
        "repeats": args.repeats, "seed": args.seed, "dtype": "float32"}, "hardware": hardware_info()}

    _note("jaxrec: loading the model")
    ours = JaxrecSide(args, w)
    result["config"]["prompt_padded_length"] = ours.length
    _note(f"jaxrec: embedding the catalog ({w['num_items']} titles)")
    ours_catalog = ours.embed_catalog()
    _note("jaxrec: first run (compiles)")
    start = time.perf_counter()
    ours_texts, ours_ranks, _ = ours()
    ours_first = time.perf_counter() - start
    peer = None
    if args.peer == "hf":
        _note("peer: loading the model (transformers, float32)")
        peer = HFSide(args, w)
        _note(f"peer: embedding the catalog ({w['num_items']} titles)")
        peer_catalog = peer.embed_catalog()
        _note("peer: warm-up on one batch")
        peer(w["prompts"][:args.batch], w["targets"][:args.batch])
    times = {"jaxrec": [], "peer": []}
    phases = {"jaxrec": [], "peer": []}
    for r in range(args.repeats):
        _note(f"timed run {r + 1}/{args.repeats}: jaxrec")
        start = time.perf_counter()
        ours_texts, ours_ranks, ph = ours()
        times["jaxrec"].append(time.perf_counter() - start)
        phases["jaxrec"].append(ph)
        if peer is not None:
            _note(f"timed run {r + 1}/{args.repeats}: peer")
            start = time.perf_counter()
            peer_texts, peer_ranks, ph = peer()
            times["peer"].append(time.perf_counter() - start)
            phases["peer"].append(ph)

    jx = _figures(times["jaxrec"], phases["jaxrec"], users)
    result.update({
        "users_per_s": jx["users_per_s"], "users_per_s_best": jx["users_per_s_best"],
        "run_s": jx["run_s"], "phases_s": jx["phases_s"],
        "first_run_s": round(ours_first, 3),
        "compile_s": round(max(ours_first - statistics.median(times["jaxrec"]), 0.0), 3),
        "catalog_embed_s": round(ours_catalog, 3), "load_s": round(ours.load_s, 3),
        "hr_at_10": float(np.mean(ours_ranks <= 10)),
        "target_ranks": np.asarray(ours_ranks).tolist(),
    })
    if peer is not None:
        import torch
        import transformers

        px = _figures(times["peer"], phases["peer"], users)
        result.update({
            "peer": f"transformers {transformers.__version__} generate(num_beams) + torch.cdist (torch, float32)",
            "peer_users_per_s": px["users_per_s"], "peer_users_per_s_best": px["users_per_s_best"],
            "peer_run_s": px["run_s"], "peer_phases_s": px["phases_s"],
            "peer_catalog_embed_s": round(peer_catalog, 3), "peer_load_s": round(peer.load_s, 3),
            "peer_torch_threads": torch.get_num_threads(),
            "peer_hr_at_10": float(np.mean(peer_ranks <= 10)),
            "peer_target_ranks": np.asarray(peer_ranks).tolist(),
            "speedup_vs_peer": jx["users_per_s"] / px["users_per_s"],
            "speedup_vs_peer_best": jx["users_per_s_best"] / px["users_per_s_best"],
            "agreement": float(np.mean([a == b for a, b in zip(ours_texts, peer_texts)])),
            "rank_agreement": float(np.mean(np.asarray(ours_ranks) == np.asarray(peer_ranks))),
        })
        differing = [{"user": i, "jaxrec": a, "peer": b}
                     for i, (a, b) in enumerate(zip(ours_texts, peer_texts)) if a != b]
        result["differing_texts"] = differing[:5]
    result["host_load_1min"] = {"start": load_start, "end": _load_1min()}
    result["samples"] = [{"jaxrec": t, "target": w["titles"][g]} for t, g in zip(ours_texts[:3], w["targets"])]
    return result


def run(args) -> int:
    result = measure(args)
    print(json.dumps(result, indent=2))
    return 0
