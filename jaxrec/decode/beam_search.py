"""Constrained beam search in one jitted program, with HF ``generate`` semantics.

Semantics (those of transformers 5.x ``GenerationMixin._beam_search`` with
``prefix_allowed_tokens_fn``; ``length`` below = number of generated tokens, EOS included):

* Step t scores every allowed continuation of every running beam by
  ``running_score + log_softmax(logits)[token]`` — the log-softmax is over the FULL vocabulary, the
  constraint only removes candidates (HF adds -inf after the log-softmax; no renormalisation).
* The best 2K candidates (K = num_beams) are kept. Those ending in EOS, and all of them at the last
  step (``t + 1 == max_new_tokens``), are "finished". The best K unfinished ones run on.
* A finished candidate among the top K of the 2K enters the finished pool with score
  ``cumulative_log_prob / length ** length_penalty`` (HF's ``sequences_scores``); the pool keeps the K
  best. Nothing enters a user's pool once ``early_stopping is True`` and the pool is full, or once
  HF's heuristic says no running beam can improve on it: with ``early_stopping`` False it compares
  ``best_running / (t + 1) ** length_penalty`` (``"never"`` with length_penalty > 0:
  ``/ max_new_tokens ** length_penalty``) against the pool's worst score.
* Output: the pool's best ``num_return_sequences``, best first.

Differences from HF, only where HF returns filler: HF starts beams 1..K-1 at -1e9 (not -inf), so
when fewer than R real hypotheses exist it pads its output with copies scored about -1e9/length; here
such slots have score -inf, item id -1 and pad tokens. HF's fallback for a user whose every beam has
no allowed token (forcing the mask) is unreachable with finite logits and is not reproduced.

Program layout: prefill (prompt cache stored once per user), then steps 0..H-1 unrolled (each with its
depth's static candidate width, so a wide first level costs K x 256, a deep one K x 1), then a
``lax.while_loop`` over the remaining steps with the widest remaining width, which stops as soon as no
user can change its result. The model's per-beam cache is reordered with the chosen parents each step.
Inputs sharded over the batch axis stay sharded (everything is per user).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

from jaxrec.decode.constraint import Constraint, per_level_constraint, trie_constraint, unconstrained
from jaxrec.decode.trie import ItemTrie
from jaxrec.errors import JaxrecError

NEG_INF = -jnp.inf
UNROLLED_STEPS = 8  # steps compiled one by one (own candidate width); the rest run in a while_loop

Mode = Literal["trie", "per_level", "none"]


class BeamSearchOutput(NamedTuple):
    """sequences [B,R,S] int32 generated tokens (pad after EOS); scores [B,R] f32 (HF
    sequences_scores, -inf for an empty slot); item_ids [B,R] int32 (-1 = not an item)."""

    sequences: jax.Array
    scores: jax.Array
    item_ids: jax.Array


@dataclass(frozen=True)
class SearchSpec:
    """Static settings of one compiled search."""

    num_beams: int
    num_return_sequences: int
    max_new_tokens: int
    eos_token_id: int
    pad_token_id: int
    track_items: bool  # walk the item trie alongside (modes other than "trie")
    unrolled_steps: int  # steps compiled one by one; the rest run in a while_loop


@struct.dataclass
class Scoring:
    """Run-time scoring settings (traced, so changing them does not recompile).

    length_penalty f32 []; stop_when_full bool [] (early_stopping is True);
    never bool [] (early_stopping == "never").
    """

    length_penalty: jax.Array
    stop_when_full: jax.Array
    never: jax.Array


@struct.dataclass
class Beams:
    """Running beams and finished pool of every user. B users, K beams, S = max_new_tokens.

    tokens [B,K,S], score [B,K] (-inf = no beam), node [B,K] (constraint state), item_node [B,K]
    (item-trie node); fin_* the same for the finished pool; fin_done [B,K]; open [B] (HF's
    ``is_early_stop_heuristic_unsatisfied``).
    """

    tokens: jax.Array
    score: jax.Array
    node: jax.Array
    item_node: jax.Array
    fin_tokens: jax.Array
    fin_score: jax.Array
    fin_item_node: jax.Array
    fin_done: jax.Array
    open: jax.Array


def _gather(x: jax.Array, index: jax.Array) -> jax.Array:
    """x [B,K,...] rows picked by index [B,J] -> [B,J,...]."""
    index = index.reshape(index.shape + (1,) * (x.ndim - 2))
    return jnp.take_along_axis(x, index, axis=1)


def _init_beams(batch: int, spec: SearchSpec) -> Beams:
    k, s = spec.num_beams, spec.max_new_tokens
    tokens = jnp.full((batch, k, s), spec.pad_token_id, jnp.int32)
    score = jnp.full((batch, k), NEG_INF, jnp.float32).at[:, 0].set(0.0)
    zeros = jnp.zeros((batch, k), jnp.int32)
    return Beams(tokens, score, zeros, zeros, tokens, jnp.full((batch, k), NEG_INF, jnp.float32),
                 zeros, jnp.zeros((batch, k), bool), jnp.ones((batch,), bool))


def _select(beams: Beams, log_probs: jax.Array, t, depth: int | None, constraint: Constraint,
            items: Constraint, scoring: Scoring, spec: SearchSpec) -> tuple[Beams, jax.Array]:
    """One beam-search step. log_probs [B,K',V] f32 of the K' live beams (K' = 1 at step 0: all
    beams share the prompt). Returns the new beams and parent [B,K] (old beam each continues)."""
    batch, live, _ = log_probs.shape
    k = spec.num_beams
    node = beams.node[:, :live]
    tokens, nxt, valid = constraint.children(node, depth)  # [B,K',C]
    cand_lp = log_probs if constraint.is_full(depth) else jnp.take_along_axis(log_probs, tokens, -1)
    acc = jnp.where(valid, beams.score[:, :live, None] + cand_lp, NEG_INF)  # [B,K',C]
    if acc.shape[-1] > 2 * k:  # per-beam top-2K first: same winners and tie order, less to sort
        acc, keep = jax.lax.top_k(acc, 2 * k)
        tokens, nxt = (jnp.take_along_axis(x, keep, -1) for x in (tokens, nxt))
    width = acc.shape[-1]
    acc = acc.reshape(batch, -1)
    if acc.shape[1] < 2 * k:
        acc = jnp.pad(acc, ((0, 0), (0, 2 * k - acc.shape[1])), constant_values=NEG_INF)
    top_score, top_index = jax.lax.top_k(acc, 2 * k)  # [B,2K], ties: lower beam, then lower token
    alive = top_score > NEG_INF
    parent = jnp.minimum(top_index // width, live - 1)
    flat = jnp.minimum(top_index, live * width - 1)
    token = jnp.where(alive, jnp.take_along_axis(tokens.reshape(batch, -1), flat, 1), spec.pad_token_id)
    next_node = jnp.where(alive, jnp.take_along_axis(nxt.reshape(batch, -1), flat, 1), constraint.dead)
    cand_tokens = _gather(beams.tokens, parent).at[:, :, t].set(token)
    if spec.track_items:
        item_node = items.step(_gather(beams.item_node, parent), token, depth)
    else:
        item_node = next_node
    finished = (token == spec.eos_token_id) | (t + 1 == spec.max_new_tokens)

    # running beams: best K unfinished
    run_score, run_index = jax.lax.top_k(jnp.where(finished, NEG_INF, top_score), k)
    new_parent = _gather(parent, run_index)

    # finished pool: merge the finished candidates among the top K
    lp = scoring.length_penalty
    length = jnp.asarray(t + 1, jnp.float32)
    entering = finished & alive & (jnp.arange(2 * k) < k)[None, :]
    pool_full = jnp.all(beams.fin_done, axis=1) & scoring.stop_when_full
    entering = entering & beams.open[:, None] & ~pool_full[:, None]
    cand_final = jnp.where(entering, top_score / jnp.power(length, lp), NEG_INF)
    merged_score = jnp.concatenate([beams.fin_score, cand_final], axis=1)
    keep_score, keep = jax.lax.top_k(merged_score, k)
    fin_done = _gather(jnp.concatenate([beams.fin_done, entering], 1), keep)
    fin_tokens = _gather(jnp.concatenate([beams.fin_tokens, cand_tokens], 1), keep)
    fin_item_node = _gather(jnp.concatenate([beams.fin_item_node, item_node], 1), keep)

    # HF's early-stop heuristic, evaluated after the step (cur_len = t + 1 generated tokens)
    hypothetical = jnp.where(scoring.never & (lp > 0), float(spec.max_new_tokens), length)
    best_running = run_score[:, 0] / jnp.power(hypothetical, lp)
    worst_finished = jnp.where(fin_done, jnp.min(keep_score, 1, keepdims=True), NEG_INF)
    still_open = beams.open & jnp.any(best_running[:, None] > worst_finished, axis=1)

    new = Beams(_gather(cand_tokens, run_index), run_score, _gather(next_node, run_index),
                _gather(item_node, run_index), fin_tokens, keep_score, fin_item_node, fin_done,
                still_open)
    return new, new_parent


def _can_change(beams: Beams, scoring: Scoring) -> jax.Array:
    """False once no user's result can change any more (HF's loop-exit test, per batch)."""
    full = jnp.all(beams.fin_done, axis=1) & scoring.stop_when_full
    running = jnp.any(beams.score > NEG_INF, axis=1)
    return jnp.any(beams.open & ~full & running)


def _search(graphdef, params, input_ids, attention_mask, constraint: Constraint, items: Constraint,
            item_of_node, scoring: Scoring, spec: SearchSpec) -> BeamSearchOutput:
    model = nnx.merge(graphdef, params)
    steps = spec.max_new_tokens
    state, logits0 = model.prefill(input_ids, attention_mask, num_beams=spec.num_beams,
                                   max_new_tokens=steps)
    log_probs = jax.nn.log_softmax(logits0.astype(jnp.float32), axis=-1)[:, None, :]
    beams, parent = _select(_init_beams(input_ids.shape[0], spec), log_probs, 0, 0, constraint, items,
                            scoring, spec)

    def advance(beams, state, parent, t, depth):
        if not (isinstance(t, int) and t < 2):  # after step 0 the per-beam cache is still empty
            state = model.reorder_beams(state, parent)
        logits, state = model.decode_step(beams.tokens[:, :, t - 1], state, jnp.asarray(t - 1, jnp.int32))
        log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        beams, parent = _select(beams, log_probs, t, depth, constraint, items, scoring, spec)
        return beams, state, parent

    unrolled = min(steps, spec.unrolled_steps)
    for t in range(1, unrolled):
        beams, state, parent = advance(beams, state, parent, t, t)
    if unrolled < steps:
        def cond(carry):
            t, beams, _, _ = carry
            return (t < steps) & _can_change(beams, scoring)

        def body(carry):
            t, beams, state, parent = carry
            beams, state, parent = advance(beams, state, parent, t, None)
            return t + 1, beams, state, parent

        _, beams, _, _ = jax.lax.while_loop(cond, body, (jnp.int32(unrolled), beams, state, parent))

    r = spec.num_return_sequences
    done = beams.fin_done[:, :r]
    node = jnp.clip(beams.fin_item_node[:, :r], 0, item_of_node.shape[0] - 1)
    item_ids = jnp.where(done, item_of_node[node], -1)
    sequences = jnp.where(done[..., None], beams.fin_tokens[:, :r], spec.pad_token_id)
    return BeamSearchOutput(sequences, jnp.where(done, beams.fin_score[:, :r], NEG_INF), item_ids)


_search_jit = jax.jit(_search, static_argnames=("graphdef", "spec"))


@functools.lru_cache(maxsize=8)
def _automata(trie: ItemTrie | None, mode: str, vocab_size: int, dense_depths: int | None):
    """(constraint, item trie or None, item_of_node), built once per trie object and settings."""
    items = trie_constraint(trie, vocab_size, dense_depths) if trie is not None else None
    constraint = {"trie": lambda: items, "none": lambda: unconstrained(vocab_size),
                  "per_level": lambda: per_level_constraint(trie, vocab_size)}[mode]()
    return constraint, items, _item_of_node(trie, (constraint if items is None else items).dead + 1)


def _item_of_node(trie: ItemTrie | None, size: int) -> jax.Array:
    """[size] int32 item id of each (padded) node, -1 beyond the trie's leaves."""
    known = trie.item_of_node if trie is not None else np.zeros(0, np.int32)
    return jnp.asarray(np.pad(known, (0, size - len(known)), constant_values=-1), jnp.int32)


