"""The optimizer: optax AdamW with warmup + cosine/linear decay, global-norm clipping, and an
optional per-row update mask (train only the rows of newly added tokens)."""

from __future__ import annotations

import jax
import optax

from jaxrec.train.config import OptimConfig


def learning_rate_schedule(config: OptimConfig, total_steps: int) -> optax.Schedule:
    """Linear warmup from 0 to ``learning_rate`` over ``warmup_steps``, then the chosen decay to
    ``learning_rate * end_lr_ratio`` at ``total_steps``."""
    peak = config.learning_rate
    warmup = min(config.warmup_steps, total_steps)
    decay_steps = max(total_steps - warmup, 1)
    end = peak * config.end_lr_ratio
    if config.decay == "cosine":
        decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=config.end_lr_ratio)
    elif config.decay == "linear":
        decay = optax.linear_schedule(peak, end, decay_steps)
    else:
        decay = optax.constant_schedule(peak)
    if warmup == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def mask_rows(masks: list) -> optax.GradientTransformation:
    """Multiply each update leaf (``jax.tree.leaves`` order) by its mask (None: untouched).

    A mask is a bool array broadcastable to its leaf, False on rows that must not change.
    """

    def update(updates, state, params=None):
        del params
        leaves, treedef = jax.tree.flatten(updates)
        if len(leaves) != len(masks):
            raise ValueError(f"mask_rows: {len(masks)} masks for {len(leaves)} parameters")
        leaves = [u if m is None else u * m.astype(u.dtype) for u, m in zip(leaves, masks)]
        return jax.tree.unflatten(treedef, leaves), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make_optimizer(config: OptimConfig, total_steps: int, row_masks: list | None = None) -> optax.GradientTransformation:
    """AdamW (decoupled weight decay) with clipping and the schedule above."""
    chain = [mask_rows(row_masks)] if row_masks is not None else []  # frozen rows: no gradient ...
    if config.clip_norm is not None:
        chain.append(optax.clip_by_global_norm(config.clip_norm))
    chain.append(optax.adamw(learning_rate_schedule(config, total_steps), b1=config.b1, b2=config.b2,
                             eps=config.eps, weight_decay=config.weight_decay))
    if row_masks is not None:
        chain.append(mask_rows(row_masks))  # ... and no weight decay either
    return optax.chain(*chain)
