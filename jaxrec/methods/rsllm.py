"""RSLLM (Zheng et al., 2024): a sequential recommender's item ID embeddings, projected into an LLM's input
space, next to the item titles of the prompt; two-stage tuning with LM + two contrastive losses.

Recipe:

1. **ID embeddings.** A SASRec (:mod:`jaxrec.methods.sasrec`) trained on the same leave-one-out split
   supplies item embeddings [N, d_id] (``id_model.run_dir/item_embeddings.npy``; trained there first
   when the file is missing). They are scaled to unit RMS and frozen unless ``id_model.trainable``.
2. **Projector.** A two-layer MLP (:class:`jaxrec.models.projector.ItemProjector`) maps them to the
   LLM's hidden size; its output starts at the RMS of the LLM's token embeddings.
3. **Prompts** (:mod:`jaxrec.data.tasks.rsllm`): each quoted history title is followed by
   ``<item_emb>`` (stage 2). The placeholder never reaches the vocabulary: it is encoded as the token
   id ``-1 - item`` and the LLM's embedding layer (:class:`~jaxrec.models.projector.ItemInjectingEmbed`)
   replaces exactly those positions by the projected ID embedding, on device, inside the jitted step.
4. **Stage 1** (``stage1``): text-only prompts, LM loss on the response (the next item's title);
   trains LoRA (or the whole LLM with ``lora.mode: full``). **Stage 2** (``stage2``): unified prompts
   (text + ID), starting from the stage-1 model (stage-1 LoRA merged); trains LoRA (or the LLM) **and
   the projector**; the SASRec table only with ``id_model.trainable``. Loss:

       LM + lambda_seq * InfoNCE(h_user, z_target) + lambda_item * InfoNCE(z_item, t_item)

   in-batch negatives, cosine similarity / ``contrastive.temperature`` (:mod:`jaxrec.train.contrastive`;
   keys of the same item are excluded from the negatives).

   **Our choices where the paper leaves details open:**

   * ``h_user`` (pooled history representation): the LLM's final-normed hidden state at the last
     prompt token (the state that predicts the first title token of the answer).
   * ``z_target`` (target item representation): the target's projected ID embedding, the vector the
     model reads for that item at a placeholder.
   * ``z_item`` / ``t_item``: for every placeholder of the batch (up to ``prompts.max_history`` per
     row), its projected ID embedding and the item's text representation, the final hidden state at
     the token just before the placeholder (the end of the quoted title it follows).
   * The contrastive terms belong to stage 2 (they align ID and text representations, which only
     exist together in unified prompts); stage 1 is the LM loss alone.

Evaluation (``evaluate``; the stage-2 model with unified prompts, leave-one-out valid/test users,
optionally a seeded sample of ``eval.users``):

* **full catalog**, constrained: beam search restricted by a trie over every tokenized title, the
  ``num_beams`` returned items form the ranked list (HR/NDCG@K for K > num_beams count only those);
* **full catalog**, free: top beam of free generation, grounded to every item by L2 distance between
  last-token hidden states of the fine-tuned model (BIGRec's grounding);
* **LLaRA's protocol** (sampled, labelled so): 20 seeded candidates (the target + negatives the user
  never interacted with) listed in the prompt; greedy free generation; HR@1 = the answer is the
  target's title, ValidRatio = it is one of the candidates' titles. LLaRA reports HR@1 0.4526 on
  MovieLens 100K.

Run directory ``out_dir``: ``stage1/`` (an :mod:`jaxrec.models.run_dir` run), ``stage2/`` (``run.json``,
``adapter/`` or ``model/`` on top of the merged stage-1 model, ``projector.safetensors``,
``item_table.npy``), ``item_trie.npz`` (the title constraint index), ``results.json``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
from flax import nnx

from jaxrec import seqrec
from jaxrec.atomic import write_json
from jaxrec.data.dataset import Dataset
from jaxrec.data.pipeline import token_lengths
from jaxrec.data.source import DataConfig, SyntheticData, load_dataset
from jaxrec.data.splits import LeaveOneOut, leave_one_out
from jaxrec.data.tasks import Example, rsllm_candidate_examples, rsllm_eval_examples, rsllm_train_examples, sliding_rows
from jaxrec.data.tasks.domains import DomainName
from jaxrec.data.tasks.item_text import titles as item_titles
from jaxrec.decode.trie import content_key, run_trie, text_trie
from jaxrec.decode.driver import padded_length
from jaxrec.errors import DataError
from jaxrec.eval import evaluators
from jaxrec.eval.evaluators import constrained_generation, free_generation, grounding
from jaxrec.eval.metrics import random_ranking_metrics
from jaxrec.ground.embed import embed_prompt_texts
from jaxrec.models import projector as proj
from jaxrec.models.injected_run import ProjectorConfig, load_stage2, new_projector, save_stage2
from jaxrec.models.item_prompts import PlaceholderRows, TaggedFeatures, model_inputs
from jaxrec.models.lora import LoraConfig
from jaxrec.models.prompts import bos_id
from jaxrec.models.run_dir import make_tokenizer, save_run, start_run
from jaxrec.models.section import ModelSection, make_model
from jaxrec.train.config import TrainConfig
from jaxrec.train.contrastive import ContrastiveConfig, lm_contrastive_loss
from jaxrec.train.finetune import finetune, train_rows

log = logging.getLogger("jaxrec.methods.rsllm")

LLARA_PUBLISHED_HR1 = 0.4526  # LLaRA (Liao et al., 2024), MovieLens 100K, 20 candidates


@dataclasses.dataclass
class PromptConfig:
    """``train_candidates``: None trains on next-title prompts; N trains on LLaRA-style prompts that list
    N seeded candidates (as LLaRA trains; needed for a model with no prior to follow the candidate
    protocol). Evaluation always runs both prompt kinds."""

    domain: DomainName = "movies"
    max_history: int = 10
    train_candidates: int | None = None
    seed: int = 0


@dataclasses.dataclass
class IdModelConfig:
    """Where the item ID embeddings come from: a SASRec run directory (trained here when it has no
    ``item_embeddings.npy``, with ``model``/``train``), frozen unless ``trainable``."""

    run_dir: str = "runs/sasrec"
    trainable: bool = False
    model: seqrec.ModelConfig = dataclasses.field(default_factory=seqrec.ModelConfig)
    train: seqrec.TrainConfig = dataclasses.field(default_factory=seqrec.TrainConfig)


@dataclasses.dataclass
class GenerationConfig:
    num_beams: int = 10
    length_penalty: float = 1.0
    batch_size: int = 32


@dataclasses.dataclass
class EvalConfig:
    ks: list[int] = dataclasses.field(default_factory=lambda: [1, 5, 10])
    users: int | None = None  # seeded sample of evaluated users per part (None: all)
    seed: int = 0
    constrained: bool = True
    free: bool = True
    llara: bool = True  # LLaRA's sampled candidate protocol (test users)
    exclude_history: bool = False  # grounding ranks without the prompt's history items (S3-Rec's protocol)
    num_candidates: int = 20


@dataclasses.dataclass
class Config:
    method: str = "rsllm"
    out_dir: str = "runs/rsllm"
    data: DataConfig = dataclasses.field(default_factory=lambda: DataConfig(synthetic=SyntheticData()))
    prompts: PromptConfig = dataclasses.field(default_factory=PromptConfig)
    id_model: IdModelConfig = dataclasses.field(default_factory=IdModelConfig)
    projector: ProjectorConfig = dataclasses.field(default_factory=ProjectorConfig)
    model: ModelSection = dataclasses.field(default_factory=ModelSection)
    stage1: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    stage2: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    contrastive: ContrastiveConfig = dataclasses.field(default_factory=ContrastiveConfig)
    generation: GenerationConfig = dataclasses.field(default_factory=GenerationConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)

    def __post_init__(self):
        if self.stage2.data.packing:
            raise ValueError("stage2.data.packing is not supported (the contrastive terms need one example per row)")


# ----------------------------------------------------------------------------- prompts


def train_examples(config: Config, ds: Dataset, split: LeaveOneOut, stage: Literal[1, 2]) -> list[Example]:
    """Every position of every training sequence: next-title prompts, or candidate prompts (stage 1
    text only, stage 2 with placeholders)."""
    p = config.prompts
    if p.train_candidates is None:
        return rsllm_train_examples(ds, split, stage, p.domain, p.max_history)
    return rsllm_candidate_examples(ds, sliding_rows(split.train, p.max_history), p.domain, p.max_history,
                                    p.train_candidates, p.seed, with_placeholders=stage == 2)


def max_placeholders(prompts: PromptConfig) -> int:
    """The most placeholders a training prompt carries (history, plus candidates when listed)."""
    return prompts.max_history + (prompts.train_candidates or 0)


# ----------------------------------------------------------------------------- loss


# ----------------------------------------------------------------------------- stages


def stage_lora(lora: LoraConfig, stage: Literal[1, 2], table_trainable: bool) -> LoraConfig:
    """What a stage trains in ``lora`` mode: stage 1 the adapters (+ the config's extras); stage 2 also
    the projector, and the ID table when ``table_trainable``. (``full`` mode trains every
    ``nnx.Param``: the LLM, in stage 2 the projector too; a frozen ID table is no Param.)"""
    if lora.mode == "full" or stage == 1:
        return lora
    extra = ("projector",) + (("item_table",) if table_trainable else ())
    return dataclasses.replace(lora, trainable=tuple(lora.trainable) + extra)


def with_log_dir(train: TrainConfig, log_dir: Path) -> TrainConfig:
    return train if train.log_dir else dataclasses.replace(train, log_dir=str(log_dir))


def fit_stage2(model, tokenizer, examples: Sequence[Example], train: TrainConfig, loss_fn) -> tuple[nnx.Module, dict]:
    """Train the injected model on unified-prompt examples; returns (trained model, fit summary)."""
    encoder = PlaceholderRows(tokenizer)  # rows are tokenized lazily, per record, by the input pipeline
    lengths = token_lengths(encoder, examples).sum(axis=1, dtype=np.int32)
    truncated = int(np.sum(lengths + 2 > train.data.seq_len))
    if truncated:
        log.warning("stage2: %d of %d training examples are longer than seq_len=%d and are cut", truncated,
                        len(examples), train.data.seq_len)
    features = TaggedFeatures(train.data.seq_len, tokenizer.eos_token_id, bos_id(tokenizer),
                              train.data.train_on_inputs)
    model, summary = train_rows(model, examples, features, train, loss_fn, encoder=encoder, lengths=lengths,
                                pad_id=tokenizer.pad_token_id)
    return model, {**summary, "truncated_examples": truncated}


def item_id_embeddings(config: Config, ds: Dataset, split: LeaveOneOut) -> np.ndarray:
    """float32 [N, d_id] SASRec item embeddings at unit RMS (SASRec is trained first when needed)."""
    path = Path(config.id_model.run_dir) / "item_embeddings.npy"
    if not path.is_file():
        m = config.id_model
        seqrec.fit(seqrec.Config(out_dir=m.run_dir, data=config.data, model=m.model, train=m.train), ds, split)
    table = np.load(path)
    if table.ndim != 2 or table.shape[0] != ds.num_items:
        raise DataError(f"{path}: item embeddings of shape {table.shape}, expected [{ds.num_items}, d] for "
                        f"{config.data.describe()} (a SASRec run of another dataset?)")
    return proj.unit_rms(table)


# ----------------------------------------------------------------------------- train


def train(config: Config) -> dict:
    """SASRec embeddings (loaded or trained), stage 1 (text), stage 2 (text + ID); writes the run dir."""
    from jaxrec.models.lora import remove_lora

    ds = load_dataset(config.data)
    split = leave_one_out(ds)
    p, out = config.prompts, Path(config.out_dir)
    table = item_id_embeddings(config, ds, split)
    text_examples = train_examples(config, ds, split, 1)
    unified_examples = train_examples(config, ds, split, 2)

    stage1_dir = out / "stage1"
    stage1_dir.mkdir(parents=True, exist_ok=True)
    titles = item_titles(ds)
    tokenizer = make_tokenizer(config.model, lambda: [e.prompt + e.response for e in text_examples] + titles,
                                   stage1_dir)
    model = make_model(config.model, tokenizer)
    start_run(stage1_dir, config.model, model, tokenizer)
    train1 = with_log_dir(config.stage1, out / "logs" / "stage1")
    model, summary1 = finetune(model, tokenizer, text_examples, train1)
    save_run(stage1_dir, config.model, model, train1.lora, config, summary1)
    result = {"method": "rsllm", "data": config.data.describe(), "model": config.model.describe(),
              "train_examples": len(text_examples), "stage1": summary1, "out_dir": str(out)}
    if summary1["stopped"] == "sigterm":  # preempted: do not start stage 2
        return result

    remove_lora(model, merge=True)
    projector = new_projector(config.projector, model, table.shape[1], proj.token_embedding_rms(model))
    proj.inject(model, projector, table, trainable_table=config.id_model.trainable)
    train2 = with_log_dir(config.stage2, out / "logs" / "stage2")
    train2 = dataclasses.replace(train2, lora=stage_lora(train2.lora, 2, config.id_model.trainable))
    model, summary2 = fit_stage2(model, tokenizer, unified_examples, train2,
                                 lm_contrastive_loss(config.contrastive, max_placeholders(p)))
    stage2_dir = out / "stage2"
    stage2_dir.mkdir(parents=True, exist_ok=True)
    save_stage2(stage2_dir, model, config.stage2.lora, config, summary2)
    run_trie(out, lambda: text_trie(tokenizer, titles, model.config.vocab_size), content_key(tokenizer, titles),
             rebuild=True)
    return {**result, "stage2": summary2}


# ----------------------------------------------------------------------------- evaluate


def sample_examples(examples: list[Example], n: int | None, seed: int) -> list[Example]:
    if n is None or n < 0 or n >= len(examples):
        return examples
    keep = np.sort(np.random.default_rng(seed).choice(len(examples), n, replace=False))
    return [examples[i] for i in keep]


def clean(text: str) -> str:
    return text.strip().strip('"').strip()


def llara_metrics(answers: list[str], examples: list[Example], titles: list[str]) -> dict:
    """LLaRA's HR@1 (answer = the target's title) and ValidRatio (answer = a candidate's title)."""
    hits = [a == titles[e.target] for a, e in zip(answers, examples)]
    valid = [a in {titles[c] for c in e.meta["candidates"]} for a, e in zip(answers, examples)]
    return {"HR@1": float(np.mean(hits)), "ValidRatio": float(np.mean(valid)), "users": len(examples)}


def evaluate(config: Config) -> dict:
    """Full-catalog (constrained / free + grounding) and LLaRA-protocol metrics; writes results.json."""
    start = time.perf_counter()
    ds = load_dataset(config.data)
    split = leave_one_out(ds)
    p, g, e, ks = config.prompts, config.generation, config.eval, config.eval.ks
    parts = {part: sample_examples(rsllm_eval_examples(ds, split, part, 2, p.domain, p.max_history), e.users, e.seed)
             for part in ("valid", "test")}
    model, tokenizer = load_stage2(config.out_dir, config.model, config.projector)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    titles = item_titles(ds)
    trie = run_trie(config.out_dir, lambda: text_trie(tokenizer, titles, model.config.vocab_size),
                    content_key(tokenizer, titles))
    prompts = {part: model_inputs(tokenizer, ex) for part, ex in parts.items()}
    targets = {part: np.asarray([x.target for x in ex], np.int32) for part, ex in parts.items()}
    beams = dict(length_penalty=g.length_penalty, batch_size=g.batch_size,
                 length=padded_length(prompts["valid"] + prompts["test"]))
    result = {"method": "rsllm", "data": config.data.describe(), "model": config.model.describe(),
              "catalog_items": ds.num_items, "examples": {k: len(v) for k, v in parts.items()},
              "num_beams": g.num_beams, "random": random_ranking_metrics(ds.num_items, ks),
              "protocol": {"constrained": evaluators.protocol("constrained", ds.num_items, num_beams=g.num_beams),
                           "free": evaluators.protocol("grounding", ds.num_items, exclude_history=e.exclude_history)}}
    seconds = {}

    if e.constrained:
        t0 = time.perf_counter()
        out = {"list_length": g.num_beams}
        for part in parts:
            out[part] = constrained_generation(model, prompts[part], targets[part], trie, ks, num_beams=g.num_beams,
                                               eos_id=eos, pad_id=pad, desc=f"constrained {part}", **beams)[0]
        result["constrained"] = out
        seconds["constrained"] = round(time.perf_counter() - t0, 2)

    if e.free:
        t0 = time.perf_counter()
        texts, exact = {}, {}
        for part in parts:
            generated, exact[part] = free_generation(model, tokenizer, prompts[part], trie, num_beams=g.num_beams,
                                                     max_new_tokens=trie.max_length + 1, desc=f"free {part}", **beams)
            texts[part] = [clean(t) for t in generated]
        embeddings = embed_prompt_texts(model, tokenizer, {"items": titles, **texts}, g.batch_size)
        items_emb = embeddings.pop("items")
        free = {"ground_model": "fine_tuned", "exact_title_rate": exact, **grounding(embeddings, items_emb, targets, ks,
                          {part: evaluators.padded_ids([x.meta["history"] for x in ex]) for part, ex in parts.items()}
                          if e.exclude_history else None)}
        result["free"] = free
        result["samples"] = [{"target": titles[t], "free": x} for t, x in zip(targets["test"][:3], texts["test"][:3])]
        seconds["free_and_grounding"] = round(time.perf_counter() - t0, 2)

    if e.llara:
        t0 = time.perf_counter()
        examples = sample_examples(rsllm_eval_examples(ds, split, "test", 2, p.domain, p.max_history,
                                                       candidates=e.num_candidates, seed=e.seed), e.users, e.seed)
        answers, _ = free_generation(model, tokenizer, model_inputs(tokenizer, examples), trie, num_beams=1,
                                     max_new_tokens=trie.max_length + 1, length_penalty=g.length_penalty,
                                     batch_size=g.batch_size, desc="LLaRA candidates")
        answers = [clean(t) for t in answers]
        result["llara"] = {"protocol": examples[0].meta["protocol"] if examples else None,
                           "test": llara_metrics(answers, examples, titles),
                           "random_HR@1": 1.0 / e.num_candidates,
                           "published_LLaRA_HR@1_ml100k": LLARA_PUBLISHED_HR1}
        seconds["llara"] = round(time.perf_counter() - t0, 2)

    result["seconds"] = {**seconds, "total": round(time.perf_counter() - start, 2)}
    write_json(Path(config.out_dir) / "results.json", result)
    return result
