"""Shared plumbing of the LLM recipes (BIGRec, LC-Rec, aligned T5, RSLLM): a few composable functions.

* :func:`make_tokenizer` — the tokenizer of a ``model:`` section (:class:`~jaxrec.models.section.ModelSection`:
  a local Hugging Face directory, or a byte-level BPE trained on the dataset's text for a from-scratch
  model), saved in the run dir; :func:`encode` — text → token ids
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

import json
import logging
import time
from pathlib import Path
from typing import Callable, Iterable, Literal, Sequence

from flax import nnx

from jaxrec.atomic import write_json
from jaxrec.config import to_dict
from jaxrec.data.tasks import Example
from jaxrec.errors import ConfigError
from jaxrec.models.prompts import bos_id, encode
from jaxrec.models.registry import is_seq2seq
from jaxrec.models.section import ModelSection, with_attention
from jaxrec.train.config import TrainConfig

RUN_FILE = "run.json"
VOCAB_GROWTH_FILE = "vocab_growth.json"
log = logging.getLogger("jaxrec.methods.llm")


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
        return with_attention(load_pretrained(meta["base_model"], dtype=dtype), section), tokenizer
    if meta["mode"] == "full":
        return with_attention(load_pretrained(run_dir / "model", dtype=dtype), section), tokenizer
    model = with_attention(load_pretrained(meta["base_model"], dtype=dtype), section)
    growth = run_dir / VOCAB_GROWTH_FILE
    if growth.is_file():  # the adapter was trained on the base with added tokens: regrow it the same way
        g = json.loads(growth.read_text())
        resize_token_embeddings(model, g["vocab_size"], seed=g["seed"], noise_scale=g["noise_scale"])
    load_adapter(model, run_dir / "adapter")
    remove_lora(model, merge=True)
    return model, tokenizer
