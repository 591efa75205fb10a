"""T5 / FLAN-T5 parity with HF PyTorch, the decoding protocol and the HF round trip."""

import numpy as np
import pytest
from flax import nnx

from jaxrec.errors import JaxrecError
from jaxrec.models import load_pretrained, save_pretrained

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VOCAB = 128
# Few buckets and a short max distance so 20-token inputs reach the log-spaced buckets.
COMMON = dict(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
              relative_attention_num_buckets=8, relative_attention_max_distance=12)
VARIANTS = {
    "flan_untied": dict(feed_forward_proj="gated-gelu"),
    "t5_tied_relu": dict(feed_forward_proj="relu", num_decoder_layers=1),
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """name -> (dir, HF torch model). FLAN-style: separate lm_head, no output rescale."""
    out = {}
    for i, (name, extra) in enumerate(VARIANTS.items()):
        torch.manual_seed(10 + i)
        model = transformers.T5ForConditionalGeneration(
            transformers.T5Config(**COMMON, **extra)).eval()
        if name == "flan_untied":
            model.lm_head.weight = torch.nn.Parameter(torch.randn(VOCAB, 32))
            model.config.scale_decoder_outputs = False
        path = tmp_path_factory.mktemp(name)
        model.save_pretrained(path)
        out[name] = (path, model)
    return out


def _batch():
    rng = np.random.RandomState(0)
    ids = rng.randint(2, VOCAB, (3, 20)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 14:] = 0
    mask[2, 6:] = 0
    decoder_ids = rng.randint(2, VOCAB, (3, 18)).astype(np.int32)
    decoder_ids[:, 0] = 0
    return ids, mask, decoder_ids


@nnx.jit
def forward(model, ids, mask, decoder_ids):
    return model(ids, attention_mask=mask, decoder_input_ids=decoder_ids)


def _hf_logits(model, ids, mask, decoder_ids):
    with torch.no_grad():
        return model(input_ids=torch.tensor(ids, dtype=torch.long),
                     attention_mask=torch.tensor(mask),
                     decoder_input_ids=torch.tensor(decoder_ids, dtype=torch.long)).logits.numpy()


@pytest.mark.parametrize("name", list(VARIANTS))
def test_logits_match_hf_with_padding(checkpoints, name):
    path, hf_model = checkpoints[name]
    model = load_pretrained(path)
    assert (model.lm_head is None) == (name == "t5_tied_relu")
    assert model.config.scale_decoder_outputs == (name == "t5_tied_relu")
    ids, mask, decoder_ids = _batch()
    ours = np.asarray(forward(model, ids, mask, decoder_ids))
    assert ours.shape == (3, 18, VOCAB) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, _hf_logits(hf_model, ids, mask, decoder_ids), atol=1e-4)


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
    model = load_pretrained(checkpoints["flan_untied"][0])
    ids, mask, _ = _batch()
    batch, beams, steps = 3, 2, 4
    rng = np.random.RandomState(2)
    state, logits0 = prefill(model, ids, mask, beams, steps)
    assert state.cross_k[0].shape == (batch, 20, 4, 8)  # encoder K/V once per user
    assert state.gen_k[0].shape == (batch, beams, 4, steps, 8)  # per beam, head-major
    history = np.zeros((batch, beams, 0), np.int32)
    logits_history = np.zeros((batch, beams, 0, VOCAB), np.float32)
    for step in range(steps):
        if step > 0:
            parent = rng.randint(0, beams, (batch, beams)).astype(np.int32)
            state = reorder_beams(model, state, parent)
            history = np.take_along_axis(history, parent[:, :, None], axis=1)
            logits_history = np.take_along_axis(logits_history, parent[:, :, None, None], axis=1)
        tokens = rng.randint(2, VOCAB, (batch, beams)).astype(np.int32)
        logits, state = decode_step(model, tokens, state, step)
        history = np.concatenate([history, tokens[:, :, None]], axis=2)
        logits_history = np.concatenate([logits_history, np.asarray(logits)[:, :, None]], axis=2)
    decoder_ids = np.concatenate([np.zeros((batch, beams, 1), np.int32), history], axis=2)
    full = np.asarray(forward(model, np.repeat(ids, beams, 0), np.repeat(mask, beams, 0),
                              decoder_ids.reshape(batch * beams, -1)))
    full = full.reshape(batch, beams, steps + 1, VOCAB)
    np.testing.assert_allclose(np.asarray(logits0), full[:, 0, 0], atol=1e-4)
    np.testing.assert_allclose(logits_history, full[:, :, 1:], atol=1e-4)


@nnx.jit
def _embeds_views(model, ids, mask, decoder_ids):
    embeds = model.shared(ids)
    return (model(inputs_embeds=embeds, attention_mask=mask, decoder_input_ids=decoder_ids),
            model.encode(ids, mask, return_all=True),
            model(ids, attention_mask=mask, decoder_input_ids=decoder_ids, return_hidden="all"))


def test_inputs_embeds_and_hidden_states(checkpoints):
    path, hf_model = checkpoints["flan_untied"]
    model = load_pretrained(path)
    ids, mask, decoder_ids = _batch()
    from_embeds, encoder_all, decoder_all = _embeds_views(model, ids, mask, decoder_ids)
    np.testing.assert_allclose(np.asarray(from_embeds),
                               _hf_logits(hf_model, ids, mask, decoder_ids), atol=1e-4)
    with torch.no_grad():
        ref = hf_model(input_ids=torch.tensor(ids, dtype=torch.long),
                       attention_mask=torch.tensor(mask),
                       decoder_input_ids=torch.tensor(decoder_ids, dtype=torch.long),
                       output_hidden_states=True)
    np.testing.assert_allclose(np.asarray(encoder_all)[-1] * mask[..., None],
                               ref.encoder_last_hidden_state.numpy() * mask[..., None], atol=1e-4)
    assert np.asarray(decoder_all).shape == (3, 3, 18, 32)
    np.testing.assert_allclose(np.asarray(decoder_all)[-1], ref.decoder_hidden_states[-1].numpy(),
                               atol=1e-4)


def test_save_then_hf_loads_same_logits(checkpoints, tmp_path):
    ids, mask, decoder_ids = _batch()
    for name in VARIANTS:
        model = load_pretrained(checkpoints[name][0])
        save_pretrained(model, tmp_path / name)
        reloaded = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / name).eval()
        np.testing.assert_allclose(_hf_logits(reloaded, ids, mask, decoder_ids),
                                   np.asarray(forward(model, ids, mask, decoder_ids)), atol=1e-4)


def test_forward_without_decoder_ids_is_a_clear_error(checkpoints):
    model = load_pretrained(checkpoints["t5_tied_relu"][0])
    ids, mask, _ = _batch()
    with pytest.raises(JaxrecError, match="decoder_input_ids"):
        model(ids, attention_mask=mask)
