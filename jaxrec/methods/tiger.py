"""TIGER (Rajput et al., 2023): a small T5 trained from scratch to generate the next item's semantic ID.

Recipe (every step configured by a section of :class:`Config`):

1. **Item embeddings** (``embeddings:``): collaborative embeddings of a SASRec trained inside the
   run (``sasrec_fit``, written to ``out_dir/sasrec``; the embedded default, data without text),
   a precomputed ``.npy`` [N, d] (``npy``), or a SASRec item table [N+1, d] (``sasrec``).
2. **Semantic index** (``index:``, the section of :mod:`jaxrec.methods.lcrec`): an RQ-VAE index,
   an LC-Rec/LETTER ``.index.json``, or the index the LC-Rec reader stored per item. Written in
   LC-Rec's format to ``out_dir/index.json``.
3. **Vocabulary**: no text tokenizer. A word-level tokenizer whose tokens are ``<pad>`` 0,
   ``</s>`` 1, ``<unk>`` 2, the index's code tokens (``<a_0>`` ... one per level and code) and,
   with ``user_tokens`` > 0, ``<u_0>`` ... ``<u_{n-1}>`` (user id mod n, TIGER's user hash).
4. **Training**: encoder input = ``[<u_h>] + codes of the last <= max_history items``, decoder
   target = the next item's codes + EOS; one example per position of every user's leave-one-out
   training sequence (each prefix -> its next item). A T5 of ``model:`` sizes trained from scratch
   with the engine (full training, cross-entropy on the target).
5. **Evaluation**: beam search (``eval.num_beams``, default 20) constrained by an exact trie over
   every catalog item's codes; HR/Recall/NDCG@K of the returned beam list. A target absent from
   the beams counts as a miss (rank > num_beams), so K <= num_beams. Popularity on the same users
   beside it.

Run directory: ``index.json`` + ``index.report.json``, the files of :mod:`jaxrec.models.run_dir`
(``tokenizer/``, ``base_model/``, ``model/``, ``run.json``), ``item_trie.npz`` (the constraint index), ``logs/``,
``results.json``.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Literal

import numpy as np

from jaxrec import seqrec
from jaxrec.atomic import write_json
from jaxrec.data.dataset import Dataset
from jaxrec.data.pipeline import TokenDataConfig
from jaxrec.data.source import DataConfig, SyntheticData, load_dataset
from jaxrec.data.splits import LeaveOneOut, leave_one_out
from jaxrec.data.tasks.rows import leave_one_out_rows
from jaxrec.data.tasks.tiger import encoder_length, encoder_text, tiger_train_examples, user_token
from jaxrec.decode.trie import ItemTrie, content_key, run_trie
from jaxrec.errors import ConfigError
from jaxrec.eval import evaluators
from jaxrec.eval.ranking import item_counts
from jaxrec.eval.sample import eval_subset
from jaxrec.index.index_io import codes_to_tokens, index_vocabulary, read_index, write_index
from jaxrec.index.source import INDEX_FILE, IndexSection, index_codes, index_trie
from jaxrec.models.lora import LoraConfig
from jaxrec.models.prompts import prompt_ids
from jaxrec.models.registry import architecture
from jaxrec.models.run_dir import load_run, save_run, start_run
from jaxrec.models.section import ModelSection, make_model
from jaxrec.models.tokenizer import save_tokenizer, word_level_tokenizer
from jaxrec.timing import Clock
from jaxrec.train.config import OptimConfig, TrainConfig
from jaxrec.train.finetune import finetune

SPECIAL = ("<pad>", "</s>", "<unk>")


@dataclasses.dataclass
class EmbeddingSection:
    """Item embeddings to index (``index.source: rqvae`` only). ``sasrec_fit``: train a SASRec
    (``sasrec_model``/``sasrec_train``) on the run's leave-one-out training part and take its item
    table; ``npy``: ``path`` holds [N, d]; ``sasrec``: ``path`` is a SASRec table [N+1, d]."""

    source: Literal["sasrec_fit", "npy", "sasrec"] = "sasrec_fit"
    path: str | None = None
    sasrec_model: seqrec.ModelConfig = dataclasses.field(default_factory=lambda: seqrec.ModelConfig(max_len=20))
    sasrec_train: seqrec.TrainConfig = dataclasses.field(
        default_factory=lambda: seqrec.TrainConfig(epochs=20, batch_size=256, lr=3e-3, patience=3))

    def __post_init__(self):
        if self.source != "sasrec_fit" and not self.path:
            raise ValueError(f"embeddings.source={self.source!r} needs embeddings.path (a .npy file)")


@dataclasses.dataclass
class EvalConfig:
    """Constrained full-catalog evaluation (exact trie over all items' codes)."""

    ks: list[int] = dataclasses.field(default_factory=lambda: [5, 10])
    num_beams: int = 20
    parts: list[Literal["valid", "test"]] = dataclasses.field(default_factory=lambda: ["test"])
    users: int | None = None  # a seeded sample of the evaluated users; None: all
    curve_users: int = 500  # validation users scored every train.eval_every steps (the learning curve)
    batch_size: int = 64
    seed: int = 0
    progress: bool = True

    def __post_init__(self):
        if not self.ks or max(self.ks) > self.num_beams:
            raise ValueError(f"eval.ks {self.ks} need cut-offs <= num_beams={self.num_beams}")
        if not self.parts:
            raise ValueError("eval.parts must name at least one of valid, test")


def _default_train() -> TrainConfig:
    return TrainConfig(epochs=5, batch_size=256, log_every=50, dropout=0.1, lora=LoraConfig(mode="full"),
                       optim=OptimConfig(learning_rate=3e-3, warmup_steps=100, decay="cosine", weight_decay=0.01),
                       data=TokenDataConfig(seq_len=64, bucket_lengths=(16, 32, 48), group_by_length=16))


@dataclasses.dataclass
class Config:
    method: str = "tiger"
    out_dir: str = "runs/tiger"
    data: DataConfig = dataclasses.field(default_factory=lambda: DataConfig(synthetic=SyntheticData()))
    embeddings: EmbeddingSection = dataclasses.field(default_factory=EmbeddingSection)
    index: IndexSection = dataclasses.field(default_factory=IndexSection)
    max_history: int = 20
    user_tokens: int = 0  # TIGER's user-id hash tokens (paper: 2000); 0: no user token
    model: ModelSection = dataclasses.field(default_factory=lambda: ModelSection(
        arch="t5", hidden_size=128, intermediate_size=256, num_layers=2, num_heads=4))
    train: TrainConfig = dataclasses.field(default_factory=_default_train)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)

    def __post_init__(self):
        if not architecture(self.model.arch).encoder_decoder or self.model.pretrained:
            raise ValueError("model: TIGER trains an encoder-decoder from scratch (model.arch: t5, model.pretrained: null)")
        if self.max_history < 1 or self.user_tokens < 0:
            raise ValueError(f"max_history={self.max_history} must be >= 1 and user_tokens={self.user_tokens} >= 0")


