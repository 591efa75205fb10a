"""LC-Rec recipe: a tiny end-to-end run (LoRA on a saved "pretrained" tiny Llama, new token rows only):
fixed-seed figures, the written metrics recomputed from the beams and popularity by brute force; index
sources and configs."""

import json
from pathlib import Path

import numpy as np
import pytest

from jaxrec.config import from_dict
from jaxrec.index.source import index_mapping, index_token_ids
from jaxrec.decode.driver import generate
from jaxrec.models.prompts import prompt_ids
from jaxrec.models.section import ModelSection, make_model
from jaxrec.models.run_dir import load_run, make_tokenizer

from brute_force import hr_ndcg, list_rank, occurrences, rank_of, subset

SYNTHETIC = {"synthetic": {"preset": "tiny", "num_users": 60, "num_items": 60}}
LEVELS, CODES = 3, 6
# Fixed-seed figures of the run below (3 steps, 8 test users; read from its results.json on CPU, fp32):
# mode -> template -> metric. One user more or less moves HR by 1/8; fp32 rounding on another host
# moves beam scores by ~1e-6, far below the gaps that order these beams, hence abs=1e-4.
TRIE = {"HR@1": 0.25, "NDCG@1": 0.25, "HR@5": 0.375, "NDCG@5": 0.328866, "HR@10": 0.375, "NDCG@10": 0.328866}
PER_LEVEL = {"HR@1": 0.0, "NDCG@1": 0.0, "HR@5": 0.25, "NDCG@5": 0.096713, "HR@10": 0.375}
FIGURES = {"trie": {0: TRIE, 1: TRIE},
           "per_level": {0: {**PER_LEVEL, "NDCG@10": 0.138380}, 1: {**PER_LEVEL, "NDCG@10": 0.141239}}}