def _check(trie: ItemTrie | None, mode: str, vocab_size: int, input_ids, attention_mask, num_beams: int,
           num_return_sequences: int, max_new_tokens: int, eos_token_id: int, early_stopping,
           model_config, model) -> None:
    if mode not in ("trie", "per_level", "none"):
        raise JaxrecError(f"beam_search: mode must be 'trie', 'per_level' or 'none', got {mode!r}")
    if trie is None and mode != "none":
        raise JaxrecError(f"beam_search: mode {mode!r} needs constraint=ItemTrie(...), got None")
    if early_stopping not in (True, False, "never"):
        raise JaxrecError(f"beam_search: early_stopping must be True, False or 'never', got {early_stopping!r}")
    if num_beams < 1 or not 1 <= num_return_sequences <= num_beams:
        raise JaxrecError(f"beam_search: need 1 <= num_return_sequences ({num_return_sequences}) <= "
                          f"num_beams ({num_beams})")
    if input_ids.ndim != 2 or attention_mask.shape != input_ids.shape:
        raise JaxrecError(f"beam_search: input_ids and attention_mask must both be [batch, length], got "
                          f"{input_ids.shape} and {attention_mask.shape}")
    if input_ids.shape[0] == 0:
        raise JaxrecError("beam_search: the batch is empty (input_ids has 0 rows)")
    if not jnp.issubdtype(input_ids.dtype, jnp.integer):
        raise JaxrecError(f"beam_search: input_ids must be integer token ids, got dtype {input_ids.dtype}")
    # a model that injects item embeddings (RSLLM) reads id -1-i as item i's placeholder
    placeholders = int(getattr(getattr(model, "embed_tokens", None), "num_items", 0) or 0)
    attended = attention_mask.astype(bool)
    lo, hi = (int(jnp.min(jnp.where(attended, input_ids, 0))), int(jnp.max(jnp.where(attended, input_ids, 0))))
    if lo < -placeholders or hi >= vocab_size:
        bad = lo if lo < -placeholders else hi
        row, col = np.argwhere(np.asarray(attended & (input_ids == bad)))[0]
        raise JaxrecError(f"beam_search: input_ids[{row}, {col}] = {bad} is outside the model's vocabulary "
                          f"({-placeholders}..{vocab_size - 1})")
    if not 0 <= eos_token_id < vocab_size:
        raise JaxrecError(f"beam_search: eos_token_id {eos_token_id} is outside the vocabulary ({vocab_size})")
    if trie is not None:
        if trie.eos_id != eos_token_id:
            raise JaxrecError(f"beam_search: the item trie ends items with EOS {trie.eos_id} but "
                              f"eos_token_id is {eos_token_id}")
        if trie.max_token >= vocab_size:
            raise JaxrecError(f"beam_search: an item sequence has token id {trie.max_token}, outside the "
                              f"model's vocabulary of {vocab_size}")
        if max_new_tokens < trie.max_length + 1:
            raise JaxrecError(f"beam_search: max_new_tokens={max_new_tokens} is shorter than the longest "
                              f"item ({trie.max_length} tokens + EOS = {trie.max_length + 1})")
    max_positions = getattr(model_config, "max_position_embeddings", None)
    if max_positions and input_ids.shape[1] + max_new_tokens > max_positions:
        raise JaxrecError(f"beam_search: prompt length {input_ids.shape[1]} + max_new_tokens "
                          f"{max_new_tokens} exceeds the model's max_position_embeddings {max_positions}")


