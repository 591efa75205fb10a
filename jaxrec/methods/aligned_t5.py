"""Aligned FLAN-T5 (Cao et al., NAACL Findings 2024): multi-task fine-tuning of (FLAN-)T5 on
natural-language recommendation samples plus auxiliary tasks that carry recommender knowledge.

Recipe (every step configured by a section of :class:`Config`):

1. **Item keys** (``ids:`` and ``tasks.id_mode``): every item is written ``key: title``; the key is a
   seeded random integer (default; no position leakage as with P5's sequential ids) or a semantic
   id from an LC-Rec index file keyed by this dataset's item ids (its tokens are added to the
   vocabulary). The keys are saved with the run (``item_keys.json``); evaluation builds its trie
   over them.
2. **Tasks** (:mod:`jaxrec.data.tasks.aligned_t5`): retrieval, ranking, rating, masked item
   modelling (MIM), BPR in language and masked language modelling over item text (MLM), each
   switchable (``tasks.tasks``) and scaled (``tasks.ratios``), mixed and shuffled.
   Key answers (retrieval, ranking, BPR) are tokenized as the key appears inside prompts: with a
   leading space for from-scratch byte-level BPE tokenizers (``ids.leading_space``, auto), so the
   model reads and writes an item with the same tokens.
3. **Model**: a local (FLAN-)T5 directory (``model.pretrained``) or a small T5 trained from scratch
   with a byte-level BPE tokenizer trained on the samples and item text; T5's sentinels
   ``<extra_id_k>`` (MIM/MLM) are added to a tokenizer that lacks them. Full fine-tuning or LoRA
   through the shared engine, loss on the response + EOS; the decoder is padded to ``target_len``.
   *Extension beyond the paper*: a decoder-only LLM (``model.pretrained: smollm2-135m``, a GGUF or an
   HF Llama/Qwen2/Mistral directory, or ``model.arch: llama`` from scratch) reads ``[BOS] prompt``
   and writes the answer after it in one sequence (loss on the answer + EOS); the same task mixture
   and the same evaluation (its prompt cache is shared by the candidates exactly as T5's encoder is).
4. **Evaluation** (leave-one-out users, ``eval.parts``):

   * *retrieval* over the full catalog: beam search (``eval.num_beams``) constrained by a trie over
     every item's key; HR/NDCG@K from the ranked beam items. Items beyond the beams are ranked as
     missing, so K <= num_beams. Popularity on the same users beside it.
   * *ranking*, a **sampled protocol** (1 positive + 99 seeded negatives the user never
     interacted with, labelled in the JSON): every candidate is scored by the model's sequence
     log-likelihood of its key + EOS given the ranking prompt (no length normalisation: the
     probability of answering exactly that key); rank by the canonical tie rule. Popularity on the
     same candidates beside it.
   * *rating*: the log-likelihood of each answer ``"1"`` ... ``"5"`` (+ EOS); the prediction is the
     expectation over their softmax (``eval.rating_prediction: expectation``; ``argmax`` = what
     decoding constrained to the five answers returns; both reported); RMSE/MAE, and the training
     mean rating as a baseline.

   Scoring candidates uses the decoding protocol: the prompt is encoded once per user and the
   candidates are fed teacher-forced as beams (T5: encoder output and cross-attention K/V shared;
   decoder-only: the prompt's K/V cache shared).

Run directory: ``item_keys.json``, ``item_trie.npz`` (the keys' constraint index) + the files of
:mod:`jaxrec.models.run_dir`; ``results.json``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from jaxrec.atomic import atomic_file, write_json
from jaxrec.data.dataset import Dataset
from jaxrec.data.splits import LeaveOneOut, leave_one_out
from jaxrec.data.tasks import AlignedT5TaskConfig, Example, aligned_t5_eval_examples, aligned_t5_train_examples
from jaxrec.data.tasks import item_text
from jaxrec.data.tasks.span_corruption import sentinel
from jaxrec.errors import ConfigError, DataError
from jaxrec.decode.trie import ItemTrie, content_key, run_trie, text_trie
from jaxrec.eval import evaluators
from jaxrec.eval.ranking import item_counts
from jaxrec.eval.rating import rating_metrics, ratings_from_log_likelihoods
from jaxrec.data.source import DataConfig, SyntheticData, load_dataset
from jaxrec.data.pipeline import TokenDataConfig
from jaxrec.models.lora import LoraConfig
from jaxrec.train.config import OptimConfig, TrainConfig
from jaxrec.decode.candidates import candidate_log_likelihoods, token_matrix
from jaxrec.eval.sample import eval_subset
from jaxrec.models.prompts import encode, prompt_ids
from jaxrec.models.section import ModelSection, make_model
from jaxrec.models.run_dir import grow_vocab, load_run, make_tokenizer, save_run, start_run
from jaxrec.train.finetune import finetune

KEYS_FILE = "item_keys.json"
KEY_TASKS = ("retrieval", "ranking", "bpr")  # tasks whose answer is an item key
NUM_SENTINELS = 100  # T5's <extra_id_0> ... <extra_id_99>
RATING_VALUES = (1, 2, 3, 4, 5)
log = logging.getLogger("jaxrec.methods.aligned_t5")


@dataclasses.dataclass
class IdSection:
    """Item keys. ``seed``: of the random integer ids; ``index``: for ``tasks.id_mode: semantic``, an
    LC-Rec index json keyed by this dataset's item ids (e.g. an LC-Rec run's ``index.json``);
    ``leading_space``: tokenize key answers as ``" " + key`` (None: yes for from-scratch byte-level
    BPE tokenizers in random-id mode, no otherwise)."""

    seed: int = 0
    index: str | None = None
    leading_space: bool | None = None


@dataclasses.dataclass
class EvalConfig:
    tasks: list[Literal["retrieval", "ranking", "rating"]] = dataclasses.field(
        default_factory=lambda: ["retrieval", "ranking", "rating"])
    ks: list[int] = dataclasses.field(default_factory=lambda: [1, 5, 10, 20])
    num_beams: int = 20
    parts: list[Literal["valid", "test"]] = dataclasses.field(default_factory=lambda: ["test"])
    users: int | None = None  # a seeded sample of the evaluated users; None: all
    batch_size: int = 16  # prompts per beam search / scoring call
    rating_prediction: Literal["expectation", "argmax"] = "expectation"
    seed: int = 0
    progress: bool = True

    def __post_init__(self):
        if not self.tasks or not self.parts:
            raise ValueError("eval.tasks and eval.parts must each name at least one entry")
        if "retrieval" in self.tasks and max(self.ks) > self.num_beams:
            raise ValueError(f"eval.ks {self.ks}: retrieval ranks only the {self.num_beams} beams; "
                             f"use cut-offs <= eval.num_beams")


def _default_train() -> TrainConfig:
    return TrainConfig(batch_size=32, steps=1000, log_every=50, lora=LoraConfig(mode="full"),
                       optim=OptimConfig(learning_rate=1e-3, warmup_steps=50, decay="cosine", weight_decay=0.01),
                       data=TokenDataConfig(seq_len=512, bucket_lengths=(128, 256)))


@dataclasses.dataclass
class Config:
    method: str = "aligned_t5"
    out_dir: str = "runs/aligned_t5"
    data: DataConfig = dataclasses.field(default_factory=lambda: DataConfig(synthetic=SyntheticData()))
    tasks: AlignedT5TaskConfig = dataclasses.field(default_factory=AlignedT5TaskConfig)
    task_seed: int = 0
    ids: IdSection = dataclasses.field(default_factory=IdSection)
    model: ModelSection = dataclasses.field(default_factory=lambda: ModelSection(
        arch="t5", vocab_size=2048, hidden_size=128, intermediate_size=256, num_layers=2, num_heads=4))
    target_len: int = 64  # T5: decoder tokens per training row (response + EOS; longer ones are cut)
    train: TrainConfig = dataclasses.field(default_factory=_default_train)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)


# ----------------------------------------------------------------------------- item keys and samples


def make_item_keys(config: Config, ds: Dataset) -> list[str]:
    """Per item its key text (random integer or semantic id), as configured."""
    if config.tasks.id_mode == "random":
        return item_text.item_keys(ds, "random", seed=config.ids.seed)
    if not config.ids.index:
        raise ConfigError("tasks.id_mode=semantic needs ids.index (an LC-Rec index json keyed by item id)")
    from jaxrec.index.index_io import codes_to_tokens, read_index

    codes = read_index(config.ids.index, ds.num_items)
    return item_text.item_keys(ds, "semantic", dict(enumerate(codes_to_tokens(codes))))


def save_item_keys(out_dir: Path, keys: Sequence[str], config: Config, space: bool) -> None:
    with atomic_file(out_dir / KEYS_FILE) as f:
        json.dump({"id_mode": config.tasks.id_mode, "leading_space": space, "keys": list(keys)}, f)


def load_item_keys(out_dir: str | Path, ds: Dataset) -> tuple[list[str], bool]:
    """(keys per item, leading_space) saved by :func:`train`."""
    path = Path(out_dir) / KEYS_FILE
    if not path.is_file():
        raise ConfigError(f"{path} not found; train this config first (jaxrec train --config ...)")
    saved = json.loads(path.read_text())
    if len(saved["keys"]) != ds.num_items:
        raise DataError(f"{path}: {len(saved['keys'])} item keys, but the dataset has {ds.num_items} items; "
                        f"was the run trained on other data?")
    return saved["keys"], bool(saved["leading_space"])


def leading_space(config: Config) -> bool:
    """Whether key answers are tokenized with a leading space (see :class:`IdSection`)."""
    if config.ids.leading_space is not None:
        return config.ids.leading_space
    return config.model.pretrained is None and config.tasks.id_mode == "random"


def answer_text(key: str, space: bool) -> str:
    """How a key answer is tokenized."""
    return " " + key if space else key


def training_examples(config: Config, ds: Dataset, split: LeaveOneOut, keys: Sequence[str],
                      space: bool) -> list[Example]:
    """The mixed, shuffled samples of the configured tasks; key answers in :func:`answer_text` form."""
    examples = aligned_t5_train_examples(ds, split, keys, config.tasks, config.task_seed)
    if not space:
        return examples
    return [dataclasses.replace(e, response=answer_text(e.response, True)) if e.task in KEY_TASKS else e
            for e in examples]


def tokenizer_texts(ds: Dataset, examples: Sequence[Example], limit: int = 20000) -> list[str]:
    """From-scratch BPE training text: item titles/descriptions and (up to ``limit``) samples."""
    texts = item_text.titles(ds) + [d for d in item_text.descriptions(ds) if d]
    return texts + [e.prompt + " " + e.response for e in examples[:limit]]


def added_tokens(config: Config, keys: Sequence[str]) -> list[str]:
    """Tokens added to the vocabulary: T5's sentinels (a pretrained T5 has them) and semantic-id tokens."""
    from jaxrec.index.index_io import index_vocabulary, read_index

    tokens = [sentinel(k) for k in range(NUM_SENTINELS)]
    if config.tasks.id_mode == "semantic":
        tokens += index_vocabulary(read_index(config.ids.index, len(keys)))
    return tokens


