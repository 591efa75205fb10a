"""Shared plumbing of the LLM recipes (BIGRec, LC-Rec, aligned T5, RSLLM): a few composable functions.

* :class:`ModelSection` — the ``model:`` config section: a local Hugging Face directory
  (``pretrained``) or a tiny model trained from scratch (``arch``/sizes) with a byte-level BPE
  tokenizer trained on the dataset's text.
* :func:`make_tokenizer`, :func:`build_model` — build them (the tokenizer is saved in the run dir); :func:`encode` — text → token ids
  (never special tokens; the pipeline and :func:`prompt_ids` add BOS/EOS explicitly).
* :func:`finetune` — train a model on a list of :class:`~jaxrec.data.tasks.Example` through the
  training engine (LoRA or full fine-tuning, as ``train.lora.mode`` says).
* :func:`save_run` / :func:`load_run` — a run directory that evaluation reloads::

      run.json          {"base_model": dir, "mode": "lora"|"full", "state": "finished"|"preempted",
                         "step": N, "config": {...}}
      tokenizer/        HF tokenizer files (pad token set)
      base_model/       from-scratch runs only: the initial weights (HF safetensors)
      adapter/          mode lora: PEFT adapter (adapter_config.json + adapter_model.safetensors)
      model/            mode full: the fine-tuned weights (HF safetensors)

* :func:`generate` — batched beam search over many prompts with one compilation (prompts
  left-padded to one length, the last batch padded with copies).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Callable, Iterable, Literal, Sequence

import numpy as np
from flax import nnx

from jaxrec.atomic import write_json
from jaxrec.config import to_dict
from jaxrec.data.tasks import Example
from jaxrec.errors import ConfigError
from jaxrec.train.config import TrainConfig

RUN_FILE = "run.json"
VOCAB_GROWTH_FILE = "vocab_growth.json"
log = logging.getLogger("jaxrec.methods.llm")


@dataclasses.dataclass(frozen=True)
class ModelSection:
    """The LLM: ``pretrained`` (a local HF model directory, a ``.gguf`` file or a named small checkpoint
    such as ``smollm2-135m``; never downloaded) or, when it is null, a small ``arch`` model trained from
    scratch with a ``vocab_size`` BPE tokenizer trained on the dataset's prompts and item titles. The
    size fields apply to from-scratch models only. ``chat_template``: every prompt becomes one user
    turn of the tokenizer's chat template, the response the assistant's turn ended by EOS."""

    pretrained: str | None = None
    dtype: Literal["float32", "bfloat16"] = "float32"
    attention: Literal["auto", "xla", "cudnn", "splash"] = "auto"  # full-sequence attention kernel (Llama family)
    chat_template: bool = False  # wrap each prompt in the tokenizer's chat template (instruct models)
    arch: Literal["llama", "t5"] = "llama"
    vocab_size: int = 2048
    hidden_size: int = 128
    intermediate_size: int = 256
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    max_position_embeddings: int = 1024
    seed: int = 0

    def __post_init__(self):
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size={self.hidden_size} must be a multiple of num_heads={self.num_heads}")

    def describe(self) -> str:
        if self.pretrained:
            return self.pretrained
        return (f"{self.arch} from scratch (hidden {self.hidden_size}, {self.num_layers} layers, "
                f"vocab {self.vocab_size})")


# ----------------------------------------------------------------------------- tokenizer


def make_tokenizer(section: ModelSection, texts: Callable[[], Iterable[str]], run_dir: str | Path, *,
                   chat: bool = False):
    """Build the run's tokenizer and save it to ``run_dir/tokenizer`` (where :func:`load_run` reads it).

    Pretrained: the model directory's tokenizer (a missing pad token is set to unk or eos).
    From scratch: a byte-level BPE of ``section.vocab_size`` tokens trained on ``texts()``.
    ``chat``: the recipe formats its prompts with :func:`chat_prompts`; others refuse
    ``model.chat_template: true`` rather than ignore it.
    """
    from jaxrec.models.tokenizer import load_tokenizer, save_tokenizer, train_bpe_tokenizer

    if section.chat_template and not chat:
        raise ConfigError("model.chat_template: true is supported by the bigrec recipe only; set it to false")
    refuse_other_model(run_dir, section)
    path = Path(run_dir) / "tokenizer"
    if not section.pretrained:
        return train_bpe_tokenizer(texts(), section.vocab_size, path)
    tokenizer = load_tokenizer(section.pretrained)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    save_tokenizer(tokenizer, path)
    return tokenizer


def encode(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text, without special tokens."""
    if not texts:
        return []
    return tokenizer(list(texts), add_special_tokens=False)["input_ids"]


