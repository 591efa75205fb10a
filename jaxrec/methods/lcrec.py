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
``index.json`` + ``index.report.json`` and the files of :mod:`jaxrec.methods.llm`; ``results.json``.
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
from jaxrec.errors import DataError
from jaxrec.eval.metrics import DEFAULT_KS, metrics_from_ranks, metrics_from_topk
from jaxrec.index.build import IndexConfig
from jaxrec.index.collisions import ResolveConfig
from jaxrec.index.train_rqvae import TrainConfig as RQVAETrainConfig
from jaxrec.methods import llm
from jaxrec.data.source import DataConfig, SyntheticData, load_dataset
from jaxrec.index.rqvae import RQVAEConfig
from jaxrec.data.pipeline import TokenDataConfig
from jaxrec.models.lora import LoraConfig
from jaxrec.train.config import OptimConfig, TrainConfig

INDEX_FILE = "index.json"
log = logging.getLogger("jaxrec.methods.lcrec")


@dataclasses.dataclass
class EmbeddingSection:
    """Item embeddings to index. ``text``: mean-pooled last hidden states of each item's ``fields``
    (default ``title description``, as LC-Rec) from ``model`` (null = the run's model; or a pretrained
    name/path: an LLM, or a sentence encoder such as ``minilm-l6``, TIGER's choice); ``npy``: ``path`` holds [N, d],
    row i = item i (SASRec's exported ``item_embeddings.npy`` is such a file); ``sasrec``: ``path`` is
    a raw SASRec item table [N+1, d] whose row 0 is padding."""

    source: Literal["text", "npy", "sasrec"] = "text"
    path: str | None = None
    model: str | None = None
    fields: list[str] = dataclasses.field(default_factory=lambda: ["title", "description"])
    batch_size: int = 64
    max_length: int = 128

    def __post_init__(self):
        if self.source != "text" and not self.path:
            raise ValueError(f"embeddings.source={self.source!r} needs embeddings.path (a .npy file)")


@dataclasses.dataclass
class IndexSection:
    """Where the semantic index comes from: ``rqvae`` (built from the embeddings with ``rqvae``
    settings), ``file`` (an LC-Rec/LETTER ``.index.json`` keyed by the dataset's raw item ids), or
    ``dataset`` (the ``lcrec_index`` the LC-Rec reader kept per item)."""

    source: Literal["rqvae", "file", "dataset"] = "rqvae"
    file: str | None = None
    seed: int = 0
    rqvae: IndexConfig = dataclasses.field(default_factory=lambda: IndexConfig(
        model=RQVAEConfig(hidden=(128, 64), e_dim=16, levels=3, codebook_size=32),
        train=RQVAETrainConfig(epochs=200, batch_size=256, lr=3e-3, warmup_epochs=5, kmeans_iters=20,
                               sinkhorn_epsilons=(0.0, 0.0, 0.003), eval_every=50),
        resolve=ResolveConfig()))

    def __post_init__(self):
        if self.source == "file" and not self.file:
            raise ValueError("index.source='file' needs index.file (an LC-Rec .index.json)")


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
    model: llm.ModelSection = dataclasses.field(default_factory=lambda: llm.ModelSection(
        vocab_size=1024, hidden_size=128, intermediate_size=256, num_layers=2, num_heads=4, num_kv_heads=2,
        max_position_embeddings=512))
    train: TrainConfig = dataclasses.field(default_factory=_default_train)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)


# ----------------------------------------------------------------------------- embeddings and index


def text_embeddings(model, tokenizer, texts: list[str], section: EmbeddingSection) -> np.ndarray:
    """float32 [N, d]: mean-pooled last-layer states of each text (LC-Rec's item embeddings)."""
    from jaxrec.ground.embed import Embedder

    empty = [i for i, t in enumerate(texts) if not t]
    if empty:
        raise DataError(f"embeddings.source='text': {len(empty)} items have none of embeddings.fields (first: "
                        f"item {empty[0]}); use embeddings.source npy/sasrec, or index.source file/dataset")
    blocks = Embedder(model, pooling="mean").embed_texts(tokenizer, texts, batch_size=section.batch_size,
                                                         max_length=section.max_length,
                                                         pad_id=tokenizer.pad_token_id)
    return np.concatenate(list(blocks))


