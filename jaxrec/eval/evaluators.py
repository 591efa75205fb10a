"""The evaluator kinds every recipe composes: a few functions, each one protocol, each result labelled.

* :func:`constrained_generation` — beam search constrained to the catalog (an item trie); metrics of the
  returned lists (a target outside the beams is a miss). LC-Rec, TIGER, BIGRec, RSLLM, aligned T5 retrieval.
* :func:`free_generation` + :func:`grounding` — unconstrained text, then every item ranked by the L2
  distance of its text embedding to the generation's (BIGRec's grounding; RSLLM).
* :func:`candidate_ranking` — the log-likelihood of each candidate answer (aligned T5 ranking).
* :func:`popularity` / :func:`popularity_among` — the score-based baseline on the same users (full catalog,
  or the same candidates).
* :func:`protocol` — the label every result carries: what was ranked, how, and whether the user's history
  items stay in the ranking (they do for every generative decoder: beams may return them).

Each returns plain metric dicts (:mod:`jaxrec.eval.metrics`); the recipe lists which ones run in its YAML
``eval:`` section and puts their outputs under its own keys.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from jaxrec.decode.candidates import candidate_log_likelihoods
from jaxrec.decode.driver import decode_texts, generate
from jaxrec.eval.metrics import list_metrics, metrics_from_ranks
from jaxrec.eval.ranking import ranks_among, static_ranks
from jaxrec.ground.rank import target_ranks


def protocol(kind: str, num_items: int, *, num_beams: int | None = None, exclude_history: bool = False) -> str:
    """A one-line label of how a result was measured (``kind``: constrained | grounding | scores | candidates)."""
    history = "history items excluded" if exclude_history else "history items kept in the ranking"
    ranked = {"constrained": f"beam search constrained to all {num_items} items, {num_beams} beams; a target "
                             f"outside the beams is a miss",
              "grounding": f"free generation grounded to all {num_items} items by L2 distance of text embeddings",
              "scores": f"every one of {num_items} items scored and ranked",
              "candidates": "a sampled candidate set ranked by answer log-likelihood"}[kind]
    return f"{ranked}; ties to the lower item id; {history}"


def constrained_generation(model, prompts: Sequence[Sequence[int]], targets: np.ndarray, trie, ks: Sequence[int], *,
                           num_beams: int, eos_id: int, pad_id: int, mode: str | None = None, batch_size: int = 32,
                           length: int | None = None, length_penalty: float = 1.0, desc: str | None = None
                           ) -> tuple[dict, np.ndarray, np.ndarray]:
    """(metrics of the beam lists + ``item_rate``, items int32 [P, num_beams] (-1: not an item), best beam's
    tokens [P, S]) for ``prompts`` (token ids) and their ``targets`` [P]."""
    seqs, _, items = generate(model, prompts, constraint=trie, mode=mode, num_beams=num_beams,
                              max_new_tokens=trie.max_length + 1, eos_id=eos_id, pad_id=pad_id,
                              length_penalty=length_penalty, batch_size=batch_size, length=length, desc=desc)
    return {**list_metrics(items, targets, ks), "item_rate": float(np.mean(items >= 0))}, items, seqs[:, 0]


def free_generation(model, tokenizer, prompts: Sequence[Sequence[int]], trie, *, num_beams: int,
                    max_new_tokens: int, length_penalty: float = 1.0, batch_size: int = 32, length: int | None = None,
                    desc: str | None = None) -> tuple[list[str], float]:
    """(the best beam's text per prompt, the fraction that is exactly an item of ``trie``)."""
    eos = tokenizer.eos_token_id
    seqs, _, items = generate(model, prompts, constraint=trie, mode="none", num_beams=num_beams,
                              num_return_sequences=1, max_new_tokens=max_new_tokens, eos_id=eos,
                              pad_id=tokenizer.pad_token_id, length_penalty=length_penalty, batch_size=batch_size,
                              length=length, desc=desc)
    return decode_texts(tokenizer, seqs[:, 0], eos), float(np.mean(items[:, 0] >= 0))


def grounding(queries: dict[str, np.ndarray], items: np.ndarray, targets: dict[str, np.ndarray],
              ks: Sequence[int], exclude: dict[str, np.ndarray] | None = None) -> dict[str, dict]:
    """Per part: full-catalog metrics of ``targets`` when items [N,d] are ranked by L2 distance to each
    query [Q,d] (the tiled kernel of :mod:`jaxrec.ground.rank`); ``exclude`` (per part int [Q,E], -1 pads):
    items left out of each query's ranking (the target always stays)."""
    return {part: metrics_from_ranks(np.asarray(target_ranks(q, items, targets[part], metric="l2",
                                                             exclude=None if exclude is None else exclude[part])), ks)
            for part, q in queries.items()}


def padded_ids(rows: Sequence[Sequence[int]]) -> np.ndarray:
    """int32 [Q, max len] of per-query item lists, -1 padded (the kernels' ``exclude`` argument)."""
    out = np.full((len(rows), max((len(r) for r in rows), default=0) or 1), -1, np.int32)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


def candidate_ranking(model, prompts: Sequence[Sequence[int]], candidates: np.ndarray, answers: np.ndarray,
                      lengths: np.ndarray, targets: np.ndarray, ks: Sequence[int], *, pad_id: int, batch_size: int,
                      desc: str | None = None) -> dict:
    """Metrics of ``targets`` among their candidates [P,C] (item ids) ranked by the log-likelihood of each
    candidate's answer tokens (``answers`` [N,S] incl. EOS, ``lengths`` [N], rows = item ids)."""
    scores = candidate_log_likelihoods(model, prompts, answers[candidates], lengths[candidates], pad_id, batch_size,
                                       desc)
    return metrics_from_ranks(ranks_among(scores, candidates, targets), ks)


def popularity(counts: np.ndarray, targets: np.ndarray, ks: Sequence[int],
               histories: Sequence[np.ndarray] | None = None) -> dict:
    """Full-catalog metrics of ``targets`` when every user gets the catalog ranked by ``counts`` [N];
    with ``histories`` (per user, item ids) the user's history items leave the ranking (the target stays)."""
    table = static_ranks(counts)
    ranks = table[targets]
    if histories is not None:
        ranks = ranks - np.asarray([np.count_nonzero(table[np.setdiff1d(h, [t])] < table[t])
                                    for h, t in zip(histories, targets)], np.int64)
    return metrics_from_ranks(ranks, ks)


def popularity_among(counts: np.ndarray, candidates: np.ndarray, targets: np.ndarray, ks: Sequence[int]) -> dict:
    """Metrics of ``targets`` among their candidates [P,C] ranked by ``counts`` [N]."""
    return metrics_from_ranks(ranks_among(counts[candidates].astype(np.float32), candidates, targets), ks)
