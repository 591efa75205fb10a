"""LC-Rec (Zheng et al., 2024): learned semantic item indices an LLM generates, aligned by multi-task tuning.

Recipe (every step configured by a section of :class:`Config`):

1. **Item embeddings** (``embeddings:``): mean-pooled hidden states of each item's
   ``title + description`` from a language model (LC-Rec; ``model: null`` = the run's own model),
   a precomputed ``.npy`` [N, d], or a SASRec item table (collaborative, LETTER-style).
2. **Semantic index** (``index:``): an RQ-VAE index built by :func:`jaxrec.index.build.build_semantic_index`
   (k-means init, Sinkhorn on the last level, collision resolution), or an existing LC-Rec/LETTER
   ``.index.json`` (keys = the dataset's raw item ids), or the index the LC-Rec reader stored per item
   (``source: dataset``). Written in LC-Rec's format to ``out_dir/index.json``.
3. **Tokens**: the index tokens (``<a_0>`` ... ``<d_255>``) are added to the tokenizer and the
   model's vocabulary rows grow to match (new rows: mean of the old rows + small noise).
4. **Alignment tuning** on the mixed tasks of :mod:`jaxrec.data.tasks.lcrec` (seqrec, item2index,
   index2item, fusionseqrec, itemsearch, preferenceobtain; ratios, history <= 20), loss on the
   response: full fine-tuning, or LoRA with ``train.lora.trainable`` extras (``embed_tokens``,
   ``lm_head``) restricted to the new token rows when ``tokens.train_new_rows_only``.
5. **Evaluation**: beam search (20 beams) constrained to the whole catalog's indices, exact trie
   and/or LC-Rec's per-level mask (``eval.modes``); HR/NDCG@K (beam lists, a target outside the
   list is a miss); every seqrec template evaluated (``eval.templates``) with mean/min/max over
   templates, as LC-Rec reports; popularity on the same users beside it.

The defaults are the embedded demo: the synthetic shop, a tiny Llama trained from scratch (BPE
tokenizer trained on the item text and the task templates), full fine-tuning, and — unlike LC-Rec's
response-only loss — the loss on the prompt too (``train.data.train_on_inputs``): the history lists
teach a model with no prior which items follow which (measured on the demo data: 300 steps with it
beat popularity, 600 response-only steps did not). Run directory:
``index.json`` + ``index.report.json``, ``item_trie.npz`` (the constraint index) and the files of
:mod:`jaxrec.models.run_dir`; ``results.json``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Literal

import numpy as np

from jaxrec.atomic import write_json
from jaxrec.data.dataset import Dataset
from jaxrec.data.splits import LeaveOneOut, leave_one_out
from jaxrec.data.tasks import item_text
from jaxrec.data.tasks.alpaca import alpaca_prompt
from jaxrec.data.tasks.rows import leave_one_out_rows
from jaxrec.data.tasks.lcrec import SEQREC_TEMPLATES, TEMPLATES, LCRecTaskConfig, lcrec_eval_examples, \
    lcrec_train_examples
from jaxrec.eval import evaluators
from jaxrec.eval.ranking import item_counts
from jaxrec.timing import Clock
from jaxrec.decode.trie import content_key, run_trie
from jaxrec.index.source import (INDEX_FILE, EmbeddingSection, IndexSection, index_codes, index_mapping, index_trie,
                                 item_embeddings)
from jaxrec.data.source import DataConfig, SyntheticData, load_dataset
from jaxrec.data.pipeline import TokenDataConfig
from jaxrec.models.lora import LoraConfig
from jaxrec.train.config import OptimConfig, TrainConfig
from jaxrec.decode.driver import padded_length
from jaxrec.eval.sample import eval_subset
from jaxrec.models.prompts import prompt_ids, row_fits
from jaxrec.models.section import ModelSection, make_model
from jaxrec.models.run_dir import grow_vocab, load_run, make_tokenizer, refuse_other_model, save_run, start_run
from jaxrec.train.finetune import finetune

log = logging.getLogger("jaxrec.methods.lcrec")


@dataclasses.dataclass
class TokenSection:
    """The index tokens added to the vocabulary: new rows start at the mean of the old rows plus
    ``noise_scale`` x per-feature std noise; in LoRA mode ``train_new_rows_only`` restricts the
    ``train.lora.trainable`` vocabulary parameters to the new rows."""

    noise_scale: float = 0.01
    train_new_rows_only: bool = True


@dataclasses.dataclass
class EvalConfig:
    """Constrained full-catalog evaluation of the seqrec task."""

    ks: list[int] = dataclasses.field(default_factory=lambda: [1, 5, 10, 20])
    num_beams: int = 20
    modes: list[Literal["trie", "per_level"]] = dataclasses.field(default_factory=lambda: ["trie", "per_level"])
    templates: list[int] | None = None  # seqrec templates evaluated; None: all (LC-Rec's multi-template)
    parts: list[Literal["valid", "test"]] = dataclasses.field(default_factory=lambda: ["test"])
    users: int | None = 1000  # a seeded sample of the evaluated users; None: all
    batch_size: int = 32
    seed: int = 0
    progress: bool = True

    def __post_init__(self):
        if not self.ks or max(self.ks) > self.num_beams:
            raise ValueError(f"eval.ks {self.ks} need cut-offs <= num_beams={self.num_beams}")
        if not self.modes or not self.parts:
            raise ValueError("eval.modes and eval.parts must each name at least one entry")


def _default_train() -> TrainConfig:
    return TrainConfig(batch_size=16, steps=300, log_every=50, lora=LoraConfig(mode="full"),
                       optim=OptimConfig(learning_rate=3e-3, warmup_steps=30, decay="cosine", weight_decay=0.01),
                       data=TokenDataConfig(seq_len=256, packing=True, train_on_inputs=True))


@dataclasses.dataclass
class Config:
    method: str = "lcrec"
    out_dir: str = "runs/lcrec"
    data: DataConfig = dataclasses.field(default_factory=lambda: DataConfig(synthetic=SyntheticData()))
    embeddings: EmbeddingSection = dataclasses.field(default_factory=EmbeddingSection)
    index: IndexSection = dataclasses.field(default_factory=IndexSection)
    tokens: TokenSection = dataclasses.field(default_factory=TokenSection)
    tasks: LCRecTaskConfig = dataclasses.field(default_factory=lambda: LCRecTaskConfig(
        ratios={"fusionseqrec": 0.1, "itemsearch": 0.1}))
    task_seed: int = 0
    model: ModelSection = dataclasses.field(default_factory=lambda: ModelSection(
        vocab_size=1024, hidden_size=128, intermediate_size=256, num_layers=2, num_heads=4, num_kv_heads=2,
        max_position_embeddings=512))
    train: TrainConfig = dataclasses.field(default_factory=_default_train)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)


# ----------------------------------------------------------------------------- embeddings and index


def add_index_tokens(model, tokenizer, codes: np.ndarray, config: Config) -> int:
    """Add the index's tokens to ``tokenizer`` and grow ``model``'s vocabulary rows (recorded in the
    run directory, see :func:`grow_vocab`); returns the old vocabulary size (the first new row)."""
    from jaxrec.index.index_io import index_vocabulary
    from jaxrec.models.tokenizer import add_tokens

    add_tokens(tokenizer, index_vocabulary(codes))
    return grow_vocab(model, tokenizer, config.out_dir, seed=config.model.seed, noise_scale=config.tokens.noise_scale)


def tokenizer_texts(ds: Dataset, template_weight: int = 100) -> list[str]:
    """From-scratch BPE training text: item titles and descriptions, and every task template's
    words repeated ``template_weight`` times (they fill every training prompt, so they deserve merges)."""
    texts = [t for t in item_text.documents(ds) if t]
    for templates in TEMPLATES.values():
        for t in templates:
            instruction, response = t.render({f: "" for f in t.fields})
            texts += [alpaca_prompt(instruction) + response] * template_weight
    return texts


def train_config(config: Config, first_new_row: int) -> TrainConfig:
    """``config.train`` with the run's log dir and, in LoRA mode, the new-token row restriction."""
    t = config.train
    lora = t.lora
    if lora.mode == "lora" and config.tokens.train_new_rows_only and lora.trainable and lora.new_token_rows_from is None:
        lora = dataclasses.replace(lora, new_token_rows_from=first_new_row)
    return dataclasses.replace(t, lora=lora, log_dir=t.log_dir or str(Path(config.out_dir) / "logs"))