# ----------------------------------------------------------------------------- vocabulary and examples


def code_tokenizer(codes: np.ndarray, user_tokens: int):
    """A word-level tokenizer over exactly the special, code and user-hash tokens (codes int [N, L])."""
    return word_level_tokenizer(list(SPECIAL) + index_vocabulary(codes) + [user_token(u) for u in range(user_tokens)])


def item_code_texts(codes: np.ndarray) -> list[str]:
    """Item i's code tokens, whitespace-separated."""
    return [" ".join(row) for row in codes_to_tokens(codes)]


def train_config(config: Config, levels: int) -> TrainConfig:
    """``config.train`` with the run's log dir; ``train.data.seq_len`` must hold the longest input."""
    t = config.train
    need = encoder_length(config.max_history, levels, config.user_tokens)
    if t.data.seq_len < need:
        raise ConfigError(f"train.data.seq_len={t.data.seq_len} is shorter than the longest encoder input "
                          f"({need} tokens: max_history={config.max_history} x {levels} levels + user/EOS)")
    return dataclasses.replace(t, log_dir=t.log_dir or str(Path(config.out_dir) / "logs"))


# ----------------------------------------------------------------------------- train


def sasrec_embeddings(config: Config, ds: Dataset, split: LeaveOneOut) -> np.ndarray:
    """float32 [N, d]: the item table of a SASRec trained on this run's split (``out_dir/sasrec``)."""
    e = config.embeddings
    run = seqrec.Config(out_dir=str(Path(config.out_dir) / "sasrec"), data=config.data, model=e.sasrec_model,
                        train=e.sasrec_train)
    seqrec.fit(run, ds, split)
    return np.load(Path(run.out_dir) / "item_embeddings.npy")


