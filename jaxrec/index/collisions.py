"""Collisions (items sharing all codes): rate, code usage, and LC-Rec-style resolution rounds.

Resolution, per round: group the items by their full code; in every group of more than one item,
re-assign the last-level code with Sinkhorn-Knopp over the group's last-level residuals (costs scaled
to [-1, 1] per group, as LC-Rec does per colliding group). Two refinements over LC-Rec make rounds
converge where LC-Rec's plain per-row argmax can loop forever (e.g. on duplicate embeddings):
codes already held by other items with the same prefix are forbidden, and a group's members take
distinct codes, greedily by plan value. Rounds stop when no collision is left or after ``rounds``.
What still collides then (a prefix holding more than K items) is, with ``on_remaining: extra_level``,
told apart by one extra level appended to every item — TIGER's fix: the item's rank among the
items sharing its code (0 for items without a collision); with ``keep`` it is left and reported.
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


@functools.partial(jax.jit, static_argnames=("epsilon", "iters"))
def reassign_groups(members: jax.Array, allowed: jax.Array, residuals: jax.Array, codebook: jax.Array,
                    *, epsilon: float, iters: int) -> jax.Array:
    """New last-level codes for colliding groups: distinct within a group, allowed codes only.

    Args:
      members: int32 [G, M] item ids of each group, -1 = padding.
      allowed: bool [G, K] codes a group may take.
      residuals: float [N, D] each item's last-level residual.
      codebook: float [K, D] the last level's codebook.
    Returns:
      int32 [G, M] new codes; -1 where no allowed code was left (padding rows included).
    """
    rows = members >= 0
    x = residuals[jnp.maximum(members, 0)]
    mask = rows[:, :, None] & allowed[:, None, :]
    costs = center_costs(squared_distances(x, codebook[None]), mask)
    log_plan = sinkhorn_log_plan(costs, epsilon, iters, rows, allowed)
    g_index = jnp.arange(members.shape[0])
    m, k = log_plan.shape[1:]

    def take_best(_, carry):
        new, row_free, code_free = carry
        score = jnp.where(mask & row_free[:, :, None] & code_free[:, None, :], log_plan, -jnp.inf)
        flat = jnp.argmax(score.reshape(-1, m * k), -1)
        row, code = flat // k, flat % k
        found = jnp.isfinite(jnp.max(score, axis=(1, 2)))
        new = new.at[g_index, row].set(jnp.where(found, code, new[g_index, row]))
        row_free = row_free.at[g_index, row].set(row_free[g_index, row] & ~found)
        code_free = code_free.at[g_index, code].set(code_free[g_index, code] & ~found)
        return new, row_free, code_free

    init = (jnp.full(members.shape, -1, jnp.int32), rows, allowed)
    return jax.lax.fori_loop(0, m, take_best, init)[0]


def _colliding_groups(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(items [C] in colliding groups, their dense group number [C]), items sorted by group then id."""
    _, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    items = np.nonzero(counts[inverse] > 1)[0]
    _, group = np.unique(inverse[items], return_inverse=True)
    order = np.argsort(group, kind="stable")
    return items[order], group.reshape(-1)[order]


def resolution_round(codes: np.ndarray, residuals: jax.Array, codebook: jax.Array, config: ResolveConfig,
                     min_padding: tuple[int, int] = (1, 1)) -> tuple[np.ndarray, tuple[int, int]]:
    """One round: codes int [N, L] with the last level of colliding items re-assigned.

    Groups are padded to powers of two, at least ``min_padding`` (groups, group size), so that later
    rounds reuse the first round's compiled step; returns (new codes, the padding used).
    """
    items, group = _colliding_groups(codes)
    num_groups = int(group[-1]) + 1
    starts = np.searchsorted(group, np.arange(num_groups))
    slot = np.arange(len(items)) - starts[group]
    g_pad = max(_next_power_of_two(num_groups), min_padding[0])
    m_pad = max(_next_power_of_two(int(slot.max()) + 1), min_padding[1])
    members = np.full((g_pad, m_pad), -1, np.int32)
    members[group, slot] = items

    k = codebook.shape[0]
    prefix = np.zeros(codes.shape[0], np.int64)  # one level: every item shares the empty prefix
    if codes.shape[1] > 1:
        prefix = np.unique(codes[:, :-1], axis=0, return_inverse=True)[1].reshape(-1).astype(np.int64)
    taken = prefix * k + codes[:, -1]
    leaders = items[starts]
    candidates = prefix[leaders, None] * k + np.arange(k)
    allowed = np.zeros((g_pad, k), bool)
    allowed[:num_groups] = ~np.isin(candidates, taken) | (np.arange(k) == codes[leaders, -1:])

    new = np.asarray(reassign_groups(jnp.asarray(members), jnp.asarray(allowed), residuals, codebook,
                                     epsilon=config.epsilon, iters=config.iters))[group, slot]
    codes = codes.copy()
    codes[items[new >= 0], -1] = new[new >= 0]
    return codes, (g_pad, m_pad)


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
    padding = (1, 1)
    while report["rounds_run"] < config.rounds and float(collision_rate(codes)) > 0:
        codes, padding = resolution_round(codes, residuals, codebook, config, padding)
        report["rounds_run"] += 1
    report["collision_rate_after_rounds"] = float(collision_rate(codes))
    report["extra_level"] = config.on_remaining == "extra_level" and report["collision_rate_after_rounds"] > 0
    if report["extra_level"]:
        codes = append_disambiguation_level(codes)
    report["collision_rate_final"] = float(collision_rate(codes))
    return codes, report