# ----------------------------------------------------------------------------- training


def train(config: Config) -> dict:
    """Build keys and samples, tokenizer and model; multi-task fine-tune; write the run directory."""
    from jaxrec.models.tokenizer import add_tokens, save_tokenizer

    start = time.perf_counter()
    ds = load_dataset(config.data)
    split = leave_one_out(ds)
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = make_item_keys(config, ds)
    space = leading_space(config)
    examples = training_examples(config, ds, split, keys, space)
    tokenizer = make_tokenizer(config.model, lambda: tokenizer_texts(ds, examples), out_dir)
    add_tokens(tokenizer, added_tokens(config, keys))
    save_tokenizer(tokenizer, out_dir / "tokenizer")
    model = make_model(config.model, tokenizer)
    grow_vocab(model, tokenizer, out_dir, seed=config.model.seed)
    start_run(out_dir, config.model, model, tokenizer)
    save_item_keys(out_dir, keys, config, space)
    train_cfg = dataclasses.replace(config.train, log_dir=config.train.log_dir or str(out_dir / "logs"))
    if not examples:
        raise ConfigError("aligned_t5: no training examples (every task switched off or skipped)")
    model, summary = finetune(model, tokenizer, examples, train_cfg, target_len=config.target_len)
    save_run(out_dir, config.model, model, train_cfg.lora, config, summary)
    answers = [answer_text(k, space) for k in keys]
    run_trie(out_dir, lambda: text_trie(tokenizer, answers, model.config.vocab_size), content_key(tokenizer, answers),
             rebuild=True)
    return {"method": "aligned_t5", "data": config.data.describe(), "model": config.model.describe(),
            "id_mode": config.tasks.id_mode, "train_examples": dict(Counter(e.task for e in examples)), **summary,
            "seconds_total": round(time.perf_counter() - start, 2), "out_dir": str(out_dir)}