def is_seq2seq(model) -> bool:
    return hasattr(model, "encode")


def bos_id(tokenizer) -> int | None:
    """The BOS id to put before every prompt, or None (see :func:`jaxrec.models.tokenizer.adds_bos`)."""
    from jaxrec.models.tokenizer import adds_bos

    return tokenizer.bos_token_id if adds_bos(tokenizer) else None


def row_fits(tokenizer, seq_len: int) -> Callable[[str, str], bool]:
    """``fits(prompt, response)``: whether a decoder-only training row of ``seq_len`` tokens holds the
    whole example, as :func:`finetune` builds it (:meth:`CausalFeatures.keeps_whole`)."""
    from jaxrec.data.pipeline import CausalFeatures

    features = CausalFeatures(seq_len, tokenizer.eos_token_id, bos_id(tokenizer))

    def fits(prompt: str, response: str) -> bool:
        p, r = encode(tokenizer, [prompt, response])
        return features.keeps_whole(len(p), len(r))

    return fits


def chat_prompts(tokenizer, section: ModelSection, prompts: Sequence[str]) -> list[str]:
    """``prompts`` as the model reads them: unchanged, or each one user turn of the tokenizer's chat
    template followed by the assistant's turn opening (``model.chat_template: true``)."""
    if not section.chat_template:
        return list(prompts)
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(f"model.chat_template is true, but the tokenizer of {section.describe()} has no chat "
                          f"template; set model.chat_template: false")
    return [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                          add_generation_prompt=True) for p in prompts]


def chat_examples(tokenizer, section: ModelSection, examples: Sequence[Example]) -> list[Example]:
    """``examples`` with their prompts passed through :func:`chat_prompts`."""
    prompts = chat_prompts(tokenizer, section, [e.prompt for e in examples])
    return [dataclasses.replace(e, prompt=p) for e, p in zip(examples, prompts)]


def prompt_ids(tokenizer, model, prompts: Sequence[str]) -> list[list[int]]:
    """Model inputs: decoder-only ``[BOS] + prompt`` (when the tokenizer adds a BOS); T5 ``prompt + EOS``."""
    ids = encode(tokenizer, prompts)
    if is_seq2seq(model):
        return [x + [tokenizer.eos_token_id] for x in ids]
    bos = bos_id(tokenizer)
    return [([bos] if bos is not None else []) + x for x in ids]


# ----------------------------------------------------------------------------- model


def build_model(section: ModelSection, tokenizer):
    """Load ``section.pretrained``, or initialise a from-scratch model sized to ``tokenizer``."""
    from jaxrec.models import build_model as build, load_pretrained, tiny_llama_config, tiny_t5_config

    if section.pretrained:
        return _with_attention(load_pretrained(section.pretrained, dtype=section.dtype), section)
    s, vocab = section, len(tokenizer)
    if s.arch == "t5":
        config = tiny_t5_config(vocab, d_model=s.hidden_size, d_ff=s.intermediate_size, d_kv=s.hidden_size // s.num_heads,
                                num_layers=s.num_layers, num_decoder_layers=s.num_layers, num_heads=s.num_heads,
                                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                                dtype=s.dtype, param_dtype=s.dtype)
    else:
        config = tiny_llama_config(vocab, hidden_size=s.hidden_size, intermediate_size=s.intermediate_size,
                                   num_layers=s.num_layers, num_heads=s.num_heads, num_kv_heads=s.num_kv_heads,
                                   head_dim=s.hidden_size // s.num_heads,
                                   max_position_embeddings=s.max_position_embeddings,
                                   bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                   pad_token_id=tokenizer.pad_token_id, dtype=s.dtype, param_dtype=s.dtype)
    return _with_attention(build(config, seed=s.seed), section)


