"""Collisions (items sharing all codes): rate, code usage, and LC-Rec-style resolution rounds.

Resolution, per round: group the items by their full code; in every group of more than one item,
re-assign the last-level code with Sinkhorn-Knopp over the group's last-level residuals (costs scaled
to [-1, 1] per group, as LC-Rec does per colliding group). Two refinements over LC-Rec make rounds
converge where LC-Rec's plain per-row argmax can loop forever (e.g. on duplicate embeddings):
codes already held by other items with the same prefix are forbidden, and a group's members take
distinct codes, greedily by plan value. Rounds stop when no collision is left, when a round
changes nothing, or after ``rounds``. What still collides then (a prefix holding more than K
items) is, with ``on_remaining: extra_level``, told apart by one extra level appended to every
item — TIGER's fix: the item's rank among the items sharing its code (0 for items without a
collision); with ``keep`` it is left and reported.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from jaxrec.index.kmeans import squared_distances
from jaxrec.index.sinkhorn import center_costs, sinkhorn_log_plan


@dataclasses.dataclass(frozen=True)
class ResolveConfig:
    """Collision-resolution settings (LC-Rec: 20 rounds, ε 0.003)."""

    rounds: int = 20
    epsilon: float = 0.003
    iters: int = 50
    on_remaining: Literal["extra_level", "keep"] = "extra_level"

    def __post_init__(self):
        if self.rounds < 0 or self.epsilon <= 0 or self.iters < 1:
            raise ValueError("need rounds >= 0, epsilon > 0 and iters >= 1")


@jax.jit
def collision_rate(codes: jax.Array) -> jax.Array:
    """Fraction of items whose code row [L] duplicates an earlier item's: 1 - #unique rows / N.

    codes: int [N, L]. Jittable (a lexicographic sort, no host work).
    """
    order = jnp.lexsort(tuple(codes[:, level] for level in reversed(range(codes.shape[1]))))
    ranked = codes[order]
    duplicates = jnp.sum(jnp.all(ranked[1:] == ranked[:-1], axis=1))
    return duplicates / codes.shape[0]


def code_usage(codes: np.ndarray, codebook_size: int) -> dict[str, list]:
    """Per level: fraction of the K codes used, perplexity (exp entropy) and the largest code's item count."""
    usage, perplexity, largest = [], [], []
    for level in range(codes.shape[1]):
        counts = np.bincount(codes[:, level], minlength=codebook_size)
        p = counts[counts > 0] / counts.sum()
        usage.append(float(np.mean(counts[:codebook_size] > 0)))
        perplexity.append(float(np.exp(-np.sum(p * np.log(p)))))
        largest.append(int(counts.max()))
    return {"used_fraction": usage, "perplexity": perplexity, "max_items_per_code": largest}


