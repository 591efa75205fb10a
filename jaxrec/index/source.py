"""Where an item's semantic index comes from (LC-Rec, TIGER, aligned T5's ``semantic`` keys).

* ``embeddings:`` (:class:`EmbeddingSection`) — item vectors to quantize: mean-pooled hidden states of
  each item's text, a ``.npy`` [N, d], or a SASRec item table.
* ``index:`` (:class:`IndexSection`) — an RQ-VAE index built from them, an LC-Rec/LETTER
  ``.index.json``, or the index the LC-Rec reader stored per item; always collision-free.
* :func:`index_mapping` / :func:`index_token_ids` — codes [N, L] as task-builder tokens or token ids.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np

from jaxrec.data.dataset import Dataset
from jaxrec.data.readers.lcrec import INDEX_FIELD
from jaxrec.data.tasks import item_text
from jaxrec.decode.trie import ItemTrie
from jaxrec.errors import DataError
from jaxrec.ground.embed import Embedder
from jaxrec.index.build import IndexConfig, build_semantic_index
from jaxrec.index.collisions import ResolveConfig, code_usage, collision_rate
from jaxrec.index.index_io import codes_to_tokens, level_token, read_index
from jaxrec.index.item_embeddings import load_item_embeddings
from jaxrec.index.train_rqvae import TrainConfig as RQVAETrainConfig
from jaxrec.models import load_pretrained
from jaxrec.index.rqvae import RQVAEConfig
from jaxrec.models.tokenizer import load_tokenizer

INDEX_FILE = "index.json"  # the run directory's index, in LC-Rec's format


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



def text_embeddings(model, tokenizer, texts: list[str], section: EmbeddingSection) -> np.ndarray:
    """float32 [N, d]: mean-pooled last-layer states of each text (LC-Rec's item embeddings)."""

    empty = [i for i, t in enumerate(texts) if not t]
    if empty:
        raise DataError(f"embeddings.source='text': {len(empty)} items have none of embeddings.fields (first: "
                        f"item {empty[0]}); use embeddings.source npy/sasrec, or index.source file/dataset")
    blocks = Embedder(model, pooling="mean").embed_texts(tokenizer, texts, batch_size=section.batch_size,
                                                         max_length=section.max_length,
                                                         pad_id=tokenizer.pad_token_id)
    return np.concatenate(list(blocks))


def item_embeddings(e: EmbeddingSection, ds: Dataset, model, tokenizer, dtype: str = "float32") -> np.ndarray:
    """float32 [N, d] embeddings to index, as section ``e`` says (``model``/``tokenizer``: the run's, for
    ``source: text`` with ``model: null``; ``dtype``: a pretrained ``e.model``'s)."""
    if e.source != "text":
        return load_item_embeddings(e.path, e.source, ds.num_items)
    if e.model is not None:
        model, tokenizer = load_pretrained(e.model, dtype=dtype), load_tokenizer(e.model)
    return text_embeddings(model, tokenizer, item_text.documents(ds, e.fields), e)


def index_codes(s: IndexSection, ds: Dataset, embeddings=None, progress: bool = True) -> tuple[np.ndarray, dict]:
    """(codes int32 [N, L], report) of the index section ``s`` says; ``embeddings()`` is called for ``rqvae``."""
    if s.source == "rqvae":
        return build_semantic_index(embeddings(), s.rqvae, seed=s.seed, progress=progress)
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

    return dict(enumerate(codes_to_tokens(codes)))


def index_token_ids(tokenizer, codes: np.ndarray) -> np.ndarray:
    """int32 [N, L]: the token id of every item's index token at every level."""

    vocab = tokenizer.get_vocab()
    tokens = codes_to_tokens(codes)
    missing = sorted({t for row in tokens for t in row if t not in vocab})
    if missing:
        raise DataError(f"the run's tokenizer lacks {len(missing)} index tokens (first {missing[0]}); "
                        f"was index.json replaced after training? re-run jaxrec train")
    return np.asarray([[vocab[t] for t in row] for row in tokens], np.int32)


def index_trie(tokenizer, codes: np.ndarray, vocab_size: int) -> ItemTrie:
    """The exact item trie over every item's index tokens (codes [N, L])."""
    return ItemTrie.from_sequences(index_token_ids(tokenizer, codes), eos_id=tokenizer.eos_token_id,
                                   vocab_size=vocab_size)