# ----------------------------------------------------------------------------- train


def train(config: Config) -> dict:
    """Index, add tokens, alignment-tune; writes the run directory (see the module docstring)."""
    ds = load_dataset(config.data)
    return fit(config, ds, leave_one_out(ds))


def fit(config: Config, ds: Dataset, split: LeaveOneOut) -> dict:
    """:func:`train` on an already loaded dataset and split."""
    from jaxrec.index.index_io import write_index

    clock = Clock()
    out_dir = Path(config.out_dir)
    refuse_other_model(out_dir, config.model)  # before the index and tokenizer are rewritten
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = make_tokenizer(config.model, lambda: tokenizer_texts(ds), out_dir / "base")
    model = make_model(config.model, tokenizer)
    clock.lap("model")
    codes, report = index_codes(config.index, ds, lambda: item_embeddings(config.embeddings, ds, model, tokenizer,
                                                                          config.model.dtype), config.train.progress)
    clock.lap("index")
    write_index(out_dir / INDEX_FILE, codes)
    write_json(out_dir / "index.report.json", {"source": config.index.source, **report}, indent=1)
    first_new_row = add_index_tokens(model, tokenizer, codes, config)
    from jaxrec.models.tokenizer import save_tokenizer

    save_tokenizer(tokenizer, out_dir / "tokenizer")
    start_run(out_dir, config.model, model, tokenizer)
    tc = train_config(config, first_new_row)
    fits = row_fits(tokenizer, tc.data.seq_len) if config.tasks.fit_history else None
    examples = lcrec_train_examples(ds, split, index_mapping(codes), config.tasks, config.task_seed, fits=fits)
    clock.lap("tasks")
    model, summary = finetune(model, tokenizer, examples, tc)
    save_run(out_dir, config.model, model, tc.lora, config, summary)
    run_trie(out_dir, lambda: index_trie(tokenizer, codes, model.config.vocab_size),
             content_key(tokenizer, codes), rebuild=True)
    clock.lap("train")
    tasks = {}
    for e in examples:
        tasks[e.task] = tasks.get(e.task, 0) + 1
    index_summary = {k: report[k] for k in ("items", "levels", "collision_rate_final") if k in report}
    return {"method": "lcrec", "data": config.data.describe(), "model": config.model.describe(),
            "index": {"source": config.index.source, **index_summary, "new_tokens": len(tokenizer) - first_new_row},
            "train_examples": tasks, **summary, "seconds": clock.laps,
            "out_dir": str(out_dir)}


