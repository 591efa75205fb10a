"""Item text embeddings: the item documents, a sentence encoder and an LLM through ``encode_texts``
against HF PyTorch one text at a time, `jaxrec index build --item-text`, BIGRec grounding with a
sentence encoder against brute force, chat-template prompts."""

import json
import subprocess
import sys

import numpy as np
import pytest

from jaxrec.data.synthetic import make_preset
from jaxrec.data.tasks.item_text import documents
from jaxrec.errors import ConfigError, DataError
from jaxrec.ground.embed import encode_texts
from jaxrec.models.prompts import bos_id, chat_prompts
from jaxrec.models.section import ModelSection
from jaxrec.models.run_dir import make_tokenizer

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

WORDS = ["the", "red", "blue", "guitar", "song", "movie", "toy", "story", "of", "a", "and", "item", "brand", "cat"]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """(directory, HF torch BertModel): random weights and a WordPiece tokenizer over a few words."""
    path = tmp_path_factory.mktemp("bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *"abcdefghijklmnopqrstuvwxyz0123456789",
             *[f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz0123456789"], "(", ")", ",", "."]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    transformers.BertTokenizerFast(vocab_file=str(path / "vocab.txt")).save_pretrained(path)
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=64)
    model = transformers.BertModel(config, add_pooling_layer=False).eval()
    model.save_pretrained(path)
    return path, model


def hf_embedding(path, model, text):
    """The sentence-transformers embedding of one unpadded text: mean of the last layer, unit norm."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(path))
    ids = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**ids).last_hidden_state[0].numpy()
    mean = hidden.mean(0)
    return mean / np.linalg.norm(mean)


def test_documents_join_the_chosen_fields():
    ds = make_preset("tiny", seed=0)
    item = ds.items[0]
    docs = documents(ds, ["title", "categories"])
    assert docs[0] == f"{item['title']} {', '.join(item['categories'])}"
    assert documents(ds)[0] == f"{item['title']} {item['description']}"
    with pytest.raises(DataError, match="expected a non-empty list"):
        documents(ds, ["title", "price"])


def test_sentence_encoder_embeddings_match_hf_one_text_at_a_time(tiny_bert):
    path, model = tiny_bert
    texts = ["toy story", "the red guitar song and a blue cat", "movie", "a story of the brand item 42"]
    ours = encode_texts(str(path), texts, batch_size=3)  # two batches, texts reordered by length inside
    assert ours.shape == (4, 32)
    for row, text in zip(ours, texts):
        np.testing.assert_allclose(row, hf_embedding(path, model, text), atol=1e-5)


def test_index_build_from_item_text(tiny_bert, tmp_path):
    path, _ = tiny_bert
    data = tmp_path / "shop"
    make_preset("tiny", seed=0).save(data)
    out = tmp_path / "shop.index.json"
    cmd = [sys.executable, "-m", "jaxrec.cli", "index", "build", "--item-text", str(data), "--encoder", str(path),
           "--fields", "title,categories", "--out", str(out), "--set", "train.epochs=3", "--set", "model.levels=2",
           "--set", "model.codebook_size=8",
           "--set", "train.sinkhorn_epsilons=[0.0,0.003]"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    index = json.loads(out.read_text())
    report = json.loads(out.with_name("shop.index.report.json").read_text())
    assert len(index) == len(make_preset("tiny", seed=0).items)
    assert report["encoder"] == str(path) and report["fields"] == ["title", "categories"]
    assert report["collision_rate_final"] == 0.0


def test_chat_prompts_use_the_template_or_say_there_is_none(tmp_path):
    from jaxrec.models.tokenizer import load_tokenizer, save_tokenizer, train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer(["a user watched a movie"] * 10, 64)
    section = ModelSection(chat_template=True)
    with pytest.raises(ConfigError, match="has no chat template"):
        chat_prompts(tokenizer, section, ["hi"])
    tokenizer.chat_template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}{% endfor %}[assistant] "
    assert chat_prompts(tokenizer, section, ["hi"]) == ["[user] hi[assistant] "]
    assert chat_prompts(tokenizer, ModelSection(), ["hi"]) == ["hi"]
    assert bos_id(tokenizer) == tokenizer.bos_token_id == 3
    assert bos_id(load_tokenizer(save_tokenizer(tokenizer, tmp_path / "with_bos"))) == 3
    tokenizer.init_kwargs["add_bos_token"] = False  # as a GGUF file's metadata says for SmolLM2
    assert bos_id(tokenizer) is None
    assert bos_id(load_tokenizer(save_tokenizer(tokenizer, tmp_path / "no_bos"))) is None


def test_bigrec_grounding_with_a_sentence_encoder_matches_hf_brute_force(tiny_bert, tmp_path):
    """BIGRec with ``ground.encoder``: every test generation (generations.jsonl) and every title embedded by
    HF torch one at a time, ranked by numpy L2 with the tie rule, gives the run's free-generation metrics."""
    from test_bigrec import TINY

    from jaxrec.config import from_dict
    from jaxrec.data.tasks.item_text import titles
    from jaxrec.eval.metrics import metrics_from_ranks
    from jaxrec.methods import bigrec
    from jaxrec.data.source import load_dataset

    path, model = tiny_bert
    config = from_dict(bigrec.Config, {**TINY, "out_dir": str(tmp_path / "run"), "ground": {"encoder": str(path)},
                                       "eval": {"ks": [1, 5, 10], "constrained": False}})
    bigrec.train(config)
    result = bigrec.evaluate(config)
    assert result["free"]["ground_model"] == str(path)
    item_titles = titles(load_dataset(config.data))
    items = np.stack([hf_embedding(path, model, t) for t in item_titles])
    rows = [json.loads(line) for line in (tmp_path / "run" / "generations.jsonl").read_text().splitlines()]
    test = [r for r in rows if r["part"] == "test"]
    ranks = []
    for row in test:
        query = hf_embedding(path, model, row["free"].strip().strip('"'))
        dist = ((items - query) ** 2).sum(1)
        target = item_titles.index(row["target"])
        ranks.append(1 + np.sum(dist < dist[target] - 1e-9) + np.sum((np.abs(dist - dist[target]) <= 1e-9)
                                                                     & (np.arange(len(items)) < target)))
    expected = metrics_from_ranks(np.asarray(ranks), [1, 5, 10])
    assert {k: result["free"]["test"][k] for k in expected} == pytest.approx(expected)


def test_chat_template_is_refused_by_recipes_that_do_not_apply_it(tmp_path):

    with pytest.raises(ConfigError, match="supported by the bigrec recipe only"):
        make_tokenizer(ModelSection(chat_template=True), lambda: ["a b"], tmp_path)
