"""BPE training, token addition, embedding resize; the result still loads in transformers."""

import numpy as np
import pytest
from flax import nnx

from jaxrec.errors import JaxrecError
from jaxrec.models import build_model, save_pretrained, tiny_llama_config, tiny_t5_config
from jaxrec.models.tokenizer import (add_tokens, load_tokenizer, resize_token_embeddings,
                                     train_bpe_tokenizer)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TEXTS = [f"user {u} watched movie number {m} and liked the {w} scenes"
         for u in range(40) for m, w in ((u * 7 % 13, "funny"), (u * 5 % 11, "quiet"))]
NEW_TOKENS = ["<a_12>", "<b_7>", "<c_3>"]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok")
    train_bpe_tokenizer(TEXTS, vocab_size=300, path=path)
    return path


def test_trained_tokenizer_round_trips_through_hf_files(tokenizer_dir):
    tokenizer = load_tokenizer(tokenizer_dir)
    assert [tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id,
            tokenizer.bos_token_id] == [0, 1, 2, 3]
    assert len(tokenizer) <= 300
    ids = tokenizer("user 3 watched movie number 8")["input_ids"]
    assert tokenizer.decode(ids) == "user 3 watched movie number 8"
    hf = transformers.AutoTokenizer.from_pretrained(str(tokenizer_dir))
    assert hf("liked the quiet scenes")["input_ids"] == tokenizer("liked the quiet scenes")[
        "input_ids"]


@nnx.jit
def forward(model, ids):
    return model(ids)


def test_added_tokens_and_resized_llama_load_in_hf(tokenizer_dir, tmp_path):
    tokenizer = load_tokenizer(tokenizer_dir)
    old_vocab = len(tokenizer)
    new_ids = add_tokens(tokenizer, NEW_TOKENS)
    assert new_ids == list(range(old_vocab, old_vocab + 3))
    assert tokenizer("<a_12><b_7> movie")["input_ids"][:2] == new_ids[:2]
    model = build_model(tiny_llama_config(old_vocab))
    old_rows = np.asarray(model.embed_tokens.embedding[...])
    resize_token_embeddings(model, len(tokenizer))
    rows = np.asarray(model.embed_tokens.embedding[...])
    assert model.config.vocab_size == len(tokenizer) and rows.shape[0] == len(tokenizer)
    np.testing.assert_array_equal(rows[:old_vocab], old_rows)
    np.testing.assert_allclose(rows[old_vocab:], np.broadcast_to(old_rows.mean(0), (3, 64)),
                               atol=0.01 * old_rows.std() * 6)
    assert not np.allclose(rows[old_vocab], rows[old_vocab + 1])  # noise breaks the symmetry
    assert model.lm_head.kernel[...].shape == (64, len(tokenizer))

    save_pretrained(model, tmp_path)
    tokenizer.save_pretrained(tmp_path)
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    ids = np.array([hf_tokenizer("<c_3> user 5 liked <a_12>")["input_ids"]], np.int32)
    assert new_ids[2] in ids and new_ids[0] in ids
    with torch.no_grad():
        ref = hf_model(torch.tensor(ids, dtype=torch.long)).logits.numpy()
    np.testing.assert_allclose(np.asarray(forward(model, ids)), ref, atol=1e-4)


def test_resized_t5_loads_in_hf(tmp_path):
    model = build_model(tiny_t5_config(100))
    resize_token_embeddings(model, 104)
    assert model.shared.embedding[...].shape == (104, 64)
    assert model.lm_head.kernel[...].shape == (64, 104)
    save_pretrained(model, tmp_path)
    hf_model = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path)
    np.testing.assert_array_equal(hf_model.shared.weight.detach().numpy(),
                                  np.asarray(model.shared.embedding[...]))
    np.testing.assert_array_equal(hf_model.lm_head.weight.detach().numpy(),
                                  np.asarray(model.lm_head.kernel[...]).T)
    resize_token_embeddings(model, 90)
    assert model.config.vocab_size == 90 and model.lm_head.kernel[...].shape == (64, 90)


def test_tokenizer_errors(tmp_path):
    with pytest.raises(JaxrecError, match="not found"):
        load_tokenizer(tmp_path / "missing")
    with pytest.raises(JaxrecError, match="not a loadable"):
        load_tokenizer(tmp_path)
    with pytest.raises(JaxrecError, match="must exceed"):
        train_bpe_tokenizer(TEXTS, vocab_size=3)
