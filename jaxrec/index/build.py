"""``build_semantic_index``: item embeddings → collision-free semantic codes + a report.

Steps: train an RQ-VAE (:mod:`jaxrec.index.train_rqvae`), give every item its nearest code per
level, then resolve collisions (:mod:`jaxrec.index.collisions`) — LC-Rec's index-generation recipe.
"""

from __future__ import annotations

import dataclasses
import time

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxrec.errors import DataError
from jaxrec.index.collisions import ResolveConfig, code_usage, resolve_collisions
from jaxrec.index.rqvae import RQVAEConfig
from jaxrec.index.train_rqvae import TrainConfig, nearest_codes, train_rqvae


@dataclasses.dataclass(frozen=True)
class IndexConfig:
    """Schema of ``configs/rqvae/*.yaml``."""

    model: RQVAEConfig = RQVAEConfig()
    train: TrainConfig = TrainConfig()
    resolve: ResolveConfig = ResolveConfig()

    def __post_init__(self):
        if len(self.train.sinkhorn_epsilons) not in (0, self.model.levels):
            raise ValueError(f"train.sinkhorn_epsilons has {len(self.train.sinkhorn_epsilons)} values, "
                             f"expected one per level ({self.model.levels}) or none")


def build_semantic_index(embeddings: np.ndarray, config: IndexConfig = IndexConfig(), seed: int = 0,
                         progress: bool = False) -> tuple[np.ndarray, dict]:
    """Semantic IDs for every item.

    Args:
      embeddings: float [N, d], row i = item i.
      config: model, training and collision-resolution settings.
      seed: everything random (init, k-means, shuffling) derives from it; same seed, same codes.
      progress: show a progress bar over training epochs.
    Returns:
      (codes int32 [N, L'] with L' = L, or L + 1 when an extra disambiguation level was appended;
       a JSON-serialisable report: training history and wall time, collision rates before/after,
       per-level code usage).
    """
    embeddings = np.asarray(embeddings, np.float32)
    if embeddings.ndim != 2 or embeddings.shape[0] < 2 or not np.all(np.isfinite(embeddings)):
        raise DataError(f"embeddings must be a finite float array [items >= 2, dim], got {embeddings.shape}")
    start = time.perf_counter()
    model, history = train_rqvae(embeddings, config.model, config.train, seed, progress)
    graphdef, params = nnx.split(model)
    codes, residuals, _ = nearest_codes(graphdef, params, jnp.asarray(embeddings))
    codes, collisions = resolve_collisions(np.asarray(codes), residuals, model.codebooks[-1], config.resolve)
    report = {
        "items": int(embeddings.shape[0]),
        "embedding_dim": int(embeddings.shape[1]),
        "seed": seed,
        "levels": int(codes.shape[1]),
        "codebook_size": config.model.codebook_size,
        **collisions,
        "code_usage": code_usage(codes[:, :config.model.levels], config.model.codebook_size),
        "train": history,
        "wall_s": time.perf_counter() - start,
    }
    return codes, report
