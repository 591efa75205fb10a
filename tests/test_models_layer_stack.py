"""Layer execution options of the Llama and T5 models (jaxrec.models.layer_stack): the stacked/scan
layout equals the layer loop, remat leaves losses and gradients unchanged while cutting the compiled
activation memory, residual dropout is deterministic given its seed and off in eval mode."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxrec.errors import ConfigError, JaxrecError
from jaxrec.models import build_model, save_pretrained, tiny_llama_config, tiny_t5_config
from jaxrec.models.layer_stack import (is_stacked, set_dropout, set_remat, stack_layers, stacked_filter,
                                       unstack_layers)
from jaxrec.train.losses import token_cross_entropy

RS = np.random.RandomState(0)
IDS = jnp.asarray(RS.randint(0, 64, (2, 12)))
DEC = jnp.asarray(RS.randint(0, 64, (2, 5)))




@pytest.fixture(scope="module", autouse=True)
def fast_compile():
    """These tests compile many tiny programs: skip XLA's expensive optimizations while they run."""
    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)


@pytest.fixture(scope="module")
def llama():
    return build_model(tiny_llama_config(64, hidden_size=32, head_dim=8, intermediate_size=64, num_layers=3), seed=0)


@pytest.fixture(scope="module")
def t5():
    return build_model(tiny_t5_config(64, d_model=32, d_kv=8, d_ff=64, num_decoder_layers=3), seed=0)


# one compiled program per model structure (nnx.jit caches by graph); RNG counts are written back
llama_hidden = nnx.jit(lambda model, ids: model(ids, return_hidden="all"))
t5_hidden = nnx.jit(lambda model, ids, dec: model(ids, decoder_input_ids=dec, return_hidden="all"))


def flat_params_of(state):
    return {p: np.asarray(v[...]) for p, v in nnx.to_flat_state(state)}


def flat_params(model):
    return flat_params_of(nnx.state(model, nnx.Param))


def with_dropout(model, seed, scan=False):
    model = nnx.clone(model)
    set_dropout(model, 0.3, seed=seed)
    if scan:
        stack_layers(model)
    return model


