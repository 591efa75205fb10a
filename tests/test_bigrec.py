"""BIGRec recipe and the shared LLM plumbing: a tiny end-to-end run, grounding vs brute force, run io."""

import json
from pathlib import Path

import numpy as np
import pytest

from jaxrec.config import from_dict
from jaxrec.decode.driver import decode_texts, generate
from jaxrec.ground.embed import embed_prompt_texts
from jaxrec.models.prompts import encode, prompt_ids
from jaxrec.models.section import ModelSection, make_model
from jaxrec.models.run_dir import VOCAB_GROWTH_FILE, grow_vocab, load_run, make_tokenizer, save_run, start_run

from brute_force import hr_ndcg, rank_of, subset

TINY = {
    "method": "bigrec",
    "data": {"synthetic": {"preset": "tiny", "num_users": 60, "num_items": 60}},
    "split": {"history": 3},
    "prompts": {"domain": "items", "train_sample": -1, "eval_sample": 8},
    "model": {"vocab_size": 320, "hidden_size": 32, "intermediate_size": 64, "num_layers": 1, "num_heads": 2,
              "num_kv_heads": 1, "max_position_embeddings": 512},
    "train": {"batch_size": 8, "steps": 3, "log_every": 1, "progress": False, "peak_flops": 1.0e12,
              "lora": {"mode": "full"}, "data": {"seq_len": 256}},
    "generation": {"num_beams": 2, "batch_size": 8},
    "ground": {"model": "fine_tuned", "batch_size": 64},
    "eval": {"ks": [1, 5, 10]},
}
# Fixed-seed figures of the run below (3 steps, 8 valid + 8 test examples; read from its results.json
# on CPU, fp32). One example more or less moves HR by 1/8; fp32 rounding on another host moves beam
# scores and embeddings by ~1e-6, hence abs=1e-4.
FREE = {"valid": {"HR@1": 0.0, "HR@5": 0.125, "NDCG@5": 0.0625, "HR@10": 0.125, "NDCG@10": 0.0625},
        "test": {"HR@1": 0.0, "HR@5": 0.0, "HR@10": 0.25, "NDCG@10": 0.079295}}
CONSTRAINED_TEST = {"HR@1": 0.0, "HR@5": 0.125, "NDCG@5": 0.078866}
FUSION_GAMMAS = {"HR@1": 0.0, "NDCG@1": 0.0, "HR@5": 20.0, "NDCG@5": 71.0, "HR@10": 10.0, "NDCG@10": 95.0}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from jaxrec.methods import bigrec

    config = from_dict(bigrec.Config, {**TINY, "out_dir": str(tmp_path_factory.mktemp("bigrec"))})
    summary = bigrec.train(config)
    return config, summary, bigrec.evaluate(config)


def test_end_to_end_output_structure(run):
    config, summary, result = run
    assert summary["step"] == 3 and np.isfinite(summary["loss"])
    assert result["examples"] == {"valid": 8, "test": 8}
    keys = {f"{m}@{k}" for m in ("HR", "NDCG") for k in (1, 5, 10)}
    for metrics in (result["free"]["valid"], result["free"]["test"], result["constrained"]["test"]):
        assert keys <= set(metrics) and metrics["users"] == 8
    # constrained HR@1 recomputed from the written generations: the top item's title is the target's
    rows = [json.loads(line) for line in (Path(config.out_dir) / "generations.jsonl").read_text().splitlines()]
    for part in ("valid", "test"):
        hits = [r["constrained"] == r["target"] for r in rows if r["part"] == part]
        assert len(hits) == 8 and result["constrained"][part]["HR@1"] == pytest.approx(sum(hits) / 8)
    for part in ("valid", "test"):
        assert subset(result["free"][part], FREE[part]) == pytest.approx(FREE[part], abs=1e-4)
    assert subset(result["constrained"]["test"], CONSTRAINED_TEST) == pytest.approx(CONSTRAINED_TEST, abs=1e-4)
    fusion = result["free"]["popularity_fusion"]
    assert {name: v["gamma"] for name, v in fusion.items()} == FUSION_GAMMAS
    for name, v in fusion.items():  # γ = 0 is the plain grounding: the γ chosen on valid is at least as good
        assert v["valid"] >= result["free"]["valid"][name]
        if v["gamma"] == 0:
            assert v["test"] == pytest.approx(result["free"]["test"][name])
    assert result["random"]["HR@10"] == pytest.approx(10 / 60)
    saved = json.loads((Path(config.out_dir) / "results.json").read_text())
    assert saved == json.loads(json.dumps(result))