def tiny_config(out_dir, pretrained, index_file) -> dict:
    return {
        "method": "lcrec", "out_dir": str(out_dir), "data": SYNTHETIC,
        "index": {"source": "file", "file": str(index_file)},
        "tasks": {"ratios": {"seqrec": 0.3}, "max_history": 5},
        "model": {"pretrained": str(pretrained)},
        "train": {"batch_size": 8, "steps": 3, "log_every": 1, "progress": False, "peak_flops": 1.0e12,
                  "lora": {"mode": "lora", "rank": 2, "target_modules": ["q_proj", "v_proj"],
                           "trainable": ["embed_tokens", "lm_head"]},
                  "optim": {"learning_rate": 1.0e-2, "weight_decay": 0.1},
                  "data": {"seq_len": 128}},
        "eval": {"ks": [1, 5, 10], "num_beams": 10, "modes": ["trie", "per_level"], "templates": [0, 1],
                 "users": 8, "batch_size": 8, "progress": False},
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny "pretrained" HF Llama dir, an LC-Rec index file keyed by raw ids, then train + evaluate."""
    from jaxrec.methods import lcrec
    from jaxrec.data.source import DataConfig, load_dataset
    from jaxrec.models import save_pretrained
    from jaxrec.models.tokenizer import save_tokenizer

    tmp = tmp_path_factory.mktemp("lcrec")
    ds = load_dataset(from_dict(DataConfig, SYNTHETIC))
    section = ModelSection(vocab_size=300, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2,
                               num_kv_heads=1, max_position_embeddings=256)
    tokenizer = make_tokenizer(section, lambda: lcrec.tokenizer_texts(ds), tmp / "bpe")
    save_pretrained(make_model(section, tokenizer), tmp / "hf")
    save_tokenizer(tokenizer, tmp / "hf")
    codes = np.stack(np.unravel_index(np.random.default_rng(0).permutation(CODES ** LEVELS)[:ds.num_items],
                                      (CODES,) * LEVELS), 1)  # distinct rows: collision-free
    raw_ids = [int(it["raw_id"]) for it in ds.items]
    index = {str(raw): [f"<{'abc'[lv]}_{c}>" for lv, c in enumerate(codes[i])] for i, raw in enumerate(raw_ids)}
    (tmp / "toy.index.json").write_text(json.dumps(index))
    config = from_dict(lcrec.Config, tiny_config(tmp / "run", tmp / "hf", tmp / "toy.index.json"))
    summary = lcrec.train(config)
    return config, ds, codes, summary, lcrec.evaluate(config)


def test_end_to_end_metrics_structure(run):
    config, ds, codes, summary, result = run
    assert summary["step"] == 3 and np.isfinite(summary["loss"])
    assert summary["index"] == {"source": "file", "items": 60, "levels": LEVELS, "collision_rate_final": 0.0,
                                "new_tokens": len(np.unique(codes[:, 0])) + len(np.unique(codes[:, 1]))
                                + len(np.unique(codes[:, 2]))}
    assert {"seqrec", "item2index", "index2item"} <= set(summary["train_examples"])
    test = result["test"]
    assert test["users"] == 8 and result["templates"] == [0, 1]
    keys = {f"{m}@{k}" for m in ("HR", "NDCG") for k in (1, 5, 10)}
    assert keys <= set(test["popularity"])
    for mode in ("trie", "per_level"):
        out = test[mode]
        assert set(out["per_template"]) == {0, 1}
        for k in keys:
            values = [out["per_template"][t][k] for t in (0, 1)]
            assert [out[stat][k] for stat in ("min", "mean", "max")] == pytest.approx(
                [min(values), np.mean(values), max(values)])
        for t in (0, 1):
            assert subset(out["per_template"][t], FIGURES[mode][t]) == pytest.approx(FIGURES[mode][t], abs=1e-4)
    assert test["trie"]["item_rate"] == {0: 1.0, 1: 1.0}  # every exact-trie beam is a catalog item
    assert test["per_level"]["item_rate"] == {0: 24 / 80, 1: 27 / 80}  # beams that are items, of 8 x 10
    saved = json.loads((Path(config.out_dir) / "results.json").read_text())
    assert saved == json.loads(json.dumps(result))


def test_popularity_row_equals_brute_force(run):
    """Popularity (training occurrences, ties to the lower id) on exactly the evaluated test users."""
    from jaxrec.data.splits import leave_one_out
    from jaxrec.eval.sample import eval_subset

    config, ds, _, _, result = run
    split = leave_one_out(ds)
    chosen = eval_subset(len(split.test_users), config.eval.users, config.eval.seed)
    counts = occurrences(split.train, ds.num_items)
    expected = hr_ndcg([rank_of(t, counts) for t in split.test_target[chosen]], (1, 5, 10), "MRR")
    assert subset(result["test"]["popularity"], expected) == pytest.approx(expected)


def test_constrained_beams_are_distinct_real_items_and_give_the_written_figures(run):
    """Template 0's beams for the evaluated users, both constraint modes: exact-trie beams are distinct
    catalog items; HR/NDCG by brute force from the beams equal the written per-template figures."""
    from jaxrec.data.splits import leave_one_out
    from jaxrec.data.tasks.lcrec import lcrec_eval_examples
    from jaxrec.decode import ItemTrie
    from jaxrec.decode.driver import padded_length
    from jaxrec.eval.sample import eval_subset

    config, ds, codes, _, result = run
    model, tokenizer = load_run(config.out_dir)
    ids = index_token_ids(tokenizer, codes)
    assert [tokenizer.decode(row) for row in ids[:2]] == ["".join(index_mapping(codes)[i]) for i in (0, 1)]
    trie = ItemTrie.from_sequences(ids, eos_id=tokenizer.eos_token_id, vocab_size=model.config.vocab_size)
    split = leave_one_out(ds)
    chosen = eval_subset(len(split.test_users), config.eval.users, config.eval.seed).tolist()
    prompts = [prompt_ids(tokenizer, model, [examples[i].prompt for i in chosen]) for examples in
               (lcrec_eval_examples(ds, split, index_mapping(codes), "test", t, 5) for t in (0, 1))]
    for mode in ("trie", "per_level"):
        _, _, items = generate(model, prompts[0], constraint=trie, mode=mode, num_beams=config.eval.num_beams,
                               max_new_tokens=trie.max_length + 1, eos_id=tokenizer.eos_token_id,
                               pad_id=tokenizer.pad_token_id, batch_size=config.eval.batch_size,
                               length=padded_length(prompts[0] + prompts[1]))  # as the evaluation pads them
        if mode == "trie":
            assert items.shape == (8, 10) and ((items >= 0) & (items < ds.num_items)).all()
            assert all(len(set(row)) == 10 for row in items.tolist())
        expected = hr_ndcg([list_rank(row, t) for row, t in zip(items, split.test_target[chosen])], (1, 5, 10),
                           "MRR@10")
        assert subset(result["test"][mode]["per_template"][0], expected) == pytest.approx(expected)


def test_index_tokens_added_and_only_new_rows_trained(run):
    from jaxrec.models import load_pretrained
    from jaxrec.models.tokenizer import load_tokenizer, resize_token_embeddings

    config, _, codes, summary, _ = run
    base = load_pretrained(config.model.pretrained)
    first_new = base.config.vocab_size
    tuned, tokenizer = load_run(config.out_dir)  # regrows the pretrained base's vocabulary first
    assert len(tokenizer) == first_new + summary["index"]["new_tokens"] == tuned.config.vocab_size
    assert len(load_tokenizer(config.model.pretrained)) == first_new  # the base dir is untouched
    resize_token_embeddings(base, len(tokenizer), seed=config.model.seed, noise_scale=config.tokens.noise_scale)
    vocab_params = ((0, base.embed_tokens.embedding[...], tuned.embed_tokens.embedding[...]),  # [V, d]
                    (1, base.lm_head.kernel[...], tuned.lm_head.kernel[...]))  # [d, V]
    for axis, before, after in vocab_params:
        before, after = np.asarray(before), np.asarray(after)
        old, new = np.arange(first_new), np.arange(first_new, before.shape[axis])
        np.testing.assert_array_equal(np.take(after, old, axis), np.take(before, old, axis))  # no update, no decay
        assert not np.allclose(np.take(after, new, axis), np.take(before, new, axis))
    layer_before, layer_after = base.layers[0].self_attn, tuned.layers[0].self_attn
    assert not np.allclose(layer_after.q_proj.kernel[...], layer_before.q_proj.kernel[...])  # LoRA merged
    np.testing.assert_array_equal(layer_after.k_proj.kernel[...], layer_before.k_proj.kernel[...])  # not targeted


def test_index_from_dataset_field_and_errors():
    from jaxrec.data.dataset import Dataset
    from jaxrec.errors import DataError
    from jaxrec.index.source import index_codes
    from jaxrec.methods import lcrec

    items = [{"raw_id": "7", "lcrec_index": ["<a_1>", "<b_2>"]}, {"raw_id": "3", "lcrec_index": ["<a_1>", "<b_0>"]}]
    ds = Dataset.from_sequences([[0, 1, 0], [1, 0, 1]], items)
    config = from_dict(lcrec.Config, {"data": {"path": "unused"}, "index": {"source": "dataset"}})
    codes, report = index_codes(config.index, ds)
    np.testing.assert_array_equal(codes, [[1, 2], [1, 0]])
    assert report["collision_rate_final"] == 0.0 and report["levels"] == 2
    items[1]["lcrec_index"] = ["<b_1>", "<a_0>"]
    with pytest.raises(DataError, match="item 1 .raw id 3"):
        index_codes(config.index, Dataset.from_sequences([[0, 1, 0]], items))
    items[1]["lcrec_index"] = ["<a_1>", "<b_2>"]
    with pytest.raises(DataError, match="share an index"):
        index_codes(config.index, Dataset.from_sequences([[0, 1, 0]], items))


def test_configs_load():
    from jaxrec.config import load_config
    from jaxrec.methods import lcrec

    root = Path(__file__).resolve().parents[1] / "configs" / "lcrec"
    embedded = load_config(lcrec.Config, root / "embedded.yaml")
    assert embedded == lcrec.Config(out_dir="runs/lcrec-embedded")  # the yaml spells out the defaults
    beauty = load_config(lcrec.Config, root / "beauty.yaml")
    assert beauty.index.source == "dataset" and beauty.train.lora.trainable == ("embed_tokens", "lm_head")
    assert lcrec.train_config(beauty, 32000).lora.new_token_rows_from == 32000
    assert lcrec.train_config(embedded, 1024).lora.new_token_rows_from is None  # full fine-tuning