def _next_power_of_two(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


@functools.partial(jax.jit, static_argnames=("epsilon", "iters", "max_group_size"))
def reassign_groups(items: jax.Array, groups: jax.Array, allowed: jax.Array, residuals: jax.Array,
                    codebook: jax.Array, *, epsilon: float, iters: int, max_group_size: int) -> jax.Array:
    """New last-level codes for the members of colliding groups: distinct within a group, allowed only.

    Args:
      items: int32 [C] item id of each colliding row, -1 = padding.
      groups: int32 [C] group of each row in 0..G-1 (padding rows: any group).
      allowed: bool [G, K] codes each group may take.
      residuals: float [N, D] each item's last-level residual.
      codebook: float [K, D] the last level's codebook.
      max_group_size: static bound on rows per group (the number of greedy steps).
    Returns:
      int32 [C] new codes; -1 where no allowed code was left (and for padding rows).
    """
    num_groups, k = allowed.shape
    rows = items >= 0
    mask = rows[:, None] & allowed[groups]
    costs = center_costs(squared_distances(residuals[jnp.maximum(items, 0)], codebook), mask, groups, num_groups)
    log_plan = sinkhorn_log_plan(costs, epsilon, iters, rows, allowed, groups, num_groups)
    row_ids = jnp.arange(items.shape[0])

    def take_best(_, carry):  # in every group, the free (row, code) pair of highest plan value
        new, row_free, code_free = carry
        score = jnp.where(mask & row_free[:, None] & code_free[groups], log_plan, -jnp.inf)
        row_code, row_score = jnp.argmax(score, -1), jnp.max(score, -1)
        group_score = jax.ops.segment_max(row_score, groups, num_segments=num_groups)
        wins = jnp.isfinite(row_score) & (row_score == group_score[groups])
        winner = jax.ops.segment_min(jnp.where(wins, row_ids, items.shape[0]), groups, num_segments=num_groups)
        chosen = wins & (winner[groups] == row_ids)  # ties: the lowest row
        new = jnp.where(chosen, row_code, new)
        code_free = code_free.at[groups, row_code].min(~chosen)
        return new, row_free & ~chosen, code_free

    init = (jnp.full(items.shape, -1, jnp.int32), rows, allowed)
    return jax.lax.fori_loop(0, min(max_group_size, k), take_best, init)[0]


def _colliding_groups(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(items [C] in colliding groups, their dense group number [C]), items sorted by group then id."""
    _, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    items = np.nonzero(counts[inverse] > 1)[0]
    _, group = np.unique(inverse[items], return_inverse=True)
    order = np.argsort(group, kind="stable")
    return items[order], group.reshape(-1)[order]


def resolution_round(codes: np.ndarray, residuals: jax.Array, codebook: jax.Array, config: ResolveConfig,
                     min_padding: tuple[int, int, int] = (1, 1, 1)) -> tuple[np.ndarray, tuple[int, int, int]]:
    """One round: codes int [N, L] with the last level of colliding items re-assigned.

    Rows, groups and the largest group size are padded to powers of two, at least ``min_padding``,
    so that later rounds reuse the first round's compiled step; returns (new codes, padding used).
    """
    items, group = _colliding_groups(codes)
    num_groups = int(group[-1]) + 1
    sizes = np.bincount(group)
    padding = tuple(max(_next_power_of_two(v), m) for v, m in
                    zip((len(items), num_groups, int(sizes.max())), min_padding))
    rows_pad, groups_pad, size_pad = padding

    k = codebook.shape[0]
    prefix = np.zeros(codes.shape[0], np.int64)  # one level: every item shares the empty prefix
    if codes.shape[1] > 1:
        prefix = np.unique(codes[:, :-1], axis=0, return_inverse=True)[1].reshape(-1).astype(np.int64)
    taken = prefix * k + codes[:, -1]
    leaders = items[np.searchsorted(group, np.arange(num_groups))]
    candidates = prefix[leaders, None] * k + np.arange(k)
    allowed = np.zeros((groups_pad, k), bool)
    allowed[:num_groups] = ~np.isin(candidates, taken) | (np.arange(k) == codes[leaders, -1:])

    padded_items = np.full(rows_pad, -1, np.int32)
    padded_items[:len(items)] = items
    padded_groups = np.full(rows_pad, groups_pad - 1, np.int32)
    padded_groups[:len(items)] = group
    new = np.asarray(reassign_groups(jnp.asarray(padded_items), jnp.asarray(padded_groups), jnp.asarray(allowed),
                                     residuals, codebook, epsilon=config.epsilon, iters=config.iters,
                                     max_group_size=size_pad))[:len(items)]
    codes = codes.copy()
    codes[items[new >= 0], -1] = new[new >= 0]
    return codes, padding


def append_disambiguation_level(codes: np.ndarray) -> np.ndarray:
    """int32 [N, L+1]: codes plus each item's rank (by id) among the items sharing its code."""
    items, group = _colliding_groups(codes)
    extra = np.zeros(codes.shape[0], np.int32)
    if len(items):
        starts = np.searchsorted(group, np.arange(int(group[-1]) + 1))
        extra[items] = np.arange(len(items)) - starts[group]
    return np.concatenate([codes, extra[:, None]], axis=1).astype(np.int32)


def resolve_collisions(codes: np.ndarray, residuals: jax.Array, codebook: jax.Array,
                       config: ResolveConfig) -> tuple[np.ndarray, dict]:
    """Resolve collisions in codes int [N, L] (see the module docstring).

    Args:
      residuals: float [N, D] each item's last-level residual (what the last level quantises).
      codebook: float [K, D] the last level's codebook.
    Returns:
      (codes int32 [N, L] or [N, L+1] with an extra level, a report dict).
    """
    codes = np.asarray(codes, np.int32)
    report = {"collision_rate_before": float(collision_rate(codes)), "rounds_run": 0}
    padding = (1, 1, 1)
    while report["rounds_run"] < config.rounds and float(collision_rate(codes)) > 0:
        previous = codes
        codes, padding = resolution_round(codes, residuals, codebook, config, padding)
        report["rounds_run"] += 1
        if np.array_equal(codes, previous):  # stuck: only prefixes holding more than K items collide
            break
    report["collision_rate_after_rounds"] = float(collision_rate(codes))
    report["extra_level"] = config.on_remaining == "extra_level" and report["collision_rate_after_rounds"] > 0
    if report["extra_level"]:
        codes = append_disambiguation_level(codes)
    report["collision_rate_final"] = float(collision_rate(codes))
    return codes, report
