"""The run directory of an LLM recipe: what training writes and evaluation reloads.

::

    run.json          {"base_model": dir, "mode": "lora"|"full", "state": "finished"|"preempted",
                       "step": N, "config": {...}}   (written last: a run dir with it is complete)
    tokenizer/        HF tokenizer files (pad token set)
    base_model/       from-scratch runs only: the initial weights (HF safetensors)
    adapter/          mode lora: PEFT adapter (adapter_config.json + adapter_model.safetensors)
    model/            mode full: the fine-tuned weights (HF safetensors)
    vocab_growth.json tokens added to a pretrained vocabulary: how to regrow the base before the adapter

:func:`make_tokenizer` builds the run's tokenizer (a pretrained one, or a BPE trained on the data);
:func:`start_run` / :func:`save_run` / :func:`load_run` write and read the rest; a run of another
model in the same directory is refused before anything is overwritten.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable, Iterable, Literal

from jaxrec.atomic import write_json
from jaxrec.config import to_dict
from jaxrec.errors import ConfigError
from jaxrec.models.hf_io import load_pretrained, save_pretrained
from jaxrec.models.lora import LoraConfig, remove_lora
from jaxrec.models.peft_io import load_adapter, save_adapter
from jaxrec.models.section import ModelSection, with_attention
from jaxrec.models.tokenizer import load_tokenizer, resize_token_embeddings, save_tokenizer, train_bpe_tokenizer

RUN_FILE = "run.json"
VOCAB_GROWTH_FILE = "vocab_growth.json"
log = logging.getLogger("jaxrec.models.run_dir")


def make_tokenizer(section: ModelSection, texts: Callable[[], Iterable[str]], run_dir: str | Path, *,
                   chat: bool = False):
    """Build the run's tokenizer and save it to ``run_dir/tokenizer`` (where :func:`load_run` reads it).

    Pretrained: the model directory's tokenizer (a missing pad token is set to unk or eos).
    From scratch: a byte-level BPE of ``section.vocab_size`` tokens trained on ``texts()``.
    ``chat``: the recipe formats its prompts with :func:`chat_prompts`; others refuse
    ``model.chat_template: true`` rather than ignore it.
    """
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


def start_run(run_dir: str | Path, section: ModelSection, model, tokenizer) -> None:
    """Before training: for a from-scratch model, keep its initial weights as the run's base model. A
    base model already there (a resumed run) is kept; one of another architecture or size is refused,
    before anything is written."""
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


def save_run(run_dir: str | Path, section: ModelSection, model, lora: LoraConfig, config, summary: dict) -> None:
    """Write the trained weights (adapter or full model, as ``lora.mode`` says) and ``run.json`` (last, so a
    run dir with ``run.json`` is complete; ``config``: the recipe's whole config; ``summary``: the fit
    summary, see :func:`run_state`)."""
    run_dir = Path(run_dir)
    base = section.pretrained or str(run_dir / "base_model")
    if lora.mode == "lora":
        save_adapter(model, run_dir / "adapter", lora, base_model=base)
    else:
        save_pretrained(model, run_dir / "model")
    write_json(run_dir / RUN_FILE, {"base_model": base, "mode": lora.mode, **run_state(summary),
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