def _bar(e: EvalConfig, name: str) -> str | None:
    """A progress bar's name when ``eval.progress`` is on."""
    return name if e.progress else None


# ----------------------------------------------------------------------------- evaluate


@dataclasses.dataclass
class _EvalContext:
    model: object
    tokenizer: object
    keys: list[str]
    space: bool
    counts: np.ndarray  # training occurrences per item (popularity)
    trie: ItemTrie  # the item keys' constraint index
    split: LeaveOneOut
    ds: Dataset


def _eval_retrieval(c: _EvalContext, config: Config, part: str, chosen: np.ndarray) -> dict:
    e, tok = config.eval, c.tokenizer
    examples = aligned_t5_eval_examples("retrieval", c.ds, c.split, c.keys, part, config.tasks, config.task_seed)
    examples = [examples[i] for i in chosen.tolist()]
    targets = np.asarray([x.target for x in examples], np.int32)
    prompts = prompt_ids(tok, c.model, [x.prompt for x in examples])
    metrics = evaluators.constrained_generation(c.model, prompts, targets, c.trie, e.ks, num_beams=e.num_beams,
                                                eos_id=tok.eos_token_id, pad_id=tok.pad_token_id,
                                                batch_size=e.batch_size, desc=_bar(e, f"retrieval {part}"))[0]
    return {"protocol": evaluators.protocol("constrained", c.ds.num_items, num_beams=e.num_beams), **metrics,
            "popularity": evaluators.popularity(c.counts, targets, e.ks)}