def item_embeddings(config: Config, ds: Dataset, model, tokenizer) -> np.ndarray:
    """float32 [N, d] embeddings to index, from ``config.embeddings``."""
    from jaxrec.index.item_embeddings import load_item_embeddings

    e = config.embeddings
    if e.source != "text":
        return load_item_embeddings(e.path, e.source, ds.num_items)
    if e.model is not None:
        from jaxrec.models import load_pretrained
        from jaxrec.models.tokenizer import load_tokenizer

        model, tokenizer = load_pretrained(e.model, dtype=config.model.dtype), load_tokenizer(e.model)
    return text_embeddings(model, tokenizer, item_text.documents(ds, e.fields), e)


def index_codes(config: Config, ds: Dataset, embeddings=None) -> tuple[np.ndarray, dict]:
    """(codes int32 [N, L], report) of the configured index; ``embeddings()`` is called for ``rqvae``."""
    from jaxrec.index.build import build_semantic_index
    from jaxrec.index.collisions import code_usage, collision_rate
    from jaxrec.index.index_io import read_index

    s = config.index
    if s.source == "rqvae":
        return build_semantic_index(embeddings(), s.rqvae, seed=s.seed, progress=config.train.progress)
    if s.source == "file":
        raw = read_index(s.file)  # rows = LC-Rec item ids 0..M-1
        try:
            codes = raw[np.asarray([int(it["raw_id"]) for it in ds.items])]
        except (ValueError, IndexError):
            raise DataError(f"{s.file}: the dataset's raw item ids are not all item ids of this index "
                            f"(0..{len(raw) - 1}); was the dataset prepared from the same LC-Rec files?") from None
    else:
        codes = dataset_index(ds)
    report = {"items": int(codes.shape[0]), "levels": int(codes.shape[1]),
              "collision_rate_final": float(collision_rate(codes)),
              "code_usage": code_usage(codes, int(codes.max()) + 1)}
    if report["collision_rate_final"] > 0:
        raise DataError(f"index ({s.source}): {report['collision_rate_final']:.4f} of the items share an index "
                        f"with another item; LC-Rec needs a collision-free index")
    return codes, report


def dataset_index(ds: Dataset) -> np.ndarray:
    """codes int32 [N, L] from the ``lcrec_index`` tokens the LC-Rec reader stored per item."""
    from jaxrec.data.readers.lcrec import INDEX_FIELD
    from jaxrec.index.index_io import level_token

    rows = []
    for item, it in enumerate(ds.items):
        tokens = it.get(INDEX_FIELD) or []
        codes = [int(t[3:-1]) if t[3:-1].isdigit() else -1 for t in tokens]
        if not tokens or [level_token(level, c) for level, c in enumerate(codes)] != list(tokens) or (
                rows and len(tokens) != len(rows[0])):
            raise DataError(f"index.source='dataset': item {item} (raw id {it.get('raw_id')}) has index "
                            f"{tokens!r}; expected one token <a_N>, <b_N>, ... per level, the same levels for "
                            f"every item (prepare the data from LC-Rec files with a <D>.index.json)")
        rows.append(codes)
    return np.asarray(rows, np.int32)


def index_mapping(codes: np.ndarray) -> dict[int, list[str]]:
    """codes [N, L] → ``{item id: ["<a_..>", ...]}`` (the task builders' index argument)."""
    from jaxrec.index.index_io import codes_to_tokens

    return dict(enumerate(codes_to_tokens(codes)))


def index_token_ids(tokenizer, codes: np.ndarray) -> np.ndarray:
    """int32 [N, L]: the token id of every item's index token at every level."""
    from jaxrec.index.index_io import codes_to_tokens

    vocab = tokenizer.get_vocab()
    tokens = codes_to_tokens(codes)
    missing = sorted({t for row in tokens for t in row if t not in vocab})
    if missing:
        raise DataError(f"the run's tokenizer lacks {len(missing)} index tokens (first {missing[0]}); "
                        f"was index.json replaced after training? re-run jaxrec train")
    return np.asarray([[vocab[t] for t in row] for row in tokens], np.int32)


def add_index_tokens(model, tokenizer, codes: np.ndarray, config: Config) -> int:
    """Add the index's tokens to ``tokenizer`` and grow ``model``'s vocabulary rows (recorded in the
    run directory, see :func:`llm.grow_vocab`); returns the old vocabulary size (the first new row)."""
    from jaxrec.index.index_io import index_vocabulary
    from jaxrec.models.tokenizer import add_tokens

    add_tokens(tokenizer, index_vocabulary(codes))
    return llm.grow_vocab(model, tokenizer, config.out_dir, seed=config.model.seed, noise_scale=config.tokens.noise_scale)


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