def _with_attention(model, section: ModelSection):
    from jaxrec.models.attention import use_attention

    use_attention(model, section.attention)
    return model


# ----------------------------------------------------------------------------- training


def finetune(model, tokenizer, examples: Sequence[Example], train: TrainConfig, *, loss_fn=None,
             target_len: int | None = None, evaluate: Callable[[nnx.Module], dict] | None = None
             ) -> tuple[nnx.Module, dict]:
    """Train ``model`` on ``examples`` (loss on the response + EOS, or every token with
    ``train.data.train_on_inputs``) with the engine; returns (trained model, fit summary).
    ``evaluate(model) -> {metric: value}`` runs every ``train.eval_every`` steps (logged as ``eval/``).

    ``train.epochs`` (if set) fixes the number of passes, else ``train.steps``. T5: prompts are cut
    to ``train.data.seq_len`` and responses to ``target_len`` (default the same). In LoRA mode the
    returned model holds LoRA modules (see :func:`save_run`).
    """
    from jaxrec.data.pipeline import CausalFeatures, Seq2SeqFeatures
    from jaxrec.train.losses import causal_lm_loss, seq2seq_lm_loss

    if not examples:
        raise ConfigError("finetune: no training examples")
    prompts, responses = encode(tokenizer, [e.prompt for e in examples]), encode(tokenizer, [e.response for e in examples])
    rows = [{"prompt_ids": p, "response_ids": r} for p, r in zip(prompts, responses)]
    seq_len, eos, seq2seq = train.data.seq_len, tokenizer.eos_token_id, is_seq2seq(model)
    target_len = target_len or seq_len
    if seq2seq:
        features = Seq2SeqFeatures(seq_len, target_len, eos, model.config.decoder_start_token_id)
        loss_fn = loss_fn or seq2seq_lm_loss
        truncated = sum(len(p) + 1 > seq_len or len(r) + 1 > target_len for p, r in zip(prompts, responses))
        no_response = 0  # the decoder keeps its own target_len
    else:
        features = CausalFeatures(seq_len, eos, bos_id(tokenizer), train.data.train_on_inputs)
        loss_fn = loss_fn or causal_lm_loss
        truncated = sum(not features.keeps_whole(len(p), len(r)) for p, r in zip(prompts, responses))
        no_response = sum(not features.keeps_response(len(p)) for p in prompts)
    if truncated:
        log.warning("%d of %d training examples are longer than train.data.seq_len=%d%s and are cut%s", truncated,
                    len(rows), seq_len, f" / target_len={target_len}" if seq2seq else "",
                    f"; {no_response} of them lose their whole response (raise seq_len or shorten the history)"
                    if no_response else "")
    model, summary = train_rows(model, rows, features, train, loss_fn, pad_id=tokenizer.pad_token_id,
                                target_len=target_len if seq2seq else None, evaluate=evaluate)
    return model, {**summary, "truncated_examples": truncated, "examples_without_response": no_response}


def train_rows(model, rows: Sequence[dict], features, train: TrainConfig, loss_fn, *, pad_id: int,
               target_len: int | None = None, evaluate: Callable[[nnx.Module], dict] | None = None
               ) -> tuple[nnx.Module, dict]:
    """The engine on pre-tokenized ``rows`` (dicts with ``prompt_ids``/``response_ids``, ...) that the
    grain transform ``features`` turns into model inputs; returns (trained model, fit summary)."""
    from jaxrec.data.pipeline import make_batches
    from jaxrec.train.trainer import Trainer

    steps = train.num_steps(len(rows))
    trainer = Trainer(model, train, loss_fn, total_steps=steps)
    batches = make_batches(rows, features, train.data, trainer.mesh, global_batch=train.batch_size, seed=train.seed,
                           pad_id=pad_id, target_len=target_len, num_epochs=train.epochs)
    start = time.perf_counter()
    summary = trainer.fit(batches, evaluate=evaluate, steps=steps)
    summary.update(train_seconds=round(time.perf_counter() - start, 2))
    trained = trainer.model()
    trainer.close()
    return trained, summary


