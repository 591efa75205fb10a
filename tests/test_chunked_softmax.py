"""Chunked full-softmax cross-entropy equals the dense one (values and gradients) and never builds the
[M, N] logits; SASRec trains identically with it."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxrec.train.chunked_softmax import chunked_softmax_cross_entropy


def dense(hidden, table, labels):
    return optax.softmax_cross_entropy_with_integer_labels(hidden @ table.T, labels)


@pytest.mark.parametrize("num_items, chunk", [(1000, 128), (1000, 1000), (997, 64), (5, 8)])
def test_values_and_gradients_equal_the_dense_loss(num_items, chunk):
    rng = np.random.default_rng(num_items + chunk)
    hidden = jnp.asarray(rng.normal(size=(37, 16)) * 2, jnp.float32)
    table = jnp.asarray(rng.normal(size=(num_items, 16)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, num_items, 37))
    np.testing.assert_allclose(chunked_softmax_cross_entropy(hidden, table, labels, chunk),
                               dense(hidden, table, labels), rtol=1e-5, atol=1e-5)
    weights = jnp.asarray(rng.uniform(size=37), jnp.float32)  # a non-uniform cotangent
    grad_chunked = jax.grad(lambda h, t: jnp.sum(weights * chunked_softmax_cross_entropy(h, t, labels, chunk)),
                            argnums=(0, 1))(hidden, table)
    grad_dense = jax.grad(lambda h, t: jnp.sum(weights * dense(h, t, labels)), argnums=(0, 1))(hidden, table)
    for a, b in zip(grad_chunked, grad_dense):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_no_array_of_the_full_logits_shape_is_built():
    hidden, table = jnp.ones((64, 8)), jnp.ones((4096, 8))
    labels = jnp.zeros(64, jnp.int32)
    jaxpr = jax.make_jaxpr(jax.grad(lambda h, t: chunked_softmax_cross_entropy(h, t, labels, 256).sum(),
                                    argnums=(0, 1)))(hidden, table)
    text = str(jaxpr)  # every equation, the scan body's included
    assert "f32[64,256]" in text and "f32[64,4096]" not in text


def test_sasrec_steps_with_chunks_equal_the_dense_ones():
    from flax import nnx

    from jaxrec.methods.sasrec import make_steps
    from jaxrec.models.sasrec import SASRec, SASRecConfig

    model = SASRec(SASRecConfig(num_items=300, max_len=8, hidden_size=16, num_layers=1, num_heads=1, dropout=0.0),
                   rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    tx = optax.sgd(1.0)  # the update is the gradient itself (Adam would magnify float noise in ~0 gradients)
    rng = np.random.default_rng(0)
    inputs = rng.integers(0, 300, (4, 8)).astype(np.int32)
    labels = rng.integers(0, 300, (4, 8)).astype(np.int32)
    labels[0, :3] = -1  # padding positions
    out = []
    for chunk in (0, 64):
        step, _ = make_steps(graphdef, tx, "softmax", 300, chunk)
        new_params, _, loss = step(params, tx.init(params), inputs, labels, jax.random.key(0))
        out.append((loss, new_params))
    np.testing.assert_allclose(out[0][0], out[1][0], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(out[0][1]), jax.tree.leaves(out[1][1])):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