def test_popularity_row_equals_brute_force(run):
    """The popularity row ranks the catalog by training-target count, ties to the lower id."""
    from jaxrec.data.tasks import bigrec_eval_examples
    from jaxrec.eval.metrics import metrics_from_ranks
    from jaxrec.methods import bigrec
    from jaxrec.data.source import load_dataset

    config, _, result = run
    ds = load_dataset(config.data)
    split = bigrec.split_of(config, ds)
    counts = np.bincount(split.train.target, minlength=ds.num_items)
    order = sorted(range(ds.num_items), key=lambda i: (-counts[i], i))
    examples = bigrec_eval_examples(ds, split, "test", "items", sample=8)
    ranks = np.array([order.index(e.target) + 1 for e in examples])
    assert result["popularity"]["test"] == pytest.approx(metrics_from_ranks(ranks, [1, 5, 10]))


def test_free_and_fusion_figures_recomputed_from_the_written_generations(run):
    """generations.jsonl's free texts embedded again by the fine-tuned model, every item ranked by a NumPy
    L2 brute force (ties to the lower id), and BIGRec's popularity fusion over the γ grid with γ chosen on
    valid (the smallest γ wins ties): the written free and fusion figures."""
    from jaxrec.data.source import load_dataset
    from jaxrec.data.tasks import bigrec_eval_examples
    from jaxrec.data.tasks.item_text import titles
    from jaxrec.methods import bigrec

    config, _, result = run
    ds = load_dataset(config.data)
    split = bigrec.split_of(config, ds)
    model, tokenizer = load_run(config.out_dir)
    rows = [json.loads(line) for line in (Path(config.out_dir) / "generations.jsonl").read_text().splitlines()]
    generated = {part: [r["free"].strip().strip('"') for r in rows if r["part"] == part] for part in ("valid", "test")}
    embedded = embed_prompt_texts(model, tokenizer, {"items": titles(ds), **generated}, config.ground.batch_size)
    items = embedded.pop("items").astype(np.float64)
    counts = np.bincount(split.train.target, minlength=ds.num_items).astype(np.float64)
    weights = (counts - counts.min()) / (counts.max() - counts.min())  # BIGRec's popularity C in [0, 1]
    ks, ranks = (1, 5, 10), {}
    for part, queries in embedded.items():
        targets = [e.target for e in bigrec_eval_examples(ds, split, part, "items", config.split.history,
                                                          config.prompts.eval_sample, config.prompts.seed)]
        dist = np.linalg.norm(queries.astype(np.float64)[:, None] - items[None], axis=-1)  # [8, N]
        expected = hr_ndcg([rank_of(t, -d) for t, d in zip(targets, dist)], ks, "MRR")
        assert subset(result["free"][part], expected) == pytest.approx(expected)
        normed = (dist - dist.min(1, keepdims=True)) / (dist.max(1, keepdims=True) - dist.min(1, keepdims=True))
        ranks[part] = [[rank_of(t, -f) for t, f in zip(targets, normed * (1 + weights) ** -gamma)]
                       for gamma in range(100)]  # BIGRec's grid 0, 1, ..., 99
    for name, written in result["free"]["popularity_fusion"].items():
        valid = [hr_ndcg(r, ks)[name] for r in ranks["valid"]]
        gamma = int(np.argmax(valid))
        assert written == pytest.approx({"gamma": gamma, "valid": valid[gamma],
                                         "test": hr_ndcg(ranks["test"][gamma], ks)[name]})


def test_generations_file_lists_every_evaluated_example(run):
    config, _, result = run
    rows = [json.loads(line) for line in (Path(config.out_dir) / "generations.jsonl").read_text().splitlines()]
    assert [r["part"] for r in rows] == ["valid"] * 8 + ["test"] * 8
    assert {"user", "target", "free", "constrained"} <= set(rows[-1])
    assert [r["free"] for r in rows if r["part"] == "test"][:3] == [s["free"] for s in result["samples"]]


