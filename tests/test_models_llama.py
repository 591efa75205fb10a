"""Llama-family parity with HF PyTorch, the decoding protocol, packing, HF round trip, errors."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxrec.errors import JaxrecError
from jaxrec.models import (build_model, load_pretrained, save_pretrained, tiny_llama_config,
                           tiny_t5_config)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VOCAB = 128
COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
VARIANTS = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
    "llama3_tied": ("LlamaConfig", "LlamaForCausalLM", dict(
        tie_word_embeddings=True, rms_norm_eps=1e-5,
        rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0,
                             low_freq_factor=1.0, high_freq_factor=4.0,
                             original_max_position_embeddings=16))),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {}),
    "mistral_window": ("MistralConfig", "MistralForCausalLM", dict(sliding_window=5)),
}


def _batch():
    """[3,9] ids with one unpadded row and two left-padded rows."""
    rng = np.random.RandomState(0)
    ids = rng.randint(3, VOCAB, (3, 9)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, :3] = 0
    mask[2, :6] = 0
    return ids, mask


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """name -> (dir, HF torch model) for each variant, random weights."""
    out = {}
    for i, (name, (config_cls, model_cls, extra)) in enumerate(VARIANTS.items()):
        torch.manual_seed(i)
        config = getattr(transformers, config_cls)(**COMMON, **extra)
        model = getattr(transformers, model_cls)(config).eval()
        if name == "qwen2":  # random non-zero qkv biases so the bias path is exercised
            with torch.no_grad():
                for layer in model.model.layers:
                    layer.self_attn.q_proj.bias.normal_(0, 0.5)
                    layer.self_attn.k_proj.bias.normal_(0, 0.5)
        path = tmp_path_factory.mktemp(name)
        model.save_pretrained(path)
        out[name] = (path, model)
    return out


@pytest.fixture(scope="module")
def llama(checkpoints):
    return load_pretrained(checkpoints["llama"][0])


@nnx.jit
def forward(model, ids, mask):
    """Jitted logits (one compilation per model and shape keeps the tests fast)."""
    return model(ids, attention_mask=mask)


@nnx.jit
def forward_packed(model, ids, segment_ids):
    return model(ids, segment_ids=segment_ids)


def _hf_logits(model, ids, mask=None):
    with torch.no_grad():
        kwargs = {} if mask is None else {"attention_mask": torch.tensor(mask)}
        return model(torch.tensor(ids, dtype=torch.long), **kwargs).logits.numpy()


@pytest.mark.parametrize("name", list(VARIANTS))
def test_logits_match_hf_with_and_without_padding(checkpoints, name):
    path, hf_model = checkpoints[name]
    model = load_pretrained(path)
    ids, mask = _batch()
    ours = np.asarray(forward(model, ids, mask))
    ref = _hf_logits(hf_model, ids, mask)
    assert ours.dtype == np.float32 and ours.shape == (3, 9, VOCAB)
    np.testing.assert_allclose(ours * mask[..., None], ref * mask[..., None], atol=1e-4)
    np.testing.assert_allclose(np.asarray(forward(model, ids, np.ones_like(mask))),
                               _hf_logits(hf_model, ids), atol=1e-4)


def test_config_mapping(checkpoints):
    llama3 = load_pretrained(checkpoints["llama3_tied"][0])
    assert llama3.lm_head is None
    assert (llama3.config.rope_type, llama3.config.rope_factor) == ("llama3", 8.0)
    assert llama3.config.rms_norm_eps == 1e-5
    qwen = load_pretrained(checkpoints["qwen2"][0])
    assert qwen.config.qkv_bias and not qwen.config.o_bias
    assert load_pretrained(checkpoints["mistral_window"][0]).config.sliding_window == 5


def test_hidden_states_and_inputs_embeds(checkpoints, llama):
    ids, mask = _batch()
    with torch.no_grad():
        ref = checkpoints["llama"][1](torch.tensor(ids, dtype=torch.long),
                                      attention_mask=torch.tensor(mask),
                                      output_hidden_states=True).hidden_states
    all_hidden, from_embeds, logits, last_hidden = _hidden_views(llama, ids, mask)
    ours = np.asarray(all_hidden)
    assert ours.shape == (3, 3, 9, 64)
    for layer in range(3):
        np.testing.assert_allclose(ours[layer] * mask[..., None],
                                   ref[layer].numpy() * mask[..., None], atol=1e-4)
    np.testing.assert_allclose(np.asarray(from_embeds), np.asarray(logits), atol=1e-5)
    np.testing.assert_allclose(np.asarray(last_hidden), ours[-1], atol=1e-6)


@nnx.jit
def _hidden_views(model, ids, mask):
    embeds = model.embed_tokens(ids)
    return (model(ids, attention_mask=mask, return_hidden="all"),
            model(inputs_embeds=embeds, attention_mask=mask), model(ids, attention_mask=mask),
            model(ids, attention_mask=mask, return_hidden=True))


def test_packed_segments_equal_separate_sequences(llama):
    ids, _ = _batch()
    a, b = ids[0, :5], ids[1, :4]
    packed = np.stack([np.concatenate([a, b]), ids[2]])
    segments = np.array([[1] * 5 + [2] * 4, [1] * 9])
    out = np.asarray(forward_packed(llama, packed, segments))
    separate = np.asarray(forward(llama, ids, np.ones_like(ids)))
    np.testing.assert_allclose(out[0, :5], separate[0, :5], atol=1e-5)
    np.testing.assert_allclose(out[0, 5:], separate[1, :4], atol=1e-5)
    np.testing.assert_allclose(out[1], separate[2], atol=1e-5)


@nnx.jit(static_argnums=(3, 4))
def prefill(model, ids, mask, beams, steps):
    return model.prefill(ids, mask, num_beams=beams, max_new_tokens=steps)


@nnx.jit
def decode_step(model, tokens, state, step):
    return model.decode_step(tokens, state, step)


@nnx.jit
def reorder_beams(model, state, parent):
    return model.reorder_beams(state, parent)


def test_prefill_decode_step_reorder_match_full_forward(checkpoints):
    """Beam decoding through the cache equals the full forward on the concatenated sequences
    (Mistral variant: grouped-query attention plus a sliding window over prompt and generated)."""
    model = load_pretrained(checkpoints["mistral_window"][0])
    ids, mask = _batch()
    batch, prompt_len = ids.shape
    beams, steps = 3, 4
    rng = np.random.RandomState(1)
    state, logits0 = prefill(model, ids, mask, beams, steps)
    assert state.prefix_k[0].shape == (batch, 2, prompt_len, 16)  # shared per user, head-major
    assert state.gen_k[0].shape == (batch, beams, 2, steps, 16)  # per beam, generated only
    history = np.zeros((batch, beams, 0), np.int32)  # each beam's tokens so far
    logits_history = np.zeros((batch, beams, 0, VOCAB), np.float32)  # and its logits
    for step in range(steps):
        if step > 0:
            parent = rng.randint(0, beams, (batch, beams)).astype(np.int32)
            state = reorder_beams(model, state, parent)
            history = np.take_along_axis(history, parent[:, :, None], axis=1)
            logits_history = np.take_along_axis(logits_history, parent[:, :, None, None], axis=1)
        tokens = rng.randint(3, VOCAB, (batch, beams)).astype(np.int32)
        logits, state = decode_step(model, tokens, state, step)
        history = np.concatenate([history, tokens[:, :, None]], axis=2)
        logits_history = np.concatenate([logits_history, np.asarray(logits)[:, :, None]], axis=2)
    full_ids = np.concatenate([np.repeat(ids[:, None], beams, 1), history], axis=2)
    full_mask = np.concatenate([np.repeat(mask[:, None], beams, 1), np.ones_like(history)], 2)
    full = np.asarray(forward(model, full_ids.reshape(batch * beams, -1),
                              full_mask.reshape(batch * beams, -1)))
    full = full.reshape(batch, beams, prompt_len + steps, VOCAB)
    np.testing.assert_allclose(np.asarray(logits0), full[:, 0, prompt_len - 1], atol=1e-4)
    np.testing.assert_allclose(logits_history, full[:, :, prompt_len:], atol=1e-4)


def test_decode_step_inside_jit_while_loop(llama):
    """Greedy decoding with decode_step in lax.fori_loop under jit equals eager stepping."""
    ids, mask = _batch()
    steps = 4
    graphdef, params = nnx.split(llama)

    @jax.jit
    def greedy(params, ids, mask):
        model = nnx.merge(graphdef, params)
        state, logits0 = model.prefill(ids, mask, num_beams=1, max_new_tokens=steps)
        first = jnp.argmax(logits0, -1).astype(jnp.int32)[:, None]
        out = jnp.zeros((ids.shape[0], steps), jnp.int32).at[:, 0].set(first[:, 0])

        def body(step, carry):
            tokens, out, state = carry
            logits, state = model.decode_step(tokens, state, step)
            nxt = jnp.argmax(logits, -1).astype(jnp.int32)
            return nxt, out.at[:, step + 1].set(nxt[:, 0]), state

        _, out, _ = jax.lax.fori_loop(0, steps - 1, body, (first, out, state))
        return out

    out = np.asarray(greedy(params, ids, mask))
    full = np.asarray(forward(llama, np.concatenate([ids, out], 1),
                              np.concatenate([mask, np.ones_like(out)], 1)))
    np.testing.assert_array_equal(out, np.argmax(full[:, ids.shape[1] - 1:-1], -1))


def test_save_then_hf_loads_same_logits(checkpoints, tmp_path):
    for name, shard_bytes in (("llama3_tied", 5 * 2**30), ("qwen2", 50_000)):
        model = load_pretrained(checkpoints[name][0])
        save_pretrained(model, tmp_path / name, max_shard_bytes=shard_bytes)
        sharded = (tmp_path / name / "model.safetensors.index.json").is_file()
        assert sharded == (name == "qwen2")
        assert (tmp_path / name / "model.safetensors").is_file() != sharded
        reloaded = getattr(transformers, VARIANTS[name][1]).from_pretrained(tmp_path / name)
        ids, mask = _batch()
        ref = _hf_logits(reloaded.eval(), ids, mask)
        np.testing.assert_allclose(np.asarray(forward(model, ids, mask)) * mask[..., None],
                                   ref * mask[..., None], atol=1e-4)
    save_pretrained(model, tmp_path / "qwen2")  # unsharded over sharded: stale shards removed
    assert [p.name for p in (tmp_path / "qwen2").glob("model*")] == ["model.safetensors"]


def test_sharded_checkpoint_and_placement(checkpoints, tmp_path):
    path, hf_model = checkpoints["llama"]
    hf_model.save_pretrained(tmp_path, max_shard_size="100KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    mesh = jax.sharding.Mesh(np.array(jax.devices()).reshape(2, -1), ("data", "tensor"))
    rules = {"mlp": "tensor", "heads": "tensor", "vocab": "tensor"}

    def sharding(axes, shape):
        spec = [rules.get(a) if a else None for a in axes]
        return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(*spec))

    model = load_pretrained(tmp_path, sharding=sharding)
    kernel = model.layers[0].mlp.up_proj.kernel
    assert kernel.get_metadata("out_sharding") == ("embed", "mlp")
    assert kernel[...].sharding.spec == jax.sharding.PartitionSpec(None, "tensor")
    # a pytree of shardings shaped like nnx.state(model, nnx.Param) works too
    tree = jax.tree.map(lambda x: x.sharding, nnx.state(model, nnx.Param))
    again = load_pretrained(tmp_path, sharding=tree)
    assert again.lm_head.kernel[...].sharding.spec == jax.sharding.PartitionSpec(None, "tensor")
    ids, mask = _batch()
    np.testing.assert_allclose(np.asarray(forward(model, ids, mask)) * mask[..., None],
                               _hf_logits(hf_model, ids, mask) * mask[..., None], atol=1e-4)


def test_every_parameter_has_logical_axes():
    for config in (tiny_llama_config(VOCAB, qkv_bias=True), tiny_t5_config(VOCAB)):
        model = nnx.eval_shape(lambda: build_model(config))
        for path, variable in nnx.to_flat_state(nnx.state(model, nnx.Param)):
            axes = variable.get_metadata("out_sharding")
            assert axes and len(axes) == len(variable.shape), path
            assert set(axes) <= {"vocab", "embed", "mlp", "heads", "kv_heads", "rel_buckets"}


def test_bf16_checkpoint_round_trip(llama, tmp_path):
    save_pretrained(llama, tmp_path, dtype="bfloat16")
    assert json.loads((tmp_path / "config.json").read_text())["torch_dtype"] == "bfloat16"
    reloaded = load_pretrained(tmp_path)
    assert reloaded.norm.scale[...].dtype == jnp.float32
    ids, mask = _batch()
    np.testing.assert_allclose(np.asarray(forward(reloaded, ids, mask)) * mask[..., None],
                               np.asarray(forward(llama, ids, mask)) * mask[..., None], atol=0.05)


def test_bf16_compute_keeps_fp32_params(checkpoints, llama):
    model = load_pretrained(checkpoints["llama"][0], dtype="bfloat16", param_dtype="float32")
    assert model.layers[0].self_attn.q_proj.kernel[...].dtype == jnp.float32
    ids, mask = _batch()
    out = np.asarray(forward(model, ids, mask))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out * mask[..., None],
                               np.asarray(forward(llama, ids, mask)) * mask[..., None],
                               atol=0.1)


def test_clear_errors(checkpoints, tmp_path):
    with pytest.raises(JaxrecError, match="config.json"):
        load_pretrained(tmp_path / "nowhere")
    path = checkpoints["llama"][0]
    config = json.loads((path / "config.json").read_text())
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    (bad / "model.safetensors").symlink_to(path / "model.safetensors")
    with pytest.raises(JaxrecError, match="unsupported model_type 'gpt2'"):
        load_pretrained(bad)
    (bad / "config.json").write_text(json.dumps({**config, "intermediate_size": 100}))
    with pytest.raises(JaxrecError, match="shape"):
        load_pretrained(bad)
    (bad / "model.safetensors").unlink()
    with pytest.raises(JaxrecError, match="no model.safetensors"):
        load_pretrained(bad)
    (bad / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))
    (bad / "model.safetensors").symlink_to(path / "model.safetensors")
    with pytest.raises(JaxrecError, match="missing from the checkpoint"):
        load_pretrained(bad)


@pytest.mark.parametrize("padding", ["none", "right", "left", "packed"])
def test_every_attention_kernel_cpu_can_run_equals_the_dense_mask(padding):
    """The mask-free XLA path (is_causal + a [B,1,1,S] key mask) and the Pallas splash kernel (interpret mode on CPU;
    padding and packing as segment ids, kv heads repeated) against today's dense [B,1,T,T] mask, on a length that is
    not a multiple of the splash block, with grouped queries; rows of real query tokens are compared."""
    from jaxrec.models.attention import CausalMask, attend, attend_causal

    batch, length, heads, kv_heads, dim = 3, 40, 4, 2, 8
    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.normal(size=(batch, length, heads, dim)), jnp.float32)
    k, v = (jnp.asarray(rng.normal(size=(batch, length, kv_heads, dim)), jnp.float32) for _ in range(2))
    lengths = np.array([40, 23, 7])
    real = np.ones((batch, length), bool)
    key_mask = segments = None
    if padding == "right":
        real = np.arange(length)[None] < lengths[:, None]
        key_mask = jnp.asarray(real)
    elif padding == "left":
        real = np.arange(length)[None] >= (length - lengths)[:, None]
        key_mask = jnp.asarray(real)
    elif padding == "packed":
        ids = np.minimum(np.arange(length) // 15 + 1, 3)[None].repeat(batch, 0)
        ids[1, 30:] = 0  # padding at the end of row 1
        real, segments = ids > 0, jnp.asarray(ids)
    for impl in ("xla", "splash"):
        mask = CausalMask(key_mask=key_mask, segment_ids=segments, implementation=impl)
        dense = attend(q, k, v, mask.dense(length) if (key_mask is not None or segments is not None)
                       else CausalMask(key_mask=jnp.ones((batch, length), bool)).dense(length), scale=dim ** -0.5)
        out = attend_causal(q, k, v, mask, scale=dim ** -0.5)
        np.testing.assert_allclose(np.asarray(out)[real], np.asarray(dense)[real], atol=2e-6, err_msg=impl)


def test_a_llama_model_gives_the_same_logits_with_every_attention_kernel_and_names_bad_ones():
    from jaxrec.errors import ConfigError
    from jaxrec.models.attention import resolve_implementation, use_attention

    model = build_model(tiny_llama_config(64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                                          num_kv_heads=2, head_dim=8), seed=0)
    ids = np.random.default_rng(1).integers(3, 64, (2, 24))
    mask = np.ones((2, 24), np.int32)
    mask[1, :9] = 0  # left padding, as prompts are batched for decoding
    logits = {}
    for impl in ("xla", "splash"):
        use_attention(model, impl)
        logits[impl] = np.asarray(model(ids, mask))
    np.testing.assert_allclose(logits["splash"][mask == 1], logits["xla"][mask == 1], atol=1e-5)
    assert resolve_implementation("auto", jnp.bfloat16) == "xla"  # on CPU
    with pytest.raises(ConfigError, match="model.attention: 'flash'; expected one of auto, xla, cudnn, splash"):
        use_attention(model, "flash")