def beam_search(model, input_ids, attention_mask, constraint: ItemTrie | None = None, *,
                mode: Mode | None = None, num_beams: int = 20, num_return_sequences: int | None = None,
                max_new_tokens: int | None = None, length_penalty: float = 1.0,
                early_stopping: bool | str = False, eos_token_id: int | None = None,
                pad_token_id: int | None = None, dense_depths: int | None = None) -> BeamSearchOutput:
    """Beam search of ``num_beams`` beams per user, constrained to the items of ``constraint``.

    model: implements ``prefill`` / ``decode_step`` / ``reorder_beams`` (jaxrec.models protocol);
    input_ids, attention_mask [B,T] (decoder-only: left padded); constraint: the item trie (None =
    unconstrained, item_ids all -1); mode: "trie" (default with a trie), "per_level" (LC-Rec), "none";
    max_new_tokens: default longest item + EOS; eos/pad ids: default the trie's EOS / model config.
    Returns :class:`BeamSearchOutput` (sequences [B,R,S], scores [B,R], item_ids [B,R]).
    """
    config = model.config
    vocab_size = int(config.vocab_size)
    if eos_token_id is None:
        eos_token_id = constraint.eos_id if constraint is not None else int(config.eos_token_id)
    if pad_token_id is None:
        pad_token_id = getattr(config, "pad_token_id", None)
        pad_token_id = eos_token_id if pad_token_id is None else int(pad_token_id)
    mode = mode or ("trie" if constraint is not None else "none")
    num_return_sequences = num_return_sequences or num_beams
    if max_new_tokens is None:
        if constraint is None:
            raise JaxrecError("beam_search: without a constraint, max_new_tokens must be given")
        max_new_tokens = constraint.max_length + 1
    input_ids, attention_mask = jnp.asarray(input_ids), jnp.asarray(attention_mask, jnp.int32)
    _check(constraint, mode, vocab_size, input_ids, attention_mask, num_beams, num_return_sequences,
           max_new_tokens, eos_token_id, early_stopping, config, model)

    input_ids = input_ids.astype(jnp.int32)
    automaton, items, item_of_node = _automata(constraint, mode, vocab_size, dense_depths)
    scoring = Scoring(jnp.float32(length_penalty), jnp.bool_(early_stopping is True),
                      jnp.bool_(early_stopping == "never"))
    spec = SearchSpec(num_beams, num_return_sequences, max_new_tokens, int(eos_token_id),
                      int(pad_token_id),
                      track_items=mode != "trie" and constraint is not None,
                      unrolled_steps=UNROLLED_STEPS)
    graphdef, params = nnx.split(model)
    return _search_jit(graphdef, params, input_ids, attention_mask, automaton,
                       items if items is not None else automaton, item_of_node, scoring, spec=spec)
