"""Chunked full-softmax cross-entropy equals the dense one (values and gradients) and never builds the
[M, N] logits; the SASRec loss equals the dense one with it; the logQ-corrected sampled softmax equals its
brute-force formula."""

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


def sasrec_loss_and_grads(kind, chunk, batch, num_items=300):
    """The SASRec next-item loss and its gradients on a fixed batch (dropout off)."""
    from flax import nnx

    from jaxrec.models.sasrec import SASRec, SASRecConfig
    from jaxrec.train.next_item_loss import next_item_loss

    model = SASRec(SASRecConfig(num_items=num_items, max_len=8, hidden_size=16, num_layers=1, num_heads=1,
                                dropout=0.0), rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    loss_fn = next_item_loss(kind, num_items, chunk)
    # fresh Variables at the trace level (the loss advances the dropout stream), as the engine's step does
    return jax.value_and_grad(lambda p: loss_fn(nnx.merge(graphdef, p, jax.tree.map(lambda x: x, rest)), batch)[0])(params)


def next_item_batch(num_items=300, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_items, (4, 8)).astype(np.int32)
    labels[0, :3] = -1  # padding positions
    return {"input_ids": rng.integers(0, num_items, (4, 8)).astype(np.int32), "targets": labels}


def test_sasrec_loss_with_chunks_equals_the_dense_one():
    batch = next_item_batch()
    (dense_loss, dense_grads), (chunked_loss, chunked_grads) = (sasrec_loss_and_grads("softmax", c, batch)
                                                                for c in (0, 64))
    np.testing.assert_allclose(chunked_loss, dense_loss, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(chunked_grads), jax.tree.leaves(dense_grads)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def brute_force_sampled_softmax(hidden, table, labels, negatives, label_log_q, negative_log_q):
    """The logQ-corrected sampled softmax, one query at a time in float64 numpy."""
    out = []
    for h, y, lq in zip(hidden.astype(np.float64), labels, label_log_q):
        positive = h @ table[y] - lq
        terms = [np.exp(positive)] + [np.exp(h @ table[n] - nq) for n, nq in zip(negatives, negative_log_q) if n != y]
        out.append(np.log(sum(terms)) - positive)
    return np.array(out)


def test_sampled_softmax_with_logq_equals_the_brute_force_formula():
    from jaxrec.train.sampled_softmax import sampled_softmax_cross_entropy

    rng = np.random.default_rng(3)
    num_items = 50
    hidden, table = rng.normal(size=(9, 8)).astype(np.float32), rng.normal(size=(num_items, 8)).astype(np.float32)
    log_q = np.log(rng.dirichlet(np.ones(num_items))).astype(np.float32)  # a non-uniform proposal
    labels = rng.integers(0, num_items, 9)
    negatives = np.concatenate([labels[:2], rng.integers(0, num_items, 10)])  # two accidental hits
    got = sampled_softmax_cross_entropy(jnp.asarray(hidden), jnp.asarray(table), jnp.asarray(labels),
                                        jnp.asarray(negatives), jnp.asarray(log_q[labels]), jnp.asarray(log_q[negatives]))
    expected = brute_force_sampled_softmax(hidden, table, labels, negatives, log_q[labels], log_q[negatives])
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # every item drawn once under a uniform proposal: the correction cancels and it is the full softmax
    everything = np.arange(num_items)
    uniform = np.full(num_items, -np.log(num_items), np.float32)
    full = sampled_softmax_cross_entropy(jnp.asarray(hidden), jnp.asarray(table), jnp.asarray(labels),
                                         jnp.asarray(everything), jnp.asarray(uniform[labels]), jnp.asarray(uniform))
    np.testing.assert_allclose(full, dense(jnp.asarray(hidden), jnp.asarray(table), jnp.asarray(labels)), rtol=1e-5)


def test_sasrec_sampled_softmax_over_the_whole_catalog_equals_the_full_softmax():
    num_items = 40
    batch = next_item_batch(num_items)
    negatives = np.tile(np.arange(num_items // 4, dtype=np.int32), (4, 1)) + 10 * np.arange(4, dtype=np.int32)[:, None]
    sampled = {**batch, "negatives": negatives, "negative_log_q": np.zeros((4, 10), np.float32),
               "target_log_q": np.zeros((4, 8), np.float32)}  # all 40 items, each once, uniform (log q constant)
    (full_loss, full_grads), (sampled_loss, sampled_grads) = (
        sasrec_loss_and_grads("softmax", 0, batch, num_items), sasrec_loss_and_grads("sampled_softmax", 0, sampled, num_items))
    np.testing.assert_allclose(sampled_loss, full_loss, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(sampled_grads), jax.tree.leaves(full_grads)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)