# ----------------------------------------------------------------------------- run directory


def start_run(run_dir: str | Path, section: ModelSection, model, tokenizer) -> None:
    """Before training: for a from-scratch model, keep its initial weights as the run's base model. A
    base model already there (a resumed run) is kept; one of another architecture or size is refused,
    before anything is written."""
    from jaxrec.models import save_pretrained

    if section.pretrained:
        return
    base = Path(run_dir) / "base_model"
    if (base / "config.json").is_file():
        stored, current = json.loads((base / "config.json").read_text()), json.loads(json.dumps(model.config.to_hf()))
        if stored != current:
            key = next(k for k in sorted(set(stored) | set(current)) if stored.get(k) != current.get(k))
            raise ConfigError(f"{run_dir} holds a run of another model ({base}/config.json has {key}="
                              f"{stored.get(key)!r}, this config {current.get(key)!r}); use a fresh out_dir or the "
                              f"run's own model settings")
        return
    save_pretrained(model, base)


def grow_vocab(model, tokenizer, run_dir: str | Path, *, seed: int, noise_scale: float = 0.01) -> int:
    """Grow ``model``'s vocabulary rows to cover ``tokenizer`` (tokens added to a pretrained vocabulary)
    and record how in ``run_dir/vocab_growth.json``, so :func:`load_run` regrows the base identically
    before loading a LoRA adapter. Returns the old vocabulary size (the first new row)."""
    from jaxrec.models.tokenizer import resize_token_embeddings

    old, record = int(model.config.vocab_size), Path(run_dir) / VOCAB_GROWTH_FILE
    if len(tokenizer) > old:
        resize_token_embeddings(model, len(tokenizer), seed=seed, noise_scale=noise_scale)
        write_json(record, {"vocab_size": len(tokenizer), "seed": seed, "noise_scale": noise_scale})
    else:
        record.unlink(missing_ok=True)  # an earlier run in this directory grew it; this one does not
    return old


def run_state(summary: dict) -> dict:
    """What ``run.json`` records of a fit summary: ``state`` "preempted" (stopped by SIGTERM before its
    last step: ``jaxrec train`` resumes it) or "finished", and the ``step`` reached."""
    return {"state": "preempted" if summary["stopped"] == "sigterm" else "finished", "step": int(summary["step"])}


def warn_if_preempted(run_dir: str | Path, meta: dict) -> None:
    """Evaluating a run that was stopped before its last step: say so, loudly."""
    if meta.get("state") == "preempted":
        log.warning("%s was stopped (SIGTERM) at step %s before training finished: evaluating the partial model; "
                    "`jaxrec train` with the same config resumes it", run_dir, meta.get("step"))


def save_run(run_dir: str | Path, section: ModelSection, model, train: TrainConfig, config, summary: dict) -> None:
    """Write the trained weights (adapter or full model) and ``run.json`` (last, so a run dir with
    ``run.json`` is complete; ``summary``: the fit summary, see :func:`run_state`)."""
    from jaxrec.models import save_pretrained
    from jaxrec.models.peft_io import save_adapter

    run_dir = Path(run_dir)
    base = section.pretrained or str(run_dir / "base_model")
    if train.lora.mode == "lora":
        save_adapter(model, run_dir / "adapter", train.lora, base_model=base)
    else:
        save_pretrained(model, run_dir / "model")
    write_json(run_dir / RUN_FILE, {"base_model": base, "mode": train.lora.mode, **run_state(summary),
                                    "config": to_dict(config)})