# ----------------------------------------------------------------------------- evaluate


def summarize_templates(per_template: dict[int, dict]) -> dict:
    """mean / min / max over templates of every metric (LC-Rec's multi-template report)."""
    names = [k for k in next(iter(per_template.values())) if k != "users"]
    values = {n: np.asarray([m[n] for m in per_template.values()]) for n in names}
    return {stat: {n: float(getattr(np, stat)(v)) for n, v in values.items()} for stat in ("mean", "min", "max")}


def evaluate(config: Config) -> dict:
    """Constrained full-catalog evaluation of a trained run; writes ``out_dir/results.json``."""
    ds = load_dataset(config.data)
    return evaluate_run(config, ds, leave_one_out(ds))


def evaluate_run(config: Config, ds: Dataset, split: LeaveOneOut) -> dict:
    """:func:`evaluate` on an already loaded dataset and split."""
    from jaxrec.index.index_io import read_index

    start = time.perf_counter()
    e = config.eval
    codes = read_index(Path(config.out_dir) / INDEX_FILE, ds.num_items)
    model, tokenizer = load_run(config.out_dir, "fine_tuned", config.model.dtype, config.model)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    trie = run_trie(config.out_dir, lambda: index_trie(tokenizer, codes, model.config.vocab_size),
                    content_key(tokenizer, codes))
    templates = e.templates if e.templates is not None else list(range(len(SEQREC_TEMPLATES)))
    index = index_mapping(codes)
    counts = item_counts(split.train, ds.num_items)
    result = {"method": "lcrec", "data": config.data.describe(), "model": config.model.describe(),
              "catalog_items": ds.num_items, "index_levels": int(codes.shape[1]), "num_beams": e.num_beams,
              "templates": templates,
              "protocol": evaluators.protocol("constrained", ds.num_items, num_beams=e.num_beams)}
    for part in e.parts:
        rows = leave_one_out_rows(split, part)
        chosen = eval_subset(len(rows.users), e.users, e.seed)
        targets = rows.targets[chosen]
        out = {"users": int(len(chosen)),
               "popularity": evaluators.popularity(counts, targets, e.ks)}
        prompts = {}
        for k in templates:
            examples = lcrec_eval_examples(ds, split, index, part, k, config.tasks.max_history)
            prompts[k] = prompt_ids(tokenizer, model, [examples[i].prompt for i in chosen.tolist()])
        length = max(padded_length(p) for p in prompts.values())
        for mode in e.modes:
            t0 = time.perf_counter()
            per_template, valid_rate = {}, {}
            for k in templates:
                per_template[k] = evaluators.constrained_generation(
                    model, prompts[k], targets, trie, e.ks, mode=mode, num_beams=e.num_beams, eos_id=eos, pad_id=pad,
                    batch_size=e.batch_size, length=length, desc=f"lcrec {part} {mode} t{k}" if e.progress else None)[0]
                valid_rate[k] = per_template[k].pop("item_rate")
            out[mode] = {**summarize_templates(per_template), "per_template": per_template,
                         "item_rate": valid_rate, "seconds": round(time.perf_counter() - t0, 2)}
        result[part] = out
    result["seconds"] = round(time.perf_counter() - start, 2)
    write_json(Path(config.out_dir) / "results.json", result)
    return result
