"""BIGRec (Bao et al., 2023): instruction-tune an LLM to write the next item's title, then ground it.

Recipe:

1. **Data.** BIGRec's global temporal split (80/10/10 of next-item examples, history <= 10) and
   Alpaca prompts with the domain's wording (``prompts.domain``); training uses BIGRec's few-shot
   sample (``prompts.train_sample``, default 1,024) — see docs/TASKS.md.
2. **Training.** Title generation, loss on the response (``"Title"`` + EOS), through the shared
   engine: LoRA on a local HF model (``model.pretrained``) or full fine-tuning of a tiny Llama
   trained from scratch with a BPE tokenizer trained on the dataset's text. (LoRA on a *random*
   tiny model learns little: the frozen random weights carry no language, so the from-scratch
   configs use ``train.lora.mode: full``.)
3. **Free generation + grounding.** Beam search (``generation.num_beams``, BIGRec: 4), top beam;
   its text (quotes stripped) and every item title are embedded by the last-token final hidden state
   of the base or fine-tuned model (``ground.model``; BIGRec grounds with the base model). Every
   catalog item is ranked by L2 distance with the exact tiled kernel (:mod:`jaxrec.ground`), and
   optionally re-weighted by popularity (``ground.fusion``): F = minmax(D) * (1 + C)^-gamma, C the
   min-max normalised count of each item as a training target, gamma chosen on validation per
   metric and K from BIGRec's grid 0..99.
4. **Constrained generation.** The same beam search restricted by a trie over all tokenized titles:
   every beam is a real item, read directly. The ranked list is the ``num_beams`` returned items,
   so HR/NDCG@K for K > num_beams count only those (MRR likewise).

Metrics: HR/NDCG@K (``eval.ks``, default 1,3,5,10,20,50) over the full catalog, plus the expected
values of a random ranking. ``evaluate`` writes ``out_dir/results.json`` and ``out_dir/generations.jsonl``
(per evaluated example: part, user, target, the free generation and the constrained top item); training
writes ``out_dir/item_trie.npz``, the titles' constraint index that evaluation reads back.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Literal

import numpy as np

from jaxrec.atomic import atomic_file, write_json
from jaxrec.data.splits import TemporalSplit, temporal_split
from jaxrec.data.tasks import bigrec_eval_examples, bigrec_train_examples
from jaxrec.data.tasks.domains import DomainName
from jaxrec.data.tasks.item_text import quoted, titles as item_titles
from jaxrec.decode.trie import content_key, run_trie, text_trie
from jaxrec.eval import evaluators
from jaxrec.eval.evaluators import constrained_generation, free_generation, grounding
from jaxrec.eval.metrics import random_ranking_metrics
from jaxrec.ground.fusion import POPULARITY_GAMMAS, choose_gamma, fused_target_ranks, minmax
from jaxrec.data.source import DataConfig, SyntheticData, load_dataset
from jaxrec.train.config import TrainConfig
from jaxrec.decode.driver import decode_texts, padded_length
from jaxrec.ground.embed import embed_prompt_texts
from jaxrec.models.prompts import chat_examples, chat_prompts, prompt_ids
from jaxrec.models.section import ModelSection, make_model
from jaxrec.models.run_dir import load_run, make_tokenizer, save_run, start_run
from jaxrec.train.finetune import finetune


@dataclasses.dataclass
class SplitConfig:
    """BIGRec's temporal split (:func:`jaxrec.data.splits.temporal_split`)."""

    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    history: int = 10
    min_history: int = 1
    min_target_rating: float | None = None


@dataclasses.dataclass
class PromptConfig:
    """Prompt wording and sample sizes (None or -1: every example of the period)."""

    domain: DomainName = "movies"
    train_sample: int | None = 1024
    eval_sample: int | None = None  # valid and test examples evaluated (seeded sample)
    seed: int = 0


@dataclasses.dataclass
class GenerationConfig:
    num_beams: int = 4
    max_new_tokens: int | None = None  # free generation; None: the longest quoted title + EOS
    length_penalty: float = 1.0
    batch_size: int = 32


@dataclasses.dataclass
class GroundConfig:
    """How generated text meets the catalog. ``encoder`` null: BIGRec's own way, the LLM's last-token
    final hidden state (of the ``model`` it names); else a sentence encoder (e.g. ``minilm-l6``)
    embeds the generations and the titles (``model`` is then unused)."""

    model: Literal["base", "fine_tuned"] = "base"
    encoder: str | None = None
    fusion: bool = True  # popularity fusion with gamma chosen on validation
    batch_size: int = 64  # texts per embedding forward