def item_embeddings(config: Config, ds: Dataset, split: LeaveOneOut) -> np.ndarray:
    from jaxrec.index.item_embeddings import load_item_embeddings

    e = config.embeddings
    if e.source == "sasrec_fit":
        return sasrec_embeddings(config, ds, split)
    return load_item_embeddings(e.path, e.source, ds.num_items)


def train(config: Config) -> dict:
    """Index, build the code vocabulary, train the T5; writes the run directory (module docstring)."""
    ds = load_dataset(config.data)
    return fit(config, ds, leave_one_out(ds))


def fit(config: Config, ds: Dataset, split: LeaveOneOut, embeddings: np.ndarray | None = None) -> dict:
    """:func:`train` on an already loaded dataset and split; ``embeddings`` [N, d] (if given) replace
    the ``embeddings:`` section."""
    clock = Clock()
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    codes, report = index_codes(config.index, ds, (lambda: embeddings) if embeddings is not None
                                else (lambda: item_embeddings(config, ds, split)), config.train.progress)
    clock.lap("index")
    write_index(out_dir / INDEX_FILE, codes)
    write_json(out_dir / "index.report.json", {"source": config.index.source, **report}, indent=1)
    tokenizer = code_tokenizer(codes, config.user_tokens)
    save_tokenizer(tokenizer, out_dir / "tokenizer")
    model = make_model(config.model, tokenizer)
    start_run(out_dir, config.model, model, tokenizer)
    examples = tiger_train_examples(split, item_code_texts(codes), config.max_history, config.user_tokens)
    tc = train_config(config, codes.shape[1])
    clock.lap("examples")
    trie = run_trie(out_dir, lambda: index_trie(tokenizer, codes, model.config.vocab_size),
                    content_key(tokenizer, codes), rebuild=True)
    curve = validation_curve(config, split, codes, tokenizer, trie) if tc.eval_every else None
    model, summary = finetune(model, tokenizer, examples, tc, target_len=codes.shape[1] + 1, evaluate=curve)
    save_run(out_dir, config.model, model, tc.lora, config, summary)
    clock.lap("train")
    return {"method": "tiger", "data": config.data.describe(), "model": config.model.describe(),
            "index": {"source": config.index.source, "items": int(codes.shape[0]), "levels": int(codes.shape[1]),
                      "collision_rate_final": report.get("collision_rate_final")},
            "vocab_size": len(tokenizer), "train_examples": len(examples), **summary, "seconds": clock.laps,
            "out_dir": str(out_dir)}


# ----------------------------------------------------------------------------- evaluate


def evaluate(config: Config) -> dict:
    """Constrained full-catalog evaluation of a trained run; writes ``out_dir/results.json``."""
    ds = load_dataset(config.data)
    return evaluate_run(config, ds, leave_one_out(ds))


