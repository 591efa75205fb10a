"""RQ-VAE (residual-quantised autoencoder) that maps item embeddings to L discrete codes, in Flax NNX.

Architecture and losses follow LC-Rec's index builder (read, not copied):
  encoder  MLP in_dim → hidden... → e_dim (ReLU between layers, Xavier-normal weights, zero bias)
  quantiser L levels, each a codebook [K, e_dim]; level l quantises the residual left by levels < l
            to its nearest code (or, where ``sinkhorn_epsilons[l] > 0``, to a Sinkhorn-Knopp uniform
            assignment over the batch)
  decoder  the mirrored MLP e_dim → ... → in_dim
  loss     mse(x̂, x) + quant_loss_weight · mean_l [ ||sg(r_l) - c_l||² + β ||r_l - sg(c_l)||² ]
with β = 0.25 (VQ-VAE's commitment weight): the first term (codebook loss) pulls codes toward the
residuals, the second (commitment loss) keeps the encoder near its codes. Gradients reach the
encoder through the straight-through estimator ẑ = z + sg(Σ_l c_l - z). As in LC-Rec, the residual
passed to the next level is detached, so only level 0's commitment term trains the encoder.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from jaxrec.index.kmeans import squared_distances
from jaxrec.index.sinkhorn import sinkhorn_assign


@dataclasses.dataclass(frozen=True)
class RQVAEConfig:
    """RQ-VAE shape and loss weights (defaults: LC-Rec's released recipe)."""

    hidden: tuple[int, ...] = (2048, 1024, 512, 256, 128, 64)
    e_dim: int = 32
    levels: int = 4
    codebook_size: int = 256
    beta: float = 0.25  # commitment-loss weight
    quant_loss_weight: float = 1.0

    def __post_init__(self):
        if self.levels < 1 or self.codebook_size < 2 or self.e_dim < 1:
            raise ValueError("need levels >= 1, codebook_size >= 2 and e_dim >= 1")
        if any(h < 1 for h in self.hidden):
            raise ValueError(f"hidden widths must be positive, got {list(self.hidden)}")


class MLP(nnx.Module):
    """Linear layers of the given widths with ReLU between them (none after the last)."""

    def __init__(self, widths: list[int], rngs: nnx.Rngs):
        init = nnx.initializers.xavier_normal()
        self.layers = nnx.List([nnx.Linear(a, b, kernel_init=init, rngs=rngs)
                                for a, b in zip(widths[:-1], widths[1:])])

    def __call__(self, x: jax.Array) -> jax.Array:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = jax.nn.relu(x)
        return x


def residual_quantize(z: jax.Array, codebooks: jax.Array, beta: float = 0.25,
                      sinkhorn_epsilons: tuple[float, ...] = (),
                      sinkhorn_iters: int = 50) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Quantise latents level by level.

    Args:
      z: float [N, D] encoder outputs.
      codebooks: float [L, K, D].
      beta: commitment-loss weight.
      sinkhorn_epsilons: per level, ε > 0 assigns that level by Sinkhorn over the N rows, 0 by argmin;
        empty = argmin everywhere.
      sinkhorn_iters: Sinkhorn iterations.
    Returns:
      (ẑ [N, D] straight-through quantised latents, codes int32 [N, L],
       quantisation loss: mean over levels of codebook + β·commitment).
    """
    levels = codebooks.shape[0]
    epsilons = sinkhorn_epsilons or (0.0,) * levels
    sg = jax.lax.stop_gradient
    residual = z
    quantized = jnp.zeros_like(z)
    codes, losses = [], []
    for level in range(levels):
        book = codebooks[level]
        d = squared_distances(sg(residual), book)
        if epsilons[level] > 0:
            code = sinkhorn_assign(sg(d), epsilons[level], sinkhorn_iters)
        else:
            code = jnp.argmin(d, -1).astype(jnp.int32)
        c = book[code]
        codebook_loss = jnp.mean((c - sg(residual)) ** 2)
        commitment_loss = jnp.mean((sg(c) - residual) ** 2)
        losses.append(codebook_loss + beta * commitment_loss)
        codes.append(code)
        quantized = quantized + c
        residual = sg(residual - c)
    z_hat = z + sg(quantized - z)
    return z_hat, jnp.stack(codes, -1), jnp.mean(jnp.stack(losses))


def level_residuals(z: jax.Array, codebooks: jax.Array, codes: jax.Array) -> jax.Array:
    """float [N, L, D]: the residual each level quantises, given latents z [N, D] and codes [N, L]."""
    chosen = jnp.take_along_axis(codebooks[None], codes[:, :, None, None], axis=2)[:, :, 0]  # [N, L, D]
    before = jnp.cumsum(chosen, axis=1) - chosen
    return z[:, None, :] - before


class RQVAE(nnx.Module):
    """Encoder, L-level residual quantiser and decoder; see the module docstring."""

    def __init__(self, in_dim: int, config: RQVAEConfig, rngs: nnx.Rngs):
        self.config = config
        widths = [in_dim, *config.hidden, config.e_dim]
        self.encoder = MLP(widths, rngs)
        self.decoder = MLP(widths[::-1], rngs)
        k = config.codebook_size
        self.codebooks = nnx.Param(jax.random.uniform(rngs.params(), (config.levels, k, config.e_dim),
                                                      minval=-1.0 / k, maxval=1.0 / k))

    def encode(self, x: jax.Array) -> jax.Array:
        """float [N, in_dim] → latents [N, e_dim]."""
        return self.encoder(x)

    def codes(self, x: jax.Array) -> jax.Array:
        """int32 [N, L]: nearest-code indices of every row of x [N, in_dim] (no Sinkhorn)."""
        return residual_quantize(self.encode(x), self.codebooks[...])[1]

    def __call__(self, x: jax.Array, sinkhorn_epsilons: tuple[float, ...] = (),
                 sinkhorn_iters: int = 50) -> tuple[jax.Array, jax.Array, jax.Array]:
        """x [N, in_dim] → (reconstruction [N, in_dim], codes int32 [N, L], quantisation loss)."""
        z_hat, codes, quant_loss = residual_quantize(self.encode(x), self.codebooks[...], self.config.beta,
                                                     sinkhorn_epsilons, sinkhorn_iters)
        return self.decoder(z_hat), codes, quant_loss

    def loss(self, x: jax.Array, sinkhorn_epsilons: tuple[float, ...] = (),
             sinkhorn_iters: int = 50) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        """(total loss, (reconstruction mse, quantisation loss)) on a batch x [N, in_dim]."""
        recon, _, quant_loss = self(x, sinkhorn_epsilons, sinkhorn_iters)
        recon_loss = jnp.mean((recon - x) ** 2)
        return recon_loss + self.config.quant_loss_weight * quant_loss, (recon_loss, quant_loss)