def _eval_ranking(c: _EvalContext, config: Config, part: str, chosen: np.ndarray) -> dict:
    e, tok = config.eval, c.tokenizer
    examples = aligned_t5_eval_examples("ranking", c.ds, c.split, c.keys, part, config.tasks, config.task_seed)
    examples = [examples[i] for i in chosen.tolist()]
    targets = np.asarray([x.target for x in examples], np.int64)
    candidates = np.asarray([x.meta["candidates"] for x in examples], np.int64)  # [P, C]
    keys, lengths = token_matrix(encode(tok, [answer_text(k, c.space) for k in c.keys]), tok.eos_token_id,
                                 tok.pad_token_id)
    prompts = prompt_ids(tok, c.model, [x.prompt for x in examples])
    ks = [k for k in e.ks if k <= candidates.shape[1]]
    return {"protocol": examples[0].meta["protocol"] if examples else "sampled",
            "scoring": "sequence log-likelihood of each candidate's key + EOS",
            **evaluators.candidate_ranking(c.model, prompts, candidates, keys, lengths, targets, ks,
                                           pad_id=tok.pad_token_id, batch_size=e.batch_size,
                                           desc=_bar(e, f"ranking {part}")),
            "popularity": evaluators.popularity_among(c.counts, candidates, targets, ks)}