def evaluate_run(config: Config, ds: Dataset, split: LeaveOneOut) -> dict:
    """:func:`evaluate` on an already loaded dataset and split."""
    start = time.perf_counter()
    e = config.eval
    codes = read_index(Path(config.out_dir) / INDEX_FILE, ds.num_items)
    model, tokenizer = load_run(config.out_dir, "fine_tuned", config.model.dtype, config.model)
    trie = run_trie(config.out_dir, lambda: index_trie(tokenizer, codes, model.config.vocab_size),
                    content_key(tokenizer, codes))
    decoder = BeamDecoder(config, codes, tokenizer, trie)
    counts = item_counts(split.train, ds.num_items)
    result = {"method": "tiger", "data": config.data.describe(), "model": config.model.describe(),
              "catalog_items": ds.num_items, "index_levels": int(codes.shape[1]), "num_beams": e.num_beams,
              "protocol": evaluators.protocol("constrained", ds.num_items, num_beams=e.num_beams)}
    for part in e.parts:
        t0 = time.perf_counter()
        texts, targets = decoder.inputs(split, part, e.users)
        metrics = decoder.metrics(model, texts, targets, f"tiger {part}")
        result[part] = {"users": len(texts), "tiger": metrics, "popularity": evaluators.popularity(counts, targets, e.ks),
                        "item_rate": metrics.pop("item_rate"), "seconds": round(time.perf_counter() - t0, 2)}
    result["seconds"] = round(time.perf_counter() - start, 2)
    write_json(Path(config.out_dir) / "results.json", result)
    return result


class BeamDecoder:
    """Encoder inputs of evaluated users and their trie-constrained beam lists (shared by the final
    evaluation and the learning curve)."""

    def __init__(self, config: Config, codes: np.ndarray, tokenizer, trie: ItemTrie, progress: bool = True):
        self.config, self.tokenizer = config, tokenizer
        self.eval = dataclasses.replace(config.eval, progress=config.eval.progress and progress)
        self.eos, self.pad = tokenizer.eos_token_id, tokenizer.pad_token_id
        self.trie = trie
        self.item_tokens = item_code_texts(codes)
        self.length = -(-encoder_length(config.max_history, codes.shape[1], config.user_tokens) // 16) * 16  # one compilation for every batch

    def inputs(self, split: LeaveOneOut, part: str, limit: int | None) -> tuple[list[str], np.ndarray]:
        """Encoder texts and target items of a seeded sample of ``limit`` users of ``part``."""
        rows = leave_one_out_rows(split, part)
        chosen = eval_subset(len(rows.users), limit, self.config.eval.seed)
        return ([encoder_text(rows.histories[i], int(rows.users[i]), self.item_tokens, self.config.max_history,
                              self.config.user_tokens)
                 for i in chosen.tolist()], rows.targets[chosen])

    def metrics(self, model, texts: list[str], targets: np.ndarray, desc: str) -> dict:
        """Metrics of each input's beam list (and ``item_rate``) against ``targets``."""
        return evaluators.constrained_generation(
            model, prompt_ids(self.tokenizer, model, texts), targets, self.trie, self.eval.ks, mode="trie",
            num_beams=self.eval.num_beams, eos_id=self.eos, pad_id=self.pad, batch_size=self.eval.batch_size,
            length=self.length, desc=desc if self.eval.progress else None)[0]


def validation_curve(config: Config, split: LeaveOneOut, codes: np.ndarray, tokenizer, trie: ItemTrie):
    """``evaluate(model) -> {metric: value}`` on ``eval.curve_users`` validation users (seeded, fixed
    for the run): the learning curve logged every ``train.eval_every`` steps."""
    decoder = BeamDecoder(config, codes, tokenizer, trie, progress=False)
    texts, targets = decoder.inputs(split, "valid", config.eval.curve_users)

    def evaluate(model) -> dict:
        metrics = decoder.metrics(model, texts, targets, "tiger curve")
        metrics.pop("item_rate")
        return metrics

    return evaluate
