"""InfoNCE with in-batch negatives, and the gathers that pick representations out of hidden states.

``info_nce(queries, keys, valid, temperature, labels)``: row i's positive is key i; its negatives
are every other valid key whose label differs from label i (a key of the same item is neither a
positive nor a negative: no false negatives from repeated items). Similarities are cosine / temperature:

    loss_i = -log( exp(s_ii) / (exp(s_ii) + sum_{j valid, j != i, label_j != label_i} exp(s_ij)) )

and the loss is the mean over valid rows (0 when there is none). Everything is static-shape: invalid
rows/keys are masked, never removed.

:func:`lm_contrastive_loss` combines two such terms with the LM loss (RSLLM's stage 2; its weights and
temperature are the ``contrastive:`` section, :class:`ContrastiveConfig`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxrec.train.losses import token_cross_entropy

NORM_EPS = 1e-6


def _normalize(x: jax.Array) -> jax.Array:
    x = x.astype(jnp.float32)
    return x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + NORM_EPS)


def info_nce(queries: jax.Array, keys: jax.Array, valid: jax.Array, temperature: float,
             labels: jax.Array | None = None) -> jax.Array:
    """queries, keys [N,d]; valid bool [N]; labels int [N] (None: all distinct) → scalar float32 loss."""
    n = queries.shape[0]
    logits = _normalize(queries) @ _normalize(keys).T / temperature  # [N,N]
    eye = jnp.eye(n, dtype=bool)
    distinct = ~eye if labels is None else labels[:, None] != labels[None, :]
    allowed = eye | (valid[None, :] & distinct)  # the diagonal keeps every row finite
    logits = jnp.where(allowed, logits, -jnp.inf)
    per_row = jax.nn.logsumexp(logits, axis=1) - jnp.diagonal(logits)
    weights = valid.astype(jnp.float32)
    return jnp.sum(jnp.where(valid, per_row, 0.0)) / jnp.maximum(weights.sum(), 1.0)


def gather_positions(hidden: jax.Array, positions: jax.Array) -> jax.Array:
    """hidden [B,T,d], positions int [B,M] → [B,M,d] (positions clipped into [0, T))."""
    positions = jnp.clip(positions, 0, hidden.shape[1] - 1)
    return jnp.take_along_axis(hidden, positions[..., None], axis=1)


def first_positions(flags: jax.Array, count: int) -> tuple[jax.Array, jax.Array]:
    """flags bool [B,T] → (positions int [B,M] of the first ``M = min(count, T)`` flagged positions in
    order, valid bool [B,M]); rows with fewer flags are filled with unflagged positions, marked invalid."""
    order = jnp.argsort(~flags, axis=1, stable=True)[:, : min(count, flags.shape[1])]
    return order, jnp.take_along_axis(flags, order, axis=1)


@dataclasses.dataclass
class ContrastiveConfig:
    """Stage-2 loss weights and InfoNCE temperature."""

    lambda_seq: float = 0.1  # InfoNCE(h_user, z_target)
    lambda_item: float = 0.1  # InfoNCE(z_item, t_item)
    temperature: float = 0.1

    def __post_init__(self):
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")



def lm_contrastive_loss(contrastive: ContrastiveConfig, max_placeholders: int):
    """RSLLM's stage-2 loss: LM loss + lambda_seq InfoNCE(h_user, z_target) + lambda_item InfoNCE(z_item, t_item);
    the loss ``(model, batch) -> (loss, tokens, metrics)`` for a model whose
    ``embed_tokens`` is an :class:`~jaxrec.models.projector.ItemInjectingEmbed`."""
    c = contrastive

    def loss_fn(model, batch):
        ids, targets = batch["input_ids"], batch["targets"]
        hidden = model(ids, attention_mask=batch["attention_mask"], return_hidden=True)  # [B,T,d]
        mask = batch["loss_mask"] * (targets >= 0)  # a placeholder is never a prediction target
        lm, count = token_cross_entropy(model.logits(hidden), jnp.maximum(targets, 0), mask)
        loss, metrics = lm, {"lm_loss": lm}
        embed = model.embed_tokens
        if c.lambda_seq:
            tag = batch["target_tag"]
            position = jnp.argmax(tag > 0, axis=1)
            target = jnp.maximum(tag.max(axis=1) - 1, 0)
            h_user = gather_positions(hidden, position[:, None])[:, 0]
            seq = info_nce(h_user, embed.project(target), tag.max(axis=1) > 0, c.temperature, target)
            loss, metrics["seq_nce"] = loss + c.lambda_seq * seq, seq
        if c.lambda_item:
            positions, valid = first_positions(ids < 0, max_placeholders)  # [B,M]
            items = jnp.maximum(-1 - jnp.take_along_axis(ids, positions, axis=1), 0)
            text = gather_positions(hidden, positions - 1)
            d = hidden.shape[-1]
            item = info_nce(embed.project(items).reshape(-1, d), text.reshape(-1, d), valid.reshape(-1),
                            c.temperature, items.reshape(-1))
            loss, metrics["item_nce"] = loss + c.lambda_item * item, item
        return loss, count, metrics

    return loss_fn