def check_run_model(run_dir: str | Path, meta: dict, section: ModelSection) -> None:
    """Refuse to evaluate a run with a config whose ``model:`` section describes another model than the
    one it was trained with (the results would be labelled with the wrong model)."""
    trained = meta.get("config", {}).get("model")
    if not isinstance(trained, dict):
        return
    current = to_dict(section)
    keys = ("pretrained", "chat_template") if current.get("pretrained") or trained.get("pretrained") else \
        tuple(k for k in current if k not in ("dtype", "attention"))  # how it runs, not what it is
    for key in keys:
        if trained.get(key, current.get(key)) != current.get(key):  # a key the run predates: no evidence
            raise ConfigError(f"{run_dir} was trained with model.{key}={trained.get(key)!r}, but this config says "
                              f"{current.get(key)!r}: evaluate with the config the run was trained with")


def refuse_other_model(run_dir: str | Path, section: ModelSection) -> None:
    """Before a (re)training writes into ``run_dir``: an earlier run of another model there is refused."""
    meta = Path(run_dir) / RUN_FILE
    if meta.is_file():
        check_run_model(run_dir, json.loads(meta.read_text()), section)


def load_run(run_dir: str | Path, which: Literal["fine_tuned", "base"] = "fine_tuned", dtype: str = "float32",
             section: ModelSection | None = None):
    """(model, tokenizer) of a saved run: the fine-tuned model (LoRA merged into plain weights) or its base.
    With ``section`` (the evaluating config's model), a run of another model is refused."""
    from jaxrec.models import load_pretrained
    from jaxrec.models.lora import remove_lora
    from jaxrec.models.peft_io import load_adapter
    from jaxrec.models.tokenizer import load_tokenizer, resize_token_embeddings

    run_dir = Path(run_dir)
    meta_file = run_dir / RUN_FILE
    if not meta_file.is_file():
        raise ConfigError(f"{run_dir}: no {RUN_FILE}; train this config first (jaxrec train --config ...)")
    meta = json.loads(meta_file.read_text())
    if section is not None:
        check_run_model(run_dir, meta, section)
    warn_if_preempted(run_dir, meta)
    tokenizer = load_tokenizer(run_dir / "tokenizer")
    section = section or ModelSection()
    if which == "base":
        return _with_attention(load_pretrained(meta["base_model"], dtype=dtype), section), tokenizer
    if meta["mode"] == "full":
        return _with_attention(load_pretrained(run_dir / "model", dtype=dtype), section), tokenizer
    model = _with_attention(load_pretrained(meta["base_model"], dtype=dtype), section)
    growth = run_dir / VOCAB_GROWTH_FILE
    if growth.is_file():  # the adapter was trained on the base with added tokens: regrow it the same way
        g = json.loads(growth.read_text())
        resize_token_embeddings(model, g["vocab_size"], seed=g["seed"], noise_scale=g["noise_scale"])
    load_adapter(model, run_dir / "adapter")
    remove_lora(model, merge=True)
    return model, tokenizer


# ----------------------------------------------------------------------------- batched inference