def test_constrained_generation_returns_only_real_items(run):
    from jaxrec.data.tasks import bigrec_eval_examples
    from jaxrec.data.tasks.item_text import quoted, titles
    from jaxrec.decode import ItemTrie
    from jaxrec.methods import bigrec
    from jaxrec.data.source import load_dataset

    config, _, _ = run
    ds = load_dataset(config.data)
    examples = bigrec_eval_examples(ds, bigrec.split_of(config, ds), "test", "items", sample=8)
    model, tokenizer = load_run(config.out_dir)
    eos = tokenizer.eos_token_id
    item_titles = [quoted(t) for t in titles(ds)]
    trie = ItemTrie.from_sequences(encode(tokenizer, item_titles), eos_id=eos)
    seqs, scores, items = generate(model, prompt_ids(tokenizer, model, [e.prompt for e in examples]),
                                       constraint=trie, num_beams=2, max_new_tokens=trie.max_length + 1, eos_id=eos,
                                       pad_id=tokenizer.pad_token_id, batch_size=8)
    assert items.shape == (8, 2) and (items >= 0).all() and np.isfinite(scores).all()
    texts = decode_texts(tokenizer, seqs.reshape(16, -1), eos)
    assert texts == [item_titles[i] for i in items.reshape(-1)]


def test_grounding_equals_numpy_brute_force():
    from jaxrec.ground.rank import target_ranks

    rng = np.random.default_rng(0)
    items = rng.normal(size=(50, 8)).astype(np.float32)
    items[7] = items[3]  # duplicated embedding: the tie goes to the lower id
    queries = rng.normal(size=(12, 8)).astype(np.float32)
    queries[0] = items[7]
    targets = rng.integers(0, 50, 12)
    targets[:2] = [7, 3]
    dist = np.linalg.norm(queries[:, None] - items[None], axis=-1)
    order = np.lexsort((np.broadcast_to(np.arange(50), dist.shape), dist), axis=-1)  # by (distance, id)
    expected = np.argmax(order == targets[:, None], axis=1) + 1
    np.testing.assert_array_equal(np.asarray(target_ranks(queries, items, targets, metric="l2")), expected)
    assert list(np.asarray(target_ranks(queries[:1], items, np.array([3]), metric="l2"))) == [1]


def test_embeddings_ignore_left_padding_and_run_io_round_trips(tmp_path):
    """Last-token states of a padded batch equal one-by-one forwards; a LoRA run reloads merged."""
    import jax

    from jaxrec.models.lora import apply_lora, lora_modules
    from jaxrec.models.lora import LoraConfig

    section = ModelSection(vocab_size=300, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2,
                               num_kv_heads=1, max_position_embeddings=64)
    texts = ["Classic Yoga Mat", "Pro Dog Leash with a much longer title", "Pen"]
    tokenizer = make_tokenizer(section, lambda: texts * 20, tmp_path)
    model = make_model(section, tokenizer)
    batch = embed_prompt_texts(model, tokenizer, {"texts": texts}, batch_size=4)["texts"]
    ids = prompt_ids(tokenizer, model, texts)
    for row, seq in zip(batch, ids):
        alone = model(np.asarray([seq]), return_hidden=True)[0, -1]
        np.testing.assert_allclose(row, alone, atol=1e-5)

    start_run(tmp_path, section, model, tokenizer)
    lora = LoraConfig(rank=2, target_modules=("q_proj", "v_proj"))
    apply_lora(model, lora)
    for _, m in lora_modules(model):
        m.lora_b[...] = jax.random.normal(jax.random.key(1), m.lora_b.shape) * 0.1
    expected = model(np.asarray([ids[0]]))
    save_run(tmp_path, section, model, lora, {"note": "test"}, {"stopped": "steps", "step": 0})
    reloaded, _ = load_run(tmp_path)
    assert not lora_modules(reloaded)
    np.testing.assert_allclose(reloaded(np.asarray([ids[0]])), expected, atol=1e-4)
    base, _ = load_run(tmp_path, "base")
    assert not np.allclose(base(np.asarray([ids[0]])), expected, atol=1e-4)


