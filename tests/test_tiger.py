"""TIGER recipe: code-only vocabulary, sliding-window examples, and a tiny end-to-end run whose
constrained beams are real catalog items."""

import json
from pathlib import Path

import numpy as np
import pytest

from jaxrec.config import from_dict, load_config

SYNTHETIC = {"synthetic": {"preset": "tiny", "num_users": 40, "num_items": 60}}
LEVELS, CODES = 3, 5


def tiny_config(out_dir, index_file) -> dict:
    return {
        "method": "tiger", "out_dir": str(out_dir), "data": SYNTHETIC,
        "index": {"source": "file", "file": str(index_file)},
        "max_history": 4, "user_tokens": 5,
        "model": {"arch": "t5", "hidden_size": 16, "intermediate_size": 32, "num_layers": 1, "num_heads": 2},
        "train": {"batch_size": 8, "steps": 2, "log_every": 1, "eval_every": 1, "progress": False, "peak_flops": 1.0e12,
                  "lora": {"mode": "full"}, "optim": {"learning_rate": 1.0e-2}, "data": {"seq_len": 16}},
        "eval": {"ks": [1, 5], "num_beams": 5, "parts": ["test"], "users": 8, "curve_users": 4, "batch_size": 8,
                 "progress": False},
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
    from jaxrec.methods import tiger

    config, ds, codes, summary, result = run
    assert summary["step"] == 2 and np.isfinite(summary["loss"])
    assert summary["vocab_size"] == 3 + LEVELS * CODES + 5  # specials + code tokens + user hashes
    test = result["test"]
    assert test["users"] == 8 and test["item_rate"] == 1.0  # the trie only yields catalog items
    for name in ("tiger", "popularity"):
        assert {"HR@1", "HR@5", "NDCG@1", "NDCG@5"} <= set(test[name])
        assert all(0.0 <= test[name][k] <= 1.0 for k in ("HR@5", "NDCG@5"))
    assert {"Recall@5", "MRR@5"} <= set(test["tiger"])
    assert json.loads((Path(config.out_dir) / "results.json").read_text()) == result
    log = [json.loads(line) for line in (Path(config.out_dir) / "logs" / "metrics.jsonl").read_text().splitlines()]
    curve = [row for row in log if "eval/NDCG@5" in row]  # validation learning curve, every eval_every steps
    assert [row["step"] for row in curve] == [1, 2] and all(0.0 <= row["eval/HR@5"] <= 1.0 for row in curve)

    seen = []
    real = tiger.constrained_items

    def spy(*args, **kwargs):
        seen.append(real(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(tiger, "constrained_items", spy)
    tiger.evaluate(config)
    items = seen[0]
    assert items.shape == (8, 5) and ((items >= 0) & (items < ds.num_items)).all()
    assert all(len(set(row.tolist())) == len(row) for row in items)  # distinct items per user


def test_vocabulary_and_sliding_window_examples(run):
    from jaxrec.data.splits import leave_one_out
    from jaxrec.methods import tiger

    config, ds, codes, _, _ = run
    tokenizer = tiger.code_tokenizer(codes, config.user_tokens)
    assert tokenizer.convert_tokens_to_ids(["<pad>", "</s>", "<unk>"]) == [0, 1, 2]
    split = leave_one_out(ds)
    examples = tiger.training_examples(split, codes, config)
    assert len(examples) == sum(max(len(s) - 1, 0) for s in split.train)
    first = examples[0]
    seq = split.train[0]
    assert first.prompt.split() == ["<u_0>"] + [f"<{'abc'[lv]}_{codes[seq[0], lv]}>" for lv in range(LEVELS)]
    assert first.response.split() == [f"<{'abc'[lv]}_{codes[seq[1], lv]}>" for lv in range(LEVELS)]
    assert all(len(e.prompt.split()) <= 1 + config.max_history * LEVELS for e in examples)
    ids = tokenizer(first.prompt, add_special_tokens=False)["input_ids"]
    assert 2 not in ids and len(ids) == 1 + LEVELS  # every word is one known token


def test_configs_load_and_seq_len_check():
    from jaxrec.errors import ConfigError
    from jaxrec.methods import tiger

    for name in ("embedded", "beauty"):
        config = load_config(tiger.Config, f"configs/tiger/{name}.yaml")
        assert config.train.data.seq_len >= tiger.encoder_length(config, 4 if name == "beauty" else 3)
    with pytest.raises(ConfigError, match="seq_len"):
        tiger.train_config(config, levels=5)
