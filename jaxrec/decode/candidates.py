"""Scoring given answers instead of searching: the log-likelihood of every candidate token sequence.

Aligned T5 ranks a candidate list (and rates 1–5) by how likely the model finds each answer. The
prompt is prefilled once with one beam per candidate and the candidates are fed as the beams'
tokens (teacher forcing through the decoding protocol of :mod:`jaxrec.models.decoding`), so C
candidates cost one prefill plus S decode steps, not C forward passes.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxrec.decode.driver import batched, padded_length


def _log_likelihoods(graphdef, params, input_ids, attention_mask, candidates, lengths):
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


_log_likelihoods_jit = jax.jit(_log_likelihoods, static_argnames="graphdef")


def token_matrix(seqs: Sequence[Sequence[int]], eos: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """(tokens int32 [N, S]: each sequence + EOS, padded; lengths int32 [N] including EOS)."""
    lengths = np.asarray([len(s) + 1 for s in seqs], np.int32)
    tokens = np.full((len(seqs), int(lengths.max())), pad, np.int32)
    for row, seq in enumerate(seqs):
        tokens[row, :len(seq) + 1] = [*seq, eos]
    return tokens, lengths


def candidate_log_likelihoods(model, prompts: Sequence[Sequence[int]], candidates: np.ndarray, lengths: np.ndarray,
                              pad_id: int, batch_size: int, desc: str | None = None) -> np.ndarray:
    """float32 [P, C]: log-likelihood of every candidate answer (tokens [P,C,S] incl. EOS, ``lengths``
    [P,C]) given its prompt (token ids, EOS-terminated for T5). One compilation per shape."""
    graphdef, params = nnx.split(model)

    def run(ids, mask, cands, lens):
        return (_log_likelihoods_jit(graphdef, params, ids, mask, jnp.asarray(cands), jnp.asarray(lens)),)

    return batched(run, prompts, batch_size, pad_id, padded_length(prompts), desc, rows=(candidates, lengths))[0]