def _eval_rating(c: _EvalContext, config: Config, part: str, chosen: np.ndarray) -> dict:
    e, tok = config.eval, c.tokenizer
    if c.ds.ratings is None:
        log.warning("rating evaluation skipped: dataset %r has no ratings", c.ds.name)
        return {"skipped": f"dataset {c.ds.name!r} has no ratings"}
    examples = aligned_t5_eval_examples("rating", c.ds, c.split, c.keys, part, config.tasks, config.task_seed)
    examples = [examples[i] for i in chosen.tolist()]
    truth = np.asarray([x.meta["rating"] for x in examples], np.float64)
    answers, lengths = token_matrix(encode(tok, [str(v) for v in RATING_VALUES]), tok.eos_token_id,
                                    tok.pad_token_id)
    n = len(examples)
    prompts = prompt_ids(tok, c.model, [x.prompt for x in examples])
    scores = candidate_log_likelihoods(c.model, prompts, np.broadcast_to(answers, (n, *answers.shape)),
                                       np.broadcast_to(lengths, (n, len(lengths))), tok.pad_token_id, e.batch_size,
                                       _bar(e, f"rating {part}"))
    values = np.asarray(RATING_VALUES, np.float64)
    train_ratings = np.concatenate([c.ds.user_ratings(u)[:len(s)] for u, s in enumerate(c.split.train)])
    out = {"prediction": e.rating_prediction,
           **rating_metrics(ratings_from_log_likelihoods(scores, values, e.rating_prediction), truth)}
    other = "argmax" if e.rating_prediction == "expectation" else "expectation"
    out[other] = rating_metrics(ratings_from_log_likelihoods(scores, values, other), truth)
    out["train_mean_baseline"] = rating_metrics(np.full(n, train_ratings.mean()), truth)
    return out


EVALUATORS = {"retrieval": _eval_retrieval, "ranking": _eval_ranking, "rating": _eval_rating}


def evaluate(config: Config) -> dict:
    """Retrieval (full catalog), ranking (sampled) and rating on the configured parts; writes results.json."""
    ds = load_dataset(config.data)
    return evaluate_run(config, ds, leave_one_out(ds))


def evaluate_run(config: Config, ds: Dataset, split: LeaveOneOut) -> dict:
    """:func:`evaluate` on an already loaded dataset and split."""

    start = time.perf_counter()
    e = config.eval
    keys, space = load_item_keys(config.out_dir, ds)
    model, tokenizer = load_run(config.out_dir, "fine_tuned", config.model.dtype, config.model)
    answers = [answer_text(k, space) for k in keys]
    trie = run_trie(config.out_dir, lambda: text_trie(tokenizer, answers, model.config.vocab_size),
                    content_key(tokenizer, answers))
    context = _EvalContext(model, tokenizer, keys, space, item_counts(split.train, ds.num_items), trie, split, ds)
    result = {"method": "aligned_t5", "data": config.data.describe(), "model": config.model.describe(),
              "catalog_items": ds.num_items, "id_mode": config.tasks.id_mode}
    for part in e.parts:
        users = len(split.test_users if part == "test" else split.valid_users)
        chosen = eval_subset(users, e.users, e.seed)
        out = {"users": int(len(chosen))}
        for task in e.tasks:
            t0 = time.perf_counter()
            out[task] = {**EVALUATORS[task](context, config, part, chosen), "seconds": round(time.perf_counter() - t0, 2)}
        result[part] = out
    result["seconds"] = round(time.perf_counter() - start, 2)
    write_json(Path(config.out_dir) / "results.json", result)
    return result
