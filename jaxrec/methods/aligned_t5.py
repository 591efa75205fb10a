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

Run directory: ``item_keys.json`` + the files of :mod:`jaxrec.methods.llm`; ``results.json``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Iterator, Literal, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxrec.atomic import atomic_file, write_json
from jaxrec.data.dataset import Dataset
from jaxrec.data.splits import LeaveOneOut, leave_one_out
from jaxrec.data.tasks import AlignedT5TaskConfig, Example, aligned_t5_eval_examples, aligned_t5_train_examples
from jaxrec.data.tasks import item_text
from jaxrec.data.tasks.span_corruption import sentinel
from jaxrec.errors import ConfigError, DataError
from jaxrec.eval.metrics import list_metrics, metrics_from_ranks
from jaxrec.eval.rating import rating_metrics, ratings_from_log_likelihoods
from jaxrec.methods import llm
from jaxrec.data.source import DataConfig, SyntheticData, load_dataset
from jaxrec.data.pipeline import TokenDataConfig
from jaxrec.models.lora import LoraConfig
from jaxrec.train.config import OptimConfig, TrainConfig

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
    model: llm.ModelSection = dataclasses.field(default_factory=lambda: llm.ModelSection(
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
    tokenizer = llm.make_tokenizer(config.model, lambda: tokenizer_texts(ds, examples), out_dir)
    add_tokens(tokenizer, added_tokens(config, keys))
    save_tokenizer(tokenizer, out_dir / "tokenizer")
    model = llm.build_model(config.model, tokenizer)
    llm.grow_vocab(model, tokenizer, out_dir, seed=config.model.seed)
    llm.start_run(out_dir, config.model, model, tokenizer)
    save_item_keys(out_dir, keys, config, space)
    train_cfg = dataclasses.replace(config.train, log_dir=config.train.log_dir or str(out_dir / "logs"))
    if not examples:
        raise ConfigError("aligned_t5: no training examples (every task switched off or skipped)")
    model, summary = llm.finetune(model, tokenizer, examples, train_cfg, target_len=config.target_len)
    llm.save_run(out_dir, config.model, model, train_cfg, config, summary)
    return {"method": "aligned_t5", "data": config.data.describe(), "model": config.model.describe(),
            "id_mode": config.tasks.id_mode, "train_examples": dict(Counter(e.task for e in examples)), **summary,
            "seconds_total": round(time.perf_counter() - start, 2), "out_dir": str(out_dir)}


# ----------------------------------------------------------------------------- scoring and ranking


def _candidate_log_likelihoods(graphdef, params, input_ids, attention_mask, candidates, lengths):
    """[B,C] sum of log p(token) over each candidate's first ``lengths`` tokens [B,C], teacher-forced:
    the prompt [B,T] is prefilled once with C beams, candidates [B,C,S] are fed as the beams."""
    model = nnx.merge(graphdef, params)
    steps = candidates.shape[2]
    state, logits0 = model.prefill(input_ids, attention_mask, num_beams=candidates.shape[1], max_new_tokens=steps)
    first = jax.nn.log_softmax(logits0.astype(jnp.float32), axis=-1)
    total = jnp.take_along_axis(first, candidates[:, :, 0], axis=1)
    for s in range(steps - 1):
        logits, state = model.decode_step(candidates[:, :, s], state, jnp.asarray(s, jnp.int32))
        log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        token = jnp.take_along_axis(log_probs, candidates[:, :, s + 1, None], axis=-1)[..., 0]
        total = total + jnp.where(s + 1 < lengths, token, 0.0)
    return total


_candidate_log_likelihoods_jit = jax.jit(_candidate_log_likelihoods, static_argnames="graphdef")


def token_matrix(seqs: Sequence[Sequence[int]], eos: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """(tokens int32 [N, S]: each sequence + EOS, padded; lengths int32 [N] including EOS)."""
    lengths = np.asarray([len(s) + 1 for s in seqs], np.int32)
    tokens = np.full((len(seqs), int(lengths.max())), pad, np.int32)
    for row, seq in enumerate(seqs):
        tokens[row, :len(seq) + 1] = [*seq, eos]
    return tokens, lengths


def _batches(total: int, batch_size: int, desc: str, progress: bool) -> Iterator[tuple[np.ndarray, int]]:
    """Row indices of fixed-size batches (the last one filled with its last row) and the real count."""
    from tqdm.auto import tqdm

    with tqdm(total=total, desc=desc, unit="user", leave=False, disable=not progress) as bar:
        for start in range(0, total, batch_size):
            idx = np.minimum(np.arange(start, start + batch_size), total - 1)
            real = min(batch_size, total - start)
            yield idx, real
            bar.update(real)


def candidate_log_likelihoods(model, prompts: Sequence[Sequence[int]], candidates: np.ndarray, lengths: np.ndarray,
                              pad_id: int, batch_size: int, desc: str = "scoring", progress: bool = False) -> np.ndarray:
    """float32 [P, C]: log-likelihood of every candidate answer (tokens [P,C,S] incl. EOS, ``lengths``
    [P,C]) given its prompt (token ids, EOS-terminated for T5). One compilation per shape."""
    graphdef, params = nnx.split(model)
    length = llm.padded_length(prompts)
    out = []
    for idx, real in _batches(len(prompts), batch_size, desc, progress):
        ids, mask = llm.left_pad([prompts[i] for i in idx], length, pad_id)
        scores = _candidate_log_likelihoods_jit(graphdef, params, ids, mask, jnp.asarray(candidates[idx]),
                                                jnp.asarray(lengths[idx]))
        out.append(np.asarray(scores)[:real])
    return np.concatenate(out)


def ranks_among_candidates(scores: np.ndarray, candidates: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """1-based rank [P] of each target among its candidates (scores, ids [P,C]) by the canonical tie rule."""
    is_target = candidates == targets[:, None]
    if not is_target.any(axis=1).all():
        raise DataError("a ranking target is not among its candidates")
    target_score = scores[np.arange(len(scores)), np.argmax(is_target, axis=1)][:, None]
    ahead = (scores > target_score) | ((scores == target_score) & (candidates < targets[:, None]))
    return 1 + ahead.sum(axis=1)


def retrieval_items(model, prompts: Sequence[Sequence[int]], trie, e: EvalConfig, eos: int, pad: int,
                    desc: str) -> np.ndarray:
    """int32 [P, num_beams]: beam items of each prompt, best first (-1 = not an item)."""
    from jaxrec.decode import beam_search

    length = llm.padded_length(prompts)
    out = []
    for idx, real in _batches(len(prompts), e.batch_size, desc, e.progress):
        ids, mask = llm.left_pad([prompts[i] for i in idx], length, pad)
        res = beam_search(model, ids, mask, trie, num_beams=e.num_beams, max_new_tokens=trie.max_length + 1,
                          eos_token_id=eos, pad_token_id=pad)
        out.append(np.asarray(res.item_ids)[:real])
    return np.concatenate(out)


# ----------------------------------------------------------------------------- evaluate


@dataclasses.dataclass
class _EvalContext:
    model: object
    tokenizer: object
    keys: list[str]
    space: bool
    counts: np.ndarray  # training occurrences per item (popularity)
    split: LeaveOneOut
    ds: Dataset


def _eval_retrieval(c: _EvalContext, config: Config, part: str, chosen: np.ndarray) -> dict:
    from jaxrec.decode import ItemTrie
    from jaxrec.methods.popularity import rank_table

    e, tok = config.eval, c.tokenizer
    examples = aligned_t5_eval_examples("retrieval", c.ds, c.split, c.keys, part, config.tasks, config.task_seed)
    examples = [examples[i] for i in chosen.tolist()]
    targets = np.asarray([x.target for x in examples], np.int32)
    trie = ItemTrie.from_sequences(llm.encode(tok, [answer_text(k, c.space) for k in c.keys]),
                                   eos_id=tok.eos_token_id, vocab_size=c.model.config.vocab_size)
    prompts = llm.prompt_ids(tok, c.model, [x.prompt for x in examples])
    items = retrieval_items(c.model, prompts, trie, e, tok.eos_token_id, tok.pad_token_id, f"retrieval {part}")
    return {"protocol": f"full catalog ({c.ds.num_items} items), beam search constrained to item keys, "
                        f"{e.num_beams} beams; items beyond the beams ranked as missing",
            **list_metrics(items, targets, e.ks), "item_rate": float(np.mean(items >= 0)),
            "popularity": metrics_from_ranks(rank_table(c.counts)[targets], e.ks)}


def _eval_ranking(c: _EvalContext, config: Config, part: str, chosen: np.ndarray) -> dict:
    e, tok = config.eval, c.tokenizer
    examples = aligned_t5_eval_examples("ranking", c.ds, c.split, c.keys, part, config.tasks, config.task_seed)
    examples = [examples[i] for i in chosen.tolist()]
    targets = np.asarray([x.target for x in examples], np.int64)
    candidates = np.asarray([x.meta["candidates"] for x in examples], np.int64)  # [P, C]
    keys, lengths = token_matrix(llm.encode(tok, [answer_text(k, c.space) for k in c.keys]), tok.eos_token_id,
                                 tok.pad_token_id)
    prompts = llm.prompt_ids(tok, c.model, [x.prompt for x in examples])
    scores = candidate_log_likelihoods(c.model, prompts, keys[candidates], lengths[candidates], tok.pad_token_id,
                                       e.batch_size, f"ranking {part}", e.progress)
    ks = [k for k in e.ks if k <= candidates.shape[1]]
    popularity = ranks_among_candidates(c.counts[candidates].astype(np.float64), candidates, targets)
    return {"protocol": examples[0].meta["protocol"] if examples else "sampled",
            "scoring": "sequence log-likelihood of each candidate's key + EOS",
            **metrics_from_ranks(ranks_among_candidates(scores, candidates, targets), ks),
            "popularity": metrics_from_ranks(popularity, ks)}


def _eval_rating(c: _EvalContext, config: Config, part: str, chosen: np.ndarray) -> dict:
    e, tok = config.eval, c.tokenizer
    if c.ds.ratings is None:
        log.warning("rating evaluation skipped: dataset %r has no ratings", c.ds.name)
        return {"skipped": f"dataset {c.ds.name!r} has no ratings"}
    examples = aligned_t5_eval_examples("rating", c.ds, c.split, c.keys, part, config.tasks, config.task_seed)
    examples = [examples[i] for i in chosen.tolist()]
    truth = np.asarray([x.meta["rating"] for x in examples], np.float64)
    answers, lengths = token_matrix(llm.encode(tok, [str(v) for v in RATING_VALUES]), tok.eos_token_id,
                                    tok.pad_token_id)
    n = len(examples)
    prompts = llm.prompt_ids(tok, c.model, [x.prompt for x in examples])
    scores = candidate_log_likelihoods(c.model, prompts, np.broadcast_to(answers, (n, *answers.shape)),
                                       np.broadcast_to(lengths, (n, len(lengths))), tok.pad_token_id, e.batch_size,
                                       f"rating {part}", e.progress)
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
    from jaxrec.methods.popularity import item_counts

    start = time.perf_counter()
    e = config.eval
    keys, space = load_item_keys(config.out_dir, ds)
    model, tokenizer = llm.load_run(config.out_dir, "fine_tuned", config.model.dtype, config.model)
    context = _EvalContext(model, tokenizer, keys, space, item_counts(split.train, ds.num_items), split, ds)
    result = {"method": "aligned_t5", "data": config.data.describe(), "model": config.model.describe(),
              "catalog_items": ds.num_items, "id_mode": config.tasks.id_mode}
    for part in e.parts:
        users = len(split.test_users if part == "test" else split.valid_users)
        chosen = llm.eval_subset(users, e.users, e.seed)
        out = {"users": int(len(chosen))}
        for task in e.tasks:
            t0 = time.perf_counter()
            out[task] = {**EVALUATORS[task](context, config, part, chosen), "seconds": round(time.perf_counter() - t0, 2)}
        result[part] = out
    result["seconds"] = round(time.perf_counter() - start, 2)
    write_json(Path(config.out_dir) / "results.json", result)
    return result
