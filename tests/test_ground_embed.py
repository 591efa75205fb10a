"""Embedding extraction vs transformers hidden states on a tiny random Llama (left/right padding)."""

import numpy as np
import pytest

from jaxrec.errors import JaxrecError
from jaxrec.ground.embed import Embedder
from jaxrec.models import load_pretrained

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VOCAB, LENGTHS, T = 97, (8, 5, 2), 8


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    hf = transformers.LlamaForCausalLM(config).eval()
    path = tmp_path_factory.mktemp("tiny_llama")
    hf.save_pretrained(path)
    rows = [list(np.random.default_rng(i).integers(3, VOCAB, n)) for i, n in enumerate(LENGTHS)]
    return hf, load_pretrained(path, dtype="float32"), rows


def padded(rows, side):
    ids, mask = np.zeros((len(rows), T), np.int32), np.zeros((len(rows), T), np.int32)
    for i, row in enumerate(rows):
        span = slice(T - len(row), T) if side == "left" else slice(0, len(row))
        ids[i, span], mask[i, span] = row, 1
    return ids, mask


def hf_hidden(hf, rows, layer):
    """HF hidden_states[layer] of each row run alone (no padding): [n, d] per row."""
    with torch.no_grad():
        return [hf(torch.tensor([row]), output_hidden_states=True).hidden_states[layer][0].numpy() for row in rows]


@pytest.mark.parametrize("pooling,layer", [("last", -1), ("mean", 1)])
def test_pooling_matches_transformers_for_both_paddings(tiny, pooling, layer):
    hf, model, rows = tiny
    reference = [h[-1] if pooling == "last" else h.mean(0) for h in hf_hidden(hf, rows, layer)]
    embedder = Embedder(model, pooling=pooling, layer=layer)
    for side in ("left", "right"):
        out = np.asarray(embedder(*padded(rows, side)))
        assert out.shape == (3, 32) and out.dtype == np.float32
        np.testing.assert_allclose(out, np.stack(reference), atol=1e-4, rtol=1e-4)


def test_embed_texts_blocks_and_sharded_batch(tiny):
    hf, model, rows = tiny
    by_text = {f"t{i}": row for i, row in enumerate(rows)}

    def tokenizer(texts, truncation, max_length):
        return {"input_ids": [by_text[t][:max_length] for t in texts]}

    reference = np.stack([h[-1] for h in hf_hidden(hf, rows, -1)])
    embedder = Embedder(model)
    # batches of 3 rows x 8 tokens: the same compiled forward as the test above
    blocks = list(embedder.embed_texts(tokenizer, ["t0", "t1", "t2", "t1"], batch_size=3, max_length=T))
    assert [b.shape for b in blocks] == [(3, 32), (1, 32)]
    np.testing.assert_allclose(np.concatenate(blocks), reference[[0, 1, 2, 1]], atol=1e-4, rtol=1e-4)

    from jaxrec.parallel.mesh import MeshConfig, make_mesh

    sharded = Embedder(model, mesh=make_mesh(MeshConfig(data=8)))
    ids, mask = padded(rows * 2 + rows[:2], "left")  # batch 8 split over 8 devices
    np.testing.assert_allclose(np.asarray(sharded(ids, mask))[:3], reference, atol=1e-4, rtol=1e-4)


def test_clear_errors(tiny):
    _, model, rows = tiny
    with pytest.raises(JaxrecError, match="unknown pooling"):
        Embedder(model, pooling="cls")
    with pytest.raises(JaxrecError, match="layer must be in"):
        Embedder(model, layer=3)
    ids, mask = padded(rows, "left")
    mask[1] = 0
    with pytest.raises(JaxrecError, match="at least one real token"):
        Embedder(model)(ids, mask)