def test_grow_vocab_records_growth_and_clears_a_stale_record(tmp_path):
    from jaxrec.models.tokenizer import add_tokens

    section = ModelSection(vocab_size=300, hidden_size=16, intermediate_size=32, num_layers=1, num_heads=2,
                               num_kv_heads=1, max_position_embeddings=32)
    tokenizer = make_tokenizer(section, lambda: ["Classic Yoga Mat", "Pen"] * 20, tmp_path)
    model = make_model(section, tokenizer)
    old = model.config.vocab_size
    add_tokens(tokenizer, [f"<a_{i}>" for i in range(old + 5 - len(tokenizer))])
    assert grow_vocab(model, tokenizer, tmp_path, seed=1) == old
    assert model.config.vocab_size == len(tokenizer) and (tmp_path / VOCAB_GROWTH_FILE).is_file()
    assert grow_vocab(model, tokenizer, tmp_path, seed=1) == len(tokenizer)  # nothing to add this time
    assert not (tmp_path / VOCAB_GROWTH_FILE).exists()  # so load_run will not regrow a stale size


def test_a_run_stopped_by_sigterm_exits_143_looks_unfinished_and_resumes(tmp_path, caplog):
    """`jaxrec train` ended by SIGTERM (a preemption) after a few steps: exit 143 with one line saying so,
    run.json records state "preempted" (so evaluation warns), and the same command resumes it to a finished run."""
    import signal
    import subprocess
    import sys
    import time

    import yaml


    out = tmp_path / "run"
    cfg = {**TINY, "out_dir": str(out),
           "train": {**TINY["train"], "steps": 100000, "checkpoint": {"dir": str(out / "ck"), "every": 1}}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    cli = [sys.executable, "-c", "import sys; from jaxrec.cli import main; sys.exit(main(sys.argv[1:]))", "train",
           "--config", str(tmp_path / "c.yaml")]
    proc = subprocess.Popen(cli, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log, deadline = out / "logs" / "metrics.jsonl", time.time() + 300
    while proc.poll() is None and time.time() < deadline and not (log.is_file() and len(log.read_text().splitlines()) >= 2):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err
    meta = json.loads((out / "run.json").read_text())
    assert meta["state"] == "preempted" and meta["step"] >= 2
    assert f"stopped by SIGTERM at step {meta['step']} before it finished" in err.strip().splitlines()[-1]
    with caplog.at_level("WARNING"):
        load_run(out)
    assert f"stopped (SIGTERM) at step {meta['step']} before training finished" in caplog.text

    done = subprocess.run(cli + ["--set", f"train.steps={meta['step'] + 2}", "--set",
                                 "train.checkpoint.allow_config_change=true"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "run.json").read_text())["state"] == "finished"
    assert json.loads((out / "run.json").read_text())["step"] == meta["step"] + 2


def test_evaluating_a_run_with_another_model_config_is_refused(run):
    import dataclasses

    from jaxrec.errors import ConfigError
    from jaxrec.methods import bigrec

    config, _, _ = run
    other = dataclasses.replace(config, model=dataclasses.replace(config.model, hidden_size=64))
    with pytest.raises(ConfigError, match="was trained with model.hidden_size=32, but this config says 64"):
        bigrec.evaluate(other)


def test_retraining_a_run_dir_with_another_model_is_refused_before_anything_is_replaced(run):
    import dataclasses

    from jaxrec.errors import ConfigError
    from jaxrec.methods import bigrec

    config, _, _ = run
    out = Path(config.out_dir)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and "logs" not in p.parts}
    other = dataclasses.replace(config, model=dataclasses.replace(config.model, vocab_size=400))
    with pytest.raises(ConfigError, match="was trained with model.vocab_size=320, but this config says 400"):
        bigrec.train(other)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and "logs" not in p.parts} == before


def test_excluding_the_prompt_history_from_grounding_only_moves_targets_up(run):
    """eval.exclude_history: each free-generation rank can only shrink (history items leave the ranking, the
    target stays), the constrained lists are untouched, and the protocol label says so."""
    import dataclasses

    from jaxrec.methods import bigrec

    config, _, plain = run
    kept = bigrec.evaluate(dataclasses.replace(config, eval=dataclasses.replace(config.eval, exclude_history=True)))
    assert kept["protocol"]["free"].endswith("history items excluded")
    assert plain["protocol"]["free"].endswith("history items kept in the ranking")
    assert kept["constrained"] == plain["constrained"]
    for part in ("valid", "test"):
        assert kept["free"][part]["MRR"] >= plain["free"][part]["MRR"]
        assert all(kept["free"][part][f"HR@{k}"] >= plain["free"][part][f"HR@{k}"] for k in config.eval.ks)
    bigrec.evaluate(config)  # leave the run's results.json as the other tests read it