def left_pad(seqs: Sequence[Sequence[int]], length: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids [B,length] int32, mask [B,length] int32): each sequence right-aligned (left padding);
    longer sequences keep their last ``length`` tokens."""
    ids = np.full((len(seqs), length), pad_id, np.int32)
    mask = np.zeros((len(seqs), length), np.int32)
    for row, seq in enumerate(seqs):
        tail = list(seq)[-length:]
        if tail:
            ids[row, length - len(tail):] = tail
            mask[row, length - len(tail):] = 1
    return ids, mask


def padded_length(seqs: Sequence[Sequence[int]], multiple: int = 16) -> int:
    """The longest sequence rounded up to ``multiple`` (one compiled shape for a whole set)."""
    longest = max((len(s) for s in seqs), default=1)
    return -(-longest // multiple) * multiple


def batched(fn: Callable[[np.ndarray, np.ndarray], tuple], seqs: Sequence[Sequence[int]], batch_size: int,
            pad_id: int, length: int | None = None, desc: str | None = None) -> tuple[np.ndarray, ...]:
    """Apply ``fn(ids [batch_size,L], mask)`` → tuple of arrays [batch_size,...] over all ``seqs``;
    the last batch is filled with copies of its last row; results concatenated (numpy). ``desc``: a
    progress bar (rows done) on stderr under that name."""
    from tqdm.auto import tqdm

    length = length or padded_length(seqs)
    parts = []
    with tqdm(total=len(seqs), desc=desc, unit="row", leave=False, disable=desc is None) as bar:
        for start in range(0, len(seqs), batch_size):
            chunk = list(seqs[start:start + batch_size])
            real = len(chunk)
            chunk += [chunk[-1]] * (batch_size - real)
            ids, mask = left_pad(chunk, length, pad_id)
            parts.append(tuple(np.asarray(x)[:real] for x in fn(ids, mask)))
            bar.update(real)
    return tuple(np.concatenate(cols) for cols in zip(*parts))


def generate(model, prompts: Sequence[Sequence[int]], *, num_beams: int, max_new_tokens: int, eos_id: int, pad_id: int,
             constraint=None, mode: str | None = None, num_return_sequences: int | None = None,
             length_penalty: float = 1.0, batch_size: int = 32, length: int | None = None, desc: str | None = None):
    """Beam search over every prompt (token ids); returns numpy ``(sequences [P,R,S], scores [P,R],
    item_ids [P,R])`` as :func:`jaxrec.decode.beam_search` (``constraint`` with ``mode="none"``:
    free generation that still reports which generations are exactly an item). ``length``: the
    padded prompt length (default :func:`padded_length` of ``prompts``); ``desc``: a progress bar name."""
    from jaxrec.decode import beam_search

    def run(ids, mask):
        out = beam_search(model, ids, mask, constraint, mode=mode, num_beams=num_beams,
                          num_return_sequences=num_return_sequences or num_beams, max_new_tokens=max_new_tokens,
                          length_penalty=length_penalty, eos_token_id=eos_id, pad_token_id=pad_id)
        return out.sequences, out.scores, out.item_ids

    return batched(run, prompts, batch_size, pad_id, length, desc)


def decode_texts(tokenizer, sequences: np.ndarray, eos_id: int) -> list[str]:
    """Generated token rows [P,S] → text, cut at the first EOS."""
    texts = []
    for row in np.asarray(sequences):
        end = np.flatnonzero(row == eos_id)
        texts.append(tokenizer.decode(row[: end[0] if end.size else len(row)].tolist(), skip_special_tokens=True))
    return texts


def eval_subset(total: int, limit: int | None, seed: int) -> np.ndarray:
    """int [n]: the sorted rows of ``total`` evaluation users to score: all of them, or a seeded
    sample of ``limit`` (the recipes' ``eval.users``)."""
    if limit is None or limit >= total:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).choice(total, limit, replace=False))


# ----------------------------------------------------------------------------- grounding (BIGRec, RSLLM)


def embed_texts(model, tokenizer, texts: dict[str, list[str]], batch_size: int) -> dict[str, np.ndarray]:
    """float32 [P,d] per group of texts: BIGRec's grounding embedding, the final hidden state at the
    last token of ``[BOS] + text`` (an empty text embeds its BOS, or EOS when the tokenizer has none).
    Texts of all groups are bucketed by length (multiples of 16 tokens: a few compilations, little
    padding) and returned in their groups' order."""
    from jaxrec.ground.embed import Embedder

    embedder = Embedder(model, pooling="last")
    names = list(texts)
    seqs = [ids or [tokenizer.eos_token_id] for name in names for ids in prompt_ids(tokenizer, model, texts[name])]
    buckets = np.asarray([padded_length([s]) for s in seqs])
    out = np.empty((len(seqs), model.config.hidden_size), np.float32)
    for length in np.unique(buckets):
        rows = np.flatnonzero(buckets == length)
        out[rows] = batched(lambda ids, mask: (embedder(ids, mask),), [seqs[i] for i in rows], batch_size,
                            tokenizer.pad_token_id, int(length), f"embed {length}-token texts")[0]
    ends = np.cumsum([len(texts[name]) for name in names])
    return dict(zip(names, np.split(out, ends[:-1])))


def ground_ranks(queries: np.ndarray, items: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """1-based full-catalog ranks [Q] of ``targets`` by L2 distance (closest first)."""
    from jaxrec.ground.rank import target_ranks

    return np.asarray(target_ranks(queries, items, targets, metric="l2"))