@dataclasses.dataclass
class EvalConfig:
    ks: list[int] = dataclasses.field(default_factory=lambda: [1, 3, 5, 10, 20, 50])
    free: bool = True
    constrained: bool = True
    exclude_history: bool = False  # grounding ranks without the prompt's history items (S3-Rec's protocol)

    def __post_init__(self):
        if not (self.free or self.constrained):
            raise ValueError("enable at least one of eval.free and eval.constrained")


@dataclasses.dataclass
class Config:
    method: str = "bigrec"
    out_dir: str = "runs/bigrec"
    data: DataConfig = dataclasses.field(default_factory=lambda: DataConfig(synthetic=SyntheticData()))
    split: SplitConfig = dataclasses.field(default_factory=SplitConfig)
    prompts: PromptConfig = dataclasses.field(default_factory=PromptConfig)
    model: ModelSection = dataclasses.field(default_factory=ModelSection)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    generation: GenerationConfig = dataclasses.field(default_factory=GenerationConfig)
    ground: GroundConfig = dataclasses.field(default_factory=GroundConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)


def split_of(config: Config, ds) -> TemporalSplit:
    s = config.split
    return temporal_split(ds, tuple(s.ratios), s.history, s.min_history, s.min_target_rating)


# ----------------------------------------------------------------------------- train


def train(config: Config) -> dict:
    """Fine-tune on title generation; writes the run directory (see :mod:`jaxrec.models.run_dir`)."""
    ds = load_dataset(config.data)
    split = split_of(config, ds)
    p = config.prompts
    examples = bigrec_train_examples(ds, split, p.domain, p.train_sample, p.seed, config.split.history)
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    titles = [quoted(t) for t in item_titles(ds)]
    tokenizer = make_tokenizer(config.model, lambda: [e.prompt + e.response for e in examples] + titles, out_dir,
                                   chat=True)
    model = make_model(config.model, tokenizer)
    start_run(out_dir, config.model, model, tokenizer)
    train_cfg = config.train if config.train.log_dir else dataclasses.replace(config.train, log_dir=str(out_dir / "logs"))
    model, summary = finetune(model, tokenizer, chat_examples(tokenizer, config.model, examples), train_cfg)
    save_run(out_dir, config.model, model, train_cfg.lora, config, summary)
    run_trie(out_dir, lambda: text_trie(tokenizer, titles, model.config.vocab_size), content_key(tokenizer, titles),
             rebuild=True)
    return {"method": "bigrec", "data": config.data.describe(), "model": config.model.describe(),
            "train_examples": len(examples), **summary, "out_dir": str(out_dir)}


# ----------------------------------------------------------------------------- grounding


def target_counts(split: TemporalSplit, num_items: int) -> np.ndarray:
    """float32 [N]: each item's count as a training target (BIGRec's popularity before normalising)."""
    return np.bincount(split.train.target, minlength=num_items).astype(np.float32)


def fusion_metrics(valid: tuple, test: tuple, weights: np.ndarray, ks: list[int]) -> dict:
    """Popularity fusion: per metric the gamma best on validation and its valid/test values.

    ``valid``/``test``: (queries [Q,d], items [N,d], targets [Q], exclude [Q,E] or None)."""
    metrics = {}
    for k in ks:
        metrics[f"HR@{k}"] = lambda r, k=k: float(np.mean(r <= k))
        metrics[f"NDCG@{k}"] = lambda r, k=k: float(np.mean(np.where(r <= k, 1.0 / np.log2(r + 1.0), 0.0)))
    valid_ranks, test_ranks = (np.asarray(fused_target_ranks(q, items, t, weights, POPULARITY_GAMMAS, metric="l2",
                                                             exclude=exclude)) for q, items, t, exclude in (valid, test))
    best = choose_gamma(valid_ranks, POPULARITY_GAMMAS, metrics)
    out = {}
    for name, (gamma, value) in best.items():
        row = int(np.flatnonzero(POPULARITY_GAMMAS == gamma)[0])
        out[name] = {"gamma": gamma, "valid": value, "test": metrics[name](test_ranks[row])}
    return out


# ----------------------------------------------------------------------------- evaluate


