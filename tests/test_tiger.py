"""TIGER recipe: code-only vocabulary, sliding-window examples, and a tiny end-to-end run (its figures
recomputed from its beams and its learning curve, popularity by brute force, fixed-seed figures)."""

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from jaxrec.config import from_dict, load_config

from brute_force import hr_ndcg, list_rank, occurrences, rank_of, subset
from jaxrec.data.tasks.tiger import encoder_length, tiger_train_examples

SYNTHETIC = {"synthetic": {"preset": "tiny", "num_users": 40, "num_items": 60}}
LEVELS, CODES = 3, 5
USERS = 40  # every user evaluated (valid and test), and the learning curve on the same validation users
# Fixed-seed test figures of the run below (2 steps; read from its results.json on CPU, fp32). One user
# more or less moves HR by 1/40; fp32 rounding on another host moves beam scores by ~1e-6, hence abs=1e-4.
TEST_FIGURES = {"HR@1": 0.05, "NDCG@1": 0.05, "HR@5": 0.2, "NDCG@5": 0.130258, "MRR@5": 0.107083}


def tiny_config(out_dir, index_file) -> dict:
    return {
        "method": "tiger", "out_dir": str(out_dir), "data": SYNTHETIC,
        "index": {"source": "file", "file": str(index_file)},
        "max_history": 4, "user_tokens": 5,
        "model": {"arch": "t5", "hidden_size": 16, "intermediate_size": 32, "num_layers": 1, "num_heads": 2},
        "train": {"batch_size": 8, "steps": 2, "log_every": 1, "eval_every": 1, "progress": False, "peak_flops": 1.0e12,
                  "lora": {"mode": "full"}, "optim": {"learning_rate": 1.0e-2}, "data": {"seq_len": 16}},
        "eval": {"ks": [1, 5], "num_beams": 5, "parts": ["valid", "test"], "users": USERS, "curve_users": USERS,
                 "batch_size": 8, "progress": False},
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """An LC-Rec index file keyed by raw ids (collision-free random codes), then train + evaluate."""
    from jaxrec.methods import tiger
    from jaxrec.data.source import DataConfig, load_dataset

    tmp = tmp_path_factory.mktemp("tiger")
    ds = load_dataset(from_dict(DataConfig, SYNTHETIC))
    codes = np.stack(np.unravel_index(np.random.default_rng(0).permutation(CODES ** LEVELS)[:ds.num_items],
                                      (CODES,) * LEVELS), 1)
    index = {str(it["raw_id"]): [f"<{'abc'[lv]}_{c}>" for lv, c in enumerate(codes[i])]
             for i, it in enumerate(ds.items)}
    (tmp / "toy.index.json").write_text(json.dumps(index))
    config = from_dict(tiger.Config, tiny_config(tmp / "run", tmp / "toy.index.json"))
    return config, ds, codes, tiger.train(config), tiger.evaluate(config)


def test_end_to_end_metrics_and_real_items(run, monkeypatch):
    """Popularity by brute force on the evaluated users; the learning curve's last point (the trained
    model on the same validation users) equals the final validation figures; fixed-seed test figures;
    the figures recomputed from the beams (distinct catalog items) by brute force."""
    from jaxrec.data.splits import leave_one_out
    from jaxrec.eval import evaluators
    from jaxrec.eval.sample import eval_subset
    from jaxrec.methods import tiger

    config, ds, _, summary, result = run
    assert summary["step"] == 2 and np.isfinite(summary["loss"])
    assert summary["vocab_size"] == 3 + LEVELS * CODES + 5  # specials + code tokens + user hashes
    assert {"Recall@5", "MRR@5"} <= set(result["test"]["tiger"])
    assert json.loads((Path(config.out_dir) / "results.json").read_text()) == result
    split = leave_one_out(ds)
    counts = occurrences(split.train, ds.num_items)
    targets = {}
    for part, users, target in (("valid", split.valid_users, split.valid_target),
                                ("test", split.test_users, split.test_target)):
        targets[part] = target[eval_subset(len(users), config.eval.users, config.eval.seed)]
        assert result[part]["users"] == len(targets[part]) and result[part]["item_rate"] == 1.0  # trie: items only
        expected = hr_ndcg([rank_of(t, counts) for t in targets[part]], (1, 5), "MRR")
        assert subset(result[part]["popularity"], expected) == pytest.approx(expected)

    log = [json.loads(line) for line in (Path(config.out_dir) / "logs" / "metrics.jsonl").read_text().splitlines()]
    curve = [row for row in log if "eval/NDCG@5" in row]  # validation learning curve, every eval_every steps
    assert [row["step"] for row in curve] == [1, 2]
    last = {k: curve[-1][f"eval/{k}"] for k in ("HR@1", "NDCG@1", "HR@5", "NDCG@5")}
    assert last == pytest.approx(subset(result["valid"]["tiger"], last))
    assert subset(result["test"]["tiger"], TEST_FIGURES) == pytest.approx(TEST_FIGURES, abs=1e-4)

    seen = []
    real = evaluators.generate

    def spy(*args, **kwargs):
        seen.append(real(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(evaluators, "generate", spy)
    tiger.evaluate(config)
    for part, (_, _, items) in zip(("valid", "test"), seen, strict=True):  # (sequences, scores, items)
        assert items.shape == (len(targets[part]), 5) and ((items >= 0) & (items < ds.num_items)).all()
        assert all(len(set(row.tolist())) == len(row) for row in items)  # distinct items per user
        expected = hr_ndcg([list_rank(row, t) for row, t in zip(items, targets[part])], (1, 5), "MRR@5")
        assert subset(result[part]["tiger"], expected) == pytest.approx(expected)


def test_vocabulary_and_sliding_window_examples(run):
    from jaxrec.data.splits import leave_one_out
    from jaxrec.methods import tiger

    config, ds, codes, _, _ = run
    tokenizer = tiger.code_tokenizer(codes, config.user_tokens)
    assert tokenizer.convert_tokens_to_ids(["<pad>", "</s>", "<unk>"]) == [0, 1, 2]
    split = leave_one_out(ds)
    examples = tiger_train_examples(split, tiger.item_code_texts(codes), config.max_history, config.user_tokens)
    assert len(examples) == sum(max(len(s) - 1, 0) for s in split.train)
    first = examples[0]
    seq = split.train[0]
    assert first.prompt.split() == ["<u_0>"] + [f"<{'abc'[lv]}_{codes[seq[0], lv]}>" for lv in range(LEVELS)]
    assert first.response.split() == [f"<{'abc'[lv]}_{codes[seq[1], lv]}>" for lv in range(LEVELS)]
    assert all(len(e.prompt.split()) <= 1 + config.max_history * LEVELS for e in examples)
    # a lazy sequence: equal to building every (user, t) example eagerly, sliced or indexed, and picklable for
    # the pipeline's worker processes
    from jaxrec.data.tasks.tiger import encoder_text

    items = tiger.item_code_texts(codes)
    eager = [(encoder_text(seq[:t], u, items, config.max_history, config.user_tokens), items[seq[t]], u, int(seq[t]))
             for u, seq in enumerate(split.train) for t in range(1, len(seq))]
    assert [(e.prompt, e.response, e.user, e.target) for e in examples] == eager
    assert [(e.prompt, e.target) for e in examples[5:9]] == [(x[0], x[3]) for x in eager[5:9]]
    assert pickle.loads(pickle.dumps(examples))[7] == examples[7]
    ids = tokenizer(first.prompt, add_special_tokens=False)["input_ids"]
    assert 2 not in ids and len(ids) == 1 + LEVELS  # every word is one known token


def test_configs_load_and_seq_len_check():
    from jaxrec.errors import ConfigError
    from jaxrec.methods import tiger

    for name in ("embedded", "beauty"):
        config = load_config(tiger.Config, f"configs/tiger/{name}.yaml")
        assert config.train.data.seq_len >= encoder_length(config.max_history, 4 if name == "beauty" else 3, config.user_tokens)
    with pytest.raises(ConfigError, match="seq_len"):
        tiger.train_config(config, levels=5)
