"""Train an RQ-VAE on an item-embedding table held on device: whole epochs run inside one jit.

Each epoch shuffles the items with ``jax.random``, cuts them into ``ceil(N / batch_size)`` equal
minibatches (the few rows needed to fill the last one are taken again from the start of the
permutation) and runs ``lax.scan`` over them; ``eval_every`` epochs run in one jitted ``lax.scan``.
Between such chunks the nearest-code collision rate of all items is measured, and the chunk end with
the lowest (collision rate, reconstruction loss) is kept (LC-Rec keeps its lowest-collision checkpoint).

Defaults follow LC-Rec's released recipe: AdamW lr 1e-3, weight decay 1e-4, batch 1024, linear decay
after 50 warm-up epochs, gradient clipping at norm 1, k-means (100 iterations) initialisation of each
level's codebook on the first batch, Sinkhorn (ε 0.003, 50 iterations) on the last level in training.
LC-Rec trains 10,000 epochs on a GPU; the default here is fewer (``epochs``), set it per run.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm import tqdm

from jaxrec.errors import ConfigError, JaxrecError
from jaxrec.index.collisions import collision_rate
from jaxrec.index.kmeans import kmeans, squared_distances
from jaxrec.index.rqvae import RQVAE, RQVAEConfig, level_residuals


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """RQ-VAE optimisation settings (defaults: LC-Rec's recipe, except ``epochs``)."""

    epochs: int = 1000
    batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 50
    schedule: Literal["linear", "constant"] = "linear"  # after warm-up: linear decay to 0, or constant
    grad_clip: float = 1.0
    kmeans_init: Literal["first_batch", "all", "none"] = "first_batch"
    kmeans_iters: int = 100
    sinkhorn_epsilons: tuple[float, ...] = (0.0, 0.0, 0.0, 0.003)  # per level; 0 = nearest code
    sinkhorn_iters: int = 50
    eval_every: int = 100  # epochs per jitted chunk; the collision rate is measured after each

    def __post_init__(self):
        if min(self.epochs, self.batch_size, self.eval_every) < 1:
            raise ValueError("epochs, batch_size and eval_every must be >= 1")
        if any(e < 0 for e in self.sinkhorn_epsilons):
            raise ValueError(f"sinkhorn_epsilons must be >= 0, got {list(self.sinkhorn_epsilons)}")


@dataclasses.dataclass(frozen=True)
class Batching:
    """Static minibatch layout of one epoch: ``num_batches`` batches of ``batch_size`` rows."""

    num_batches: int
    batch_size: int

    @staticmethod
    def for_items(num_items: int, max_batch_size: int) -> "Batching":
        num_batches = -(-num_items // max_batch_size)
        return Batching(num_batches, -(-num_items // num_batches))


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    """Gradient clipping + AdamW with linear warm-up, then linear decay to 0 (or constant)."""
    warmup = config.warmup_epochs * steps_per_epoch
    total = config.epochs * steps_per_epoch
    after = (optax.linear_schedule(config.lr, 0.0, max(total - warmup, 1)) if config.schedule == "linear"
             else optax.constant_schedule(config.lr))
    schedule = optax.join_schedules([optax.linear_schedule(0.0, config.lr, warmup), after], [warmup]) \
        if warmup > 0 else after
    return optax.chain(optax.clip_by_global_norm(config.grad_clip),
                       optax.adamw(schedule, weight_decay=config.weight_decay))


@functools.partial(jax.jit, static_argnames=("graphdef", "config", "sample_size"))
def kmeans_init_codebooks(graphdef, params, data, key, *, config: TrainConfig, sample_size: int):
    """Set each level's codebook to k-means centers of that level's residuals on ``sample_size`` items."""
    model = nnx.merge(graphdef, params)
    sample = data[jax.random.permutation(jax.random.fold_in(key, 0), data.shape[0])[:sample_size]]

    def level(residual, level_key):
        centers, _ = kmeans(level_key, residual, model.config.codebook_size, config.kmeans_iters)
        return residual - centers[jnp.argmin(squared_distances(residual, centers), -1)], centers

    level_keys = jax.random.split(jax.random.fold_in(key, 1), model.config.levels)
    _, books = jax.lax.scan(level, model.encode(sample), level_keys)
    model.codebooks[...] = books
    return nnx.state(model)


@functools.partial(jax.jit, static_argnames=("graphdef", "config", "batching", "num_epochs"))
def train_epochs(graphdef, params, opt_state, data, key, *, config: TrainConfig, batching: Batching,
                 num_epochs: int):
    """Run ``num_epochs`` epochs over ``data`` [N, d] on device.

    Returns (params, opt_state, per-epoch mean (loss, recon, quant) float [num_epochs, 3]).
    """
    tx = make_optimizer(config, batching.num_batches)
    n = data.shape[0]
    fill = batching.num_batches * batching.batch_size - n

    def loss_fn(params, x):
        total, (recon, quant) = nnx.merge(graphdef, params).loss(x, config.sinkhorn_epsilons,
                                                                 config.sinkhorn_iters)
        return total, jnp.stack([total, recon, quant])

    def step(carry, rows):
        params, opt_state = carry
        grads, metrics = jax.grad(loss_fn, has_aux=True)(params, data[rows])
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), metrics

    def epoch(carry, epoch_key):
        perm = jax.random.permutation(epoch_key, n)
        rows = jnp.concatenate([perm, perm[:fill]]).reshape(batching.num_batches, batching.batch_size)
        carry, metrics = jax.lax.scan(step, carry, rows)
        return carry, metrics.mean(0)

    (params, opt_state), metrics = jax.lax.scan(epoch, (params, opt_state), jax.random.split(key, num_epochs))
    return params, opt_state, metrics


@functools.partial(jax.jit, static_argnames=("graphdef",))
def nearest_codes(graphdef, params, data):
    """For every row of ``data``: (codes int32 [N, L] by nearest code, last-level residuals [N, e_dim],
    the codes' collision rate)."""
    model = nnx.merge(graphdef, params)
    z = model.encode(data)
    codes = model.codes(data)
    return codes, level_residuals(z, model.codebooks[...], codes)[:, -1], collision_rate(codes)


def train_rqvae(embeddings: np.ndarray, model_config: RQVAEConfig, config: TrainConfig, seed: int,
                progress: bool = False) -> tuple[RQVAE, dict]:
    """Train an RQ-VAE on ``embeddings`` float [N, d].

    Returns (the selected model, history): per-epoch mean ``loss``/``recon_loss``/``quant_loss``, the
    nearest-code ``collision_rate`` at each ``eval_epoch``, the ``selected_epoch``, ``wall_s``.
    """
    if len(config.sinkhorn_epsilons) not in (0, model_config.levels):
        raise ConfigError(f"train.sinkhorn_epsilons has {len(config.sinkhorn_epsilons)} values for "
                          f"{model_config.levels} levels")
    start = time.perf_counter()
    data = jnp.asarray(embeddings, jnp.float32)
    key_model, key_init, key_train = jax.random.split(jax.random.key(seed), 3)
    graphdef, params = nnx.split(RQVAE(data.shape[1], model_config, nnx.Rngs(params=key_model)))
    batching = Batching.for_items(data.shape[0], config.batch_size)
    if config.kmeans_init != "none":
        sample = batching.batch_size if config.kmeans_init == "first_batch" else data.shape[0]
        params = kmeans_init_codebooks(graphdef, params, data, key_init, config=config, sample_size=sample)
    opt_state = jax.jit(make_optimizer(config, batching.num_batches).init)(params)

    history = {"loss": [], "recon_loss": [], "quant_loss": [], "eval_epoch": [], "collision_rate": []}
    best, best_score, done = None, None, 0
    bar = tqdm(total=config.epochs, desc="rq-vae", unit="epoch", disable=not progress)
    while done < config.epochs:
        chunk = min(config.eval_every, config.epochs - done)
        params, opt_state, metrics = train_epochs(graphdef, params, opt_state, data,
                                                  jax.random.fold_in(key_train, done), config=config,
                                                  batching=batching, num_epochs=chunk)
        done += chunk
        metrics = np.asarray(metrics)
        if not np.all(np.isfinite(metrics)):
            raise JaxrecError(f"RQ-VAE loss is not finite by epoch {done}: try a lower train.lr, or check "
                              f"the embeddings' scale")
        for name, column in zip(("loss", "recon_loss", "quant_loss"), metrics.T):
            history[name].extend(column.tolist())
        rate = float(nearest_codes(graphdef, params, data)[2])
        history["eval_epoch"].append(done)
        history["collision_rate"].append(rate)
        recon = history["recon_loss"][-1]
        if best_score is None or (rate, recon) < best_score:
            best, best_score = (params, done), (rate, recon)
        bar.update(chunk)
        bar.set_postfix(loss=f"{history['loss'][-1]:.4f}", recon=f"{recon:.4f}", collisions=f"{rate:.4f}")
    bar.close()
    history["selected_epoch"] = best[1]
    history["wall_s"] = time.perf_counter() - start
    history["batching"] = dataclasses.asdict(batching)
    return nnx.merge(graphdef, best[0]), history