class Clock:
    """Wall seconds of consecutive phases: ``lap(name)`` records the time since the previous lap."""

    def __init__(self):
        self.laps: dict[str, float] = {}
        self.start = self.last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self.last, 2)
        self.laps["total"] = round(now - self.start, 2)
        self.last = now


def train(config: Config) -> dict:
    """Index, add tokens, alignment-tune; writes the run directory (see the module docstring)."""
    ds = load_dataset(config.data)
    return fit(config, ds, leave_one_out(ds))


def fit(config: Config, ds: Dataset, split: LeaveOneOut) -> dict:
    """:func:`train` on an already loaded dataset and split."""
    from jaxrec.index.index_io import write_index

    clock = Clock()
    out_dir = Path(config.out_dir)
    llm.refuse_other_model(out_dir, config.model)  # before the index and tokenizer are rewritten
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = llm.make_tokenizer(config.model, lambda: tokenizer_texts(ds), out_dir / "base")
    model = llm.build_model(config.model, tokenizer)
    clock.lap("model")
    codes, report = index_codes(config, ds, lambda: item_embeddings(config, ds, model, tokenizer))
    clock.lap("index")
    write_index(out_dir / INDEX_FILE, codes)
    write_json(out_dir / "index.report.json", {"source": config.index.source, **report}, indent=1)
    first_new_row = add_index_tokens(model, tokenizer, codes, config)
    from jaxrec.models.tokenizer import save_tokenizer

    save_tokenizer(tokenizer, out_dir / "tokenizer")
    llm.start_run(out_dir, config.model, model, tokenizer)
    tc = train_config(config, first_new_row)
    fits = llm.row_fits(tokenizer, tc.data.seq_len) if config.tasks.fit_history else None
    examples = lcrec_train_examples(ds, split, index_mapping(codes), config.tasks, config.task_seed, fits=fits)
    clock.lap("tasks")
    model, summary = llm.finetune(model, tokenizer, examples, tc)
    llm.save_run(out_dir, config.model, model, tc, config, summary)
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


def beam_items(model, prompts: list[list[int]], length: int, trie, mode: str, e: EvalConfig, eos: int, pad: int,
               desc: str) -> np.ndarray:
    """int32 [P, num_beams]: the items of each prompt's beams, best first (-1 = not an item), with a
    progress bar; every batch is left-padded to ``length`` (one compilation per mode)."""
    from tqdm.auto import tqdm

    from jaxrec.decode import beam_search

    def run(ids, mask):
        out = beam_search(model, ids, mask, trie, mode=mode, num_beams=e.num_beams, max_new_tokens=trie.max_length + 1,
                          eos_token_id=eos, pad_token_id=pad)
        return (out.item_ids,)

    chunk = e.batch_size * 4
    parts = []
    with tqdm(total=len(prompts), desc=desc, unit="user", leave=False, disable=not e.progress) as bar:
        for start in range(0, len(prompts), chunk):
            parts.append(llm.batched(run, prompts[start:start + chunk], e.batch_size, pad, length)[0])
            bar.update(len(parts[-1]))
    return np.concatenate(parts)


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
    from jaxrec.decode import ItemTrie
    from jaxrec.index.index_io import read_index
    from jaxrec.methods.popularity import item_counts, rank_table

    start = time.perf_counter()
    e = config.eval
    codes = read_index(Path(config.out_dir) / INDEX_FILE, ds.num_items)
    model, tokenizer = llm.load_run(config.out_dir, "fine_tuned", config.model.dtype, config.model)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    trie = ItemTrie.from_sequences(index_token_ids(tokenizer, codes), eos_id=eos, vocab_size=model.config.vocab_size)
    templates = e.templates if e.templates is not None else list(range(len(SEQREC_TEMPLATES)))
    index = index_mapping(codes)
    popularity_ranks = rank_table(item_counts(split.train, ds.num_items))
    result = {"method": "lcrec", "data": config.data.describe(), "model": config.model.describe(),
              "catalog_items": ds.num_items, "index_levels": int(codes.shape[1]), "num_beams": e.num_beams,
              "templates": templates}
    for part in e.parts:
        rows = leave_one_out_rows(split, part)
        chosen = llm.eval_subset(len(rows.users), e.users, e.seed)
        targets = rows.targets[chosen]
        out = {"users": int(len(chosen)),
               "popularity": metrics_from_ranks(popularity_ranks[targets], e.ks)}
        prompts = {}
        for k in templates:
            examples = lcrec_eval_examples(ds, split, index, part, k, config.tasks.max_history)
            prompts[k] = llm.prompt_ids(tokenizer, model, [examples[i].prompt for i in chosen.tolist()])
        length = max(llm.padded_length(p) for p in prompts.values())
        for mode in e.modes:
            t0 = time.perf_counter()
            per_template, valid_rate = {}, {}
            for k in templates:
                items = beam_items(model, prompts[k], length, trie, mode, e, eos, pad, f"lcrec {part} {mode} t{k}")
                per_template[k] = metrics_from_topk(items, targets, e.ks)
                valid_rate[k] = float(np.mean(items >= 0))
            out[mode] = {**summarize_templates(per_template), "per_template": per_template,
                         "item_rate": valid_rate, "seconds": round(time.perf_counter() - t0, 2)}
        result[part] = out
    result["seconds"] = round(time.perf_counter() - start, 2)
    write_json(Path(config.out_dir) / "results.json", result)
    return result