def test_stacked_layout_and_dropout_equal_the_layer_loop(llama, t5, tmp_path):
    """Stacked layers under lax.scan give the loop's hidden states, with the same per-layer dropout
    streams; dropout is deterministic given its seed, advances per call, and is off in eval mode."""
    dropped = with_dropout(llama, seed=1)
    stacked = with_dropout(llama, seed=1, scan=True)
    assert is_stacked(stacked) and not is_stacked(dropped)
    kernel = stacked.layers.self_attn.q_proj.kernel
    assert kernel.shape == (3, 32, 32) and kernel.get_metadata()["out_sharding"] == ("layers", "embed", "heads")
    first = llama_hidden(dropped, IDS)
    np.testing.assert_allclose(llama_hidden(stacked, IDS), first, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(llama_hidden(with_dropout(llama, seed=1), IDS), first)  # same seed
    assert np.abs(llama_hidden(with_dropout(llama, seed=2), IDS) - first).max() > 1e-2
    assert np.abs(llama_hidden(dropped, IDS) - first).max() > 1e-2  # the stream advanced: a new mask
    dropped.eval()
    plain = llama_hidden(llama, IDS)
    assert np.abs(plain - first).max() > 1e-2
    np.testing.assert_allclose(llama_hidden(dropped, IDS), plain, rtol=1e-6, atol=1e-6)
    with pytest.raises(JaxrecError, match="unstack_layers"):
        stacked.prefill(IDS, jnp.ones_like(IDS), num_beams=2, max_new_tokens=2)
    with pytest.raises(JaxrecError, match="unstack_layers"):
        save_pretrained(stacked, tmp_path)

    unstack_layers(stacked)
    before, after = flat_params(llama), flat_params(stacked)
    assert list(before) == list(after)  # same paths (HF names, LoRA/PEFT targets) in the same order
    assert all(np.array_equal(before[p], after[p]) for p in before)
    assert stacked.layers[2].mlp.up_proj.kernel.get_metadata()["out_sharding"] == ("embed", "mlp")

    looped, stacked_t5 = with_dropout(t5, seed=3), with_dropout(t5, seed=3, scan=True)
    assert stacked_t5.decoder.blocks.cross_attn.q.kernel.shape[0] == 3
    with pytest.raises(JaxrecError, match="unstack_layers"):
        save_pretrained(stacked_t5, tmp_path)
    first = t5_hidden(looped, IDS, DEC)
    np.testing.assert_allclose(t5_hidden(stacked_t5, IDS, DEC), first, rtol=1e-5, atol=1e-5)
    assert np.abs(t5_hidden(looped, IDS, DEC) - first).max() > 1e-2


def compiled_loss_and_grad(model, args, loss):
    """(compiled value_and_grad over the model's params, params): one compilation per variant."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    fn = jax.jit(jax.value_and_grad(lambda p: loss(nnx.merge(graphdef, p, rest), *args)))
    return fn.lower(params).compile(), params


def list_layout(model, params):
    """{path: array} of ``params`` (shaped like ``model``'s Params) in the layer-list layout."""
    graphdef, _, rest = nnx.split(model, nnx.Param, ...)
    copy = nnx.merge(graphdef, params, rest)
    unstack_layers(copy)
    return flat_params(copy)


def lm_loss(model, ids):
    return token_cross_entropy(model(ids[:, :-1]), ids[:, 1:], jnp.ones(ids[:, 1:].shape))[0]


def assert_same_loss_and_grads(a, b, what):
    (loss_a, grads_a), (loss_b, grads_b) = a, b
    assert loss_a == pytest.approx(loss_b, abs=1e-6), what
    assert list(grads_a) == list(grads_b)
    for path, g in grads_b.items():
        np.testing.assert_allclose(grads_a[path], g, atol=1e-6, err_msg=f"{what} {path}")


def test_remat_keeps_loss_and_grads_and_cuts_activation_memory():
    """A tiny-but-long Llama (3 layers, T=256): remat gives the loop's loss/gradients; the scanned
    layers' compiled temp memory shrinks with remat. (XLA:CPU CSEs the recompute of unrolled layers
    with their forward pass, so on CPU only the scanned layout shows the saving.)"""
    base = build_model(tiny_llama_config(64, hidden_size=32, intermediate_size=64, head_dim=8, num_layers=3), seed=0)
    ids = jnp.asarray(RS.randint(0, 64, (2, 257)))
    results, temp = {}, {}
    for scan, policy in [(False, "none"), (False, "dots"), (True, "none"), (True, "full")]:
        model = nnx.clone(base)
        set_remat(model, policy)
        if scan:
            stack_layers(model)
        fn, params = compiled_loss_and_grad(model, (ids,), lm_loss)
        temp[scan, policy] = fn.memory_analysis().temp_size_in_bytes
        loss, grads = fn(params)
        results[scan, policy] = (float(loss), list_layout(model, grads) if scan else flat_params_of(grads))
    for key, result in results.items():
        assert_same_loss_and_grads(result, results[False, "none"], key)
    print({f"scan={s} remat={p}": b for (s, p), b in temp.items()})
    assert temp[True, "full"] < 0.6 * temp[True, "none"]
    with pytest.raises(ConfigError, match="train.remat"):
        set_remat(base, "some")


def test_t5_scanned_remat_encoder_decoder_grads_match():
    def loss(model, ids, dec):
        return token_cross_entropy(model(ids, decoder_input_ids=dec), dec, jnp.ones(dec.shape))[0]

    base = build_model(tiny_t5_config(64, d_model=32, d_kv=8, d_ff=64), seed=0)
    fn, params = compiled_loss_and_grad(nnx.clone(base), (IDS, DEC), loss)
    loss_ref, grads = fn(params)
    model = nnx.clone(base)
    set_remat(model, "dots_with_no_batch_dims")
    stack_layers(model)
    fn, params = compiled_loss_and_grad(model, (IDS, DEC), loss)
    got_loss, got_grads = fn(params)
    assert_same_loss_and_grads((float(got_loss), list_layout(model, got_grads)),
                               (float(loss_ref), flat_params_of(grads)), "t5 scan + remat")


def test_scan_needs_the_same_selection_in_every_layer(llama):
    from jaxrec.models.lora import LoraConfig, apply_lora, trainable_filter

    model = nnx.clone(llama)
    apply_lora(model, LoraConfig(target_modules=(r"layers\.0\.self_attn\.q_proj",)))
    with pytest.raises(ConfigError, match="layers.1 differs from layers.0"):
        stack_layers(model)
    model = nnx.clone(llama)
    apply_lora(model, LoraConfig(target_modules=("q_proj",)))
    with pytest.raises(ConfigError, match="layers.mlp.down_proj.kernel is trained in some layers only"):
        stacked_filter(model, trainable_filter(LoraConfig(trainable=(r"layers\.1\.mlp\.down_proj\.kernel",))))
    selection = stacked_filter(model, trainable_filter(LoraConfig(trainable=("down_proj",))))
    stack_layers(model)
    trained = {p for p, _ in nnx.to_flat_state(nnx.state(model, selection))}
    assert ("layers", "mlp", "down_proj", "kernel") in trained
    assert ("layers", "self_attn", "q_proj", "lora_a") in trained
    assert model.layers.self_attn.q_proj.lora_b.shape == (3, 8, 32)