def evaluate(config: Config) -> dict:
    """Free generation + grounding and constrained generation on valid and test; writes results.json."""
    start = time.perf_counter()
    ds = load_dataset(config.data)
    split = split_of(config, ds)
    p, g, ks = config.prompts, config.generation, config.eval.ks
    parts = {part: bigrec_eval_examples(ds, split, part, p.domain, config.split.history, p.eval_sample, p.seed)
             for part in ("valid", "test")}
    model, tokenizer = load_run(config.out_dir, "fine_tuned", config.model.dtype, config.model)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    raw_titles = item_titles(ds)
    answers = [quoted(t) for t in raw_titles]
    trie = run_trie(config.out_dir, lambda: text_trie(tokenizer, answers, model.config.vocab_size),
                    content_key(tokenizer, answers))
    prompts = {part: prompt_ids(tokenizer, model, chat_prompts(tokenizer, config.model, [e.prompt for e in ex]))
               for part, ex in parts.items()}
    targets = {part: np.asarray([e.target for e in ex], np.int32) for part, ex in parts.items()}
    beams = dict(num_beams=g.num_beams, length_penalty=g.length_penalty, batch_size=g.batch_size,
                 length=padded_length(prompts["valid"] + prompts["test"]))
    result = {"method": "bigrec", "data": config.data.describe(), "model": config.model.describe(),
              "catalog_items": ds.num_items, "examples": {k: len(v) for k, v in parts.items()},
              "num_beams": g.num_beams, "random": random_ranking_metrics(ds.num_items, ks),
              "popularity": {part: evaluators.popularity(target_counts(split, ds.num_items), t, ks)
                             for part, t in targets.items()},
              "protocol": {"constrained": evaluators.protocol("constrained", ds.num_items, num_beams=g.num_beams),
                           "free": evaluators.protocol("grounding", ds.num_items,
                                                       exclude_history=config.eval.exclude_history)}}
    shown = ({part: evaluators.padded_ids([e.meta["history"] for e in ex]) for part, ex in parts.items()}
             if config.eval.exclude_history else None)
    samples = [{"target": raw_titles[t]} for t in targets["test"][:3]]
    rows = {part: [{"part": part, "user": e.user, "target": raw_titles[e.target]} for e in ex]
            for part, ex in parts.items()}
    seconds = {}

    if config.eval.constrained:
        t0 = time.perf_counter()
        out = {"list_length": g.num_beams}
        for part in ("valid", "test"):
            out[part], items, best = constrained_generation(model, prompts[part], targets[part], trie, ks, eos_id=eos,
                                                            pad_id=pad, desc=f"constrained {part}", **beams)
            for row, item in zip(rows[part], items[:, 0]):
                row["constrained"] = raw_titles[item] if item >= 0 else None
            if part == "test":
                for s, text in zip(samples, decode_texts(tokenizer, best[:3], eos)):
                    s["constrained"] = text
        result["constrained"] = out
        seconds["constrained"] = round(time.perf_counter() - t0, 2)

    if config.eval.free:
        t0 = time.perf_counter()
        max_new = g.max_new_tokens or trie.max_length + 1
        texts, exact = {}, {}
        for part in ("valid", "test") if config.ground.fusion else ("test",):
            texts[part], exact[part] = free_generation(model, tokenizer, prompts[part], trie, max_new_tokens=max_new,
                                                       desc=f"free {part}", **beams)
            for row, text in zip(rows[part], texts[part]):
                row["free"] = text
        for s, text in zip(samples, texts["test"]):
            s["free"] = text
        seconds["free_generation"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        generated = {part: [t.strip().strip('"') for t in tx] for part, tx in texts.items()}
        if config.ground.encoder:
            from jaxrec.ground.embed import encode_texts

            groups = {"items": raw_titles, **generated}
            flat = encode_texts(config.ground.encoder, [t for group in groups.values() for t in group],
                                batch_size=config.ground.batch_size)
            ends = np.cumsum([len(group) for group in groups.values()])
            queries = dict(zip(groups, np.split(flat, ends[:-1])))
        else:
            if config.ground.model == "base":
                model, _ = load_run(config.out_dir, "base", config.model.dtype)
            queries = embed_prompt_texts(model, tokenizer, {"items": raw_titles, **generated}, config.ground.batch_size)
        items_emb = queries.pop("items")
        free = {"ground_model": config.ground.encoder or config.ground.model, "exact_title_rate": exact,
                **grounding(queries, items_emb, targets, ks, shown)}
        if config.ground.fusion:
            free["popularity_fusion"] = fusion_metrics(
                *((queries[part], items_emb, targets[part], None if shown is None else shown[part])
                  for part in ("valid", "test")), minmax(target_counts(split, ds.num_items)), ks)
        result["free"] = free
        seconds["grounding"] = round(time.perf_counter() - t0, 2)

    result["samples"] = samples
    result["seconds"] = {**seconds, "total": round(time.perf_counter() - start, 2)}
    with atomic_file(Path(config.out_dir) / "generations.jsonl") as f:
        f.writelines(json.dumps(row) + "\n" for part in ("valid", "test") for row in rows[part])
    write_json(Path(config.out_dir) / "results.json", result)
    return result