# ----------------------------------------------------------------------------- demo


def demo_config(out_dir: str | Path, quick: bool = False, seed: int = 0, pretrained: str | None = None,
                users: int = 300) -> Config:
    """The embedded recipe for ``jaxrec demo``: test metrics of template 0, exact trie, every test user.
    ``quick``: the ``tiny`` data's scale (a 2-level index, a short run; a smoke test).

    ``pretrained`` (a named checkpoint, a GGUF or an HF directory): LC-Rec as the paper runs it on a
    pretrained LLM instead of the from-scratch model: the index from the LLM's mean-pooled item text,
    LoRA r8/alpha32 on every linear layer with the (new-token) embeddings trained, loss on the
    response only, CPU-sized (64 steps of 8), evaluated on a seeded sample of ``users`` test users."""
    c = Config(out_dir=str(out_dir))
    ev = dataclasses.replace(c.eval, ks=list(DEFAULT_KS), modes=["trie"], templates=[0], users=None)
    c = dataclasses.replace(c, eval=ev, task_seed=seed, model=dataclasses.replace(c.model, seed=seed),
                            index=dataclasses.replace(c.index, seed=seed),
                            train=dataclasses.replace(c.train, seed=seed))
    if pretrained:
        lora = LoraConfig(mode="lora", rank=8, alpha=32.0, dropout=0.05, trainable=(r"(embed_tokens|lm_head)\..+",),
                          target_modules=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"))
        train = dataclasses.replace(
            c.train, batch_size=8, steps=2 if quick else 64, log_every=8, lora=lora,
            optim=OptimConfig(learning_rate=5e-4, warmup_steps=6, decay="cosine", weight_decay=0.01),
            data=TokenDataConfig(seq_len=256, bucket_lengths=(128,)), progress=not quick)
        c = dataclasses.replace(c, model=llm.ModelSection(pretrained=pretrained, dtype="float32"), train=train,
                                embeddings=dataclasses.replace(c.embeddings, batch_size=32),
                                eval=dataclasses.replace(c.eval, users=4 if quick else users, batch_size=20,
                                                         progress=not quick))
    if not quick:
        return c
    rq = c.index.rqvae
    rqvae = dataclasses.replace(rq, model=dataclasses.replace(rq.model, levels=2, codebook_size=16),
                                train=dataclasses.replace(rq.train, epochs=50, sinkhorn_epsilons=(0.0, 0.003)))
    c = dataclasses.replace(c, index=dataclasses.replace(c.index, rqvae=rqvae),
                            eval=dataclasses.replace(c.eval, progress=False))
    if pretrained:
        return c
    return dataclasses.replace(c, model=dataclasses.replace(c.model, vocab_size=512),
                               train=dataclasses.replace(c.train, steps=150, progress=False))


def run_demo(dataset: Dataset, out_dir: str | Path, quick: bool = False, seed: int = 0,
             split: LeaveOneOut | None = None, pretrained: str | None = None) -> dict:
    """Index, align and evaluate on ``dataset`` (the demo's data); returns the test metrics
    (HR/NDCG/Recall@{1,5,10,20}, MRR@20 of the 20-beam lists), with ``users`` and, for a sample of
    the users (``pretrained``), ``popularity`` on that sample."""
    config = demo_config(out_dir, quick, seed, pretrained)
    split = split or leave_one_out(dataset)
    fit(config, dataset, split)
    test = evaluate_run(config, dataset, split)["test"]
    extra = {"users": test["users"]}
    if config.eval.users is not None:
        extra["popularity"] = {k: v for k, v in test["popularity"].items() if k.split("@")[0] in ("HR", "NDCG")}
    return {**test["trie"]["mean"], **extra}
