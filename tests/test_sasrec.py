"""SASRec: model invariants, batches, config round trip, training through the shared engine (figures of the
earlier SASRec loop reproduced, exact resume after SIGTERM), `jaxrec train`/`eval`/`bench sasrec`."""

import contextlib
import io
import json
import os
import signal
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxrec.cli import main
from jaxrec.config import from_dict, load_config, to_dict
from jaxrec.data.splits import leave_one_out
from jaxrec.data.synthetic import make_preset
from jaxrec.errors import ConfigError, DataError
from jaxrec.methods import sasrec
from jaxrec.methods.popularity import evaluate_split
from jaxrec.models.sasrec import SASRec, SASRecConfig, load_params, save_params
from jaxrec.seqrec import batches

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY_SETS = ["model.max_len=8", "train.epochs=6", "train.batch_size=64", "train.progress=false"]
# the earlier SASRec loop (its own jitted step, before the shared engine) on the tiny preset with
# configs/sasrec/embedded.yaml + TINY_SETS: test metrics and the last curve point, per loss
EXPECTED = {
    "softmax": {"NDCG@10": 0.2068417992503532, "HR@10": 0.38666666666666666, "MRR": 0.17082957247875902,
                "curve": {"epoch": 6, "loss": 4.23631, "NDCG@10": 0.20015}},
    "bce": {"NDCG@10": 0.1476611508790998, "HR@10": 0.30666666666666664, "MRR": 0.12043166156035962,
            "curve": {"epoch": 6, "loss": 1.04214, "NDCG@10": 0.15892}},
}


@pytest.fixture(scope="module")
def tiny_model() -> SASRec:
    return SASRec(SASRecConfig(num_items=30, max_len=6, hidden_size=16, num_layers=2, num_heads=2), nnx.Rngs(0))


def test_causal_and_padding(tiny_model):
    tokens = jnp.array([[0, 0, 3, 5, 7, 9]])
    hidden = tiny_model(tokens)
    assert hidden.shape == (1, 6, 16) and bool(jnp.isfinite(hidden).all())
    changed = tiny_model(tokens.at[0, 5].set(11))
    np.testing.assert_allclose(changed[0, :5], hidden[0, :5], atol=1e-6)  # the future is not seen
    # a shorter window holding the same real items gives the same last state (positions count from the right)
    np.testing.assert_allclose(tiny_model(tokens[:, 2:])[0, -1], hidden[0, -1], atol=1e-5)
    assert tiny_model.score_all(hidden[:, -1]).shape == (1, 30)


def test_dropout_only_with_rngs(tiny_model):
    tokens = jnp.array([[0, 1, 2, 3, 4, 5]])
    np.testing.assert_array_equal(tiny_model(tokens), tiny_model(tokens))
    assert not np.allclose(tiny_model(tokens, rngs=nnx.Rngs(dropout=1)), tiny_model(tokens))


def test_params_round_trip(tiny_model, tmp_path):
    save_params(tiny_model, tmp_path / "p.safetensors")
    other = SASRec(tiny_model.config, nnx.Rngs(7))
    load_params(other, tmp_path / "p.safetensors")
    np.testing.assert_array_equal(other.item_embeddings(), tiny_model.item_embeddings())
    bigger = SASRec(SASRecConfig(num_items=31, max_len=6, hidden_size=16), nnx.Rngs(0))
    with pytest.raises(DataError, match="item_embed.embedding"):
        load_params(bigger, tmp_path / "p.safetensors")


def test_length_buckets_and_batches():
    np.testing.assert_array_equal(batches.length_buckets(50), [8, 16, 32, 50])
    inputs, labels = batches.training_pairs([np.arange(n, dtype=np.int32) for n in (1, 3, 12, 40)], max_len=20)
    assert inputs.shape == (4, 20)  # 3 usable users + the padding row
    np.testing.assert_array_equal(inputs[0, -3:], [-1, 0, 1])
    np.testing.assert_array_equal(labels[2, -2:], [38, 39])
    epoch = batches.epoch_batches(labels, batch_size=2, rng=np.random.default_rng(0))
    assert sorted((int(t), sorted(idx.tolist())) for idx, t in epoch) == [(8, [0, 3]), (16, [1, 3]), (20, [2, 3])]


def test_epoch_batches_resume_from_their_state_and_draw_from_the_proposal():
    train = [np.random.default_rng(u).integers(0, 50, 3 + u % 30).astype(np.int32) for u in range(40)]
    inputs, labels = batches.training_pairs(train, max_len=20)
    log_q = batches.proposal_log_q(labels, 50, "popularity")
    counts = np.bincount(labels[labels >= 0], minlength=50) + 1.0
    np.testing.assert_allclose(np.exp(log_q), counts / counts.sum(), rtol=1e-6)
    make = lambda: batches.EpochBatches(inputs, labels, 8, epochs=3, seed=5, log_q=log_q, negatives=4)
    whole = list(make())
    assert len(whole) == 3 * make().steps_per_epoch
    source = make()
    for _ in range(7):  # into the second epoch
        next(source)
    state = json.loads(json.dumps(source.get_state()))
    resumed = make()
    resumed.set_state(state)
    rest = list(resumed)
    assert len(rest) == len(whole) - 7
    for a, b in zip(rest, whole[7:]):
        assert a.keys() == b.keys() == {"input_ids", "targets", "negatives", "negative_log_q", "target_log_q"}
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    drawn = np.concatenate([b["negatives"].ravel() for b in whole])
    np.testing.assert_allclose(whole[0]["negative_log_q"], log_q[whole[0]["negatives"]])
    assert np.corrcoef(np.bincount(drawn, minlength=50), counts)[0, 1] > 0.5  # popular items are drawn more


@pytest.mark.parametrize("path", ["sasrec/embedded.yaml", "sasrec/beauty.yaml", "sasrec/ml100k.yaml"])
def test_config_round_trip(path):
    config = load_config(sasrec.Config, CONFIGS / path)
    assert from_dict(sasrec.Config, to_dict(config)) == config
    changed = load_config(sasrec.Config, CONFIGS / path, ["train.loss=sampled_softmax", "train.proposal=popularity",
                                                           "eval.exclude_history=true"])
    assert changed.train.loss == "sampled_softmax" and changed.eval.exclude_history


def test_recipes_embedding_a_sasrec_keep_loading_its_sections():
    from jaxrec.methods import rsllm, tiger

    t = load_config(tiger.Config, CONFIGS / "tiger" / "embedded.yaml").embeddings
    assert (t.sasrec_model.max_len, t.sasrec_train.epochs, t.sasrec_train.lr) == (20, 20, 3.0e-3)
    r = load_config(rsllm.Config, CONFIGS / "rsllm" / "embedded.yaml").id_model
    assert (r.model.max_len, r.train.patience, r.train.progress) == (20, 3, False)


def test_config_errors():
    with pytest.raises(ConfigError, match="model.hiden_size"):
        load_config(sasrec.Config, CONFIGS / "sasrec/embedded.yaml", ["model.hiden_size=3"])
    with pytest.raises(ConfigError, match="exactly one"):
        load_config(sasrec.Config, CONFIGS / "sasrec/embedded.yaml", ["data.path=/x"])
    with pytest.raises(ConfigError, match="train.loss"):
        load_config(sasrec.Config, CONFIGS / "sasrec/embedded.yaml", ["train.loss=hinge"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`jaxrec bench sasrec` (= train + test) on the tiny synthetic shop saved as a prepared dataset dir."""
    root = tmp_path_factory.mktemp("sasrec")
    data, out = root / "tiny", root / "run"
    make_preset("tiny").save(data)
    sets = [x for s in TINY_SETS for x in ("--set", s)] + ["--set", f"out_dir={out}"]
    capture = io.StringIO()
    with contextlib.redirect_stdout(capture):
        assert main(["bench", "sasrec", "--data", str(data), "--config", str(CONFIGS / "sasrec/embedded.yaml"),
                     *sets]) == 0
    eval_sets = [*sets, "--set", f"data.path={data}", "--set", "data.synthetic=null"]
    return out, json.loads(capture.getvalue()), eval_sets


def test_the_engine_reproduces_the_earlier_loop_and_beats_popularity(trained):
    out, bench, _ = trained
    result = json.loads((out / "results.json").read_text())
    expected = EXPECTED["softmax"]
    for k in ("NDCG@10", "HR@10", "MRR"):
        assert result["test"][k] == pytest.approx(expected[k], abs=1e-4), k
    assert result["curve"][-1] == pytest.approx(expected["curve"], abs=2e-4)
    assert (result["best_epoch"], result["epochs_run"], result["stopped"]) == (6, 6, "steps")
    ds = make_preset("tiny")
    pop = evaluate_split(leave_one_out(ds), ds.num_items, "test")
    assert result["test"]["users"] == pop["users"] == ds.num_users
    assert result["test"]["NDCG@10"] > pop["NDCG@10"] + 0.03
    embeddings = np.load(out / "item_embeddings.npy")
    assert embeddings.shape == (ds.num_items, 64) and embeddings.dtype == np.float32
    assert result["protocol"].endswith("history items kept in the ranking")
    logged = [json.loads(line) for line in (out / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert sum("train/loss" in row for row in logged) == result["step"]  # the engine's log, every step
    # the benchmark record: the same test run, and no published row for a dataset that has none
    assert bench["ours"]["Recall@10"] == pytest.approx(result["test"]["HR@10"])
    assert bench["reference"] is None and "no published SASRec row for dataset 'synthetic'" in bench["reference_note"]
    assert bench["protocol"] == result["protocol"] and bench["wall_seconds"] > 0


def test_the_reference_row_follows_the_dataset():
    from jaxrec.bench.sasrec import reference_for

    row, note = reference_for("Beauty")
    assert note is None and (row["Recall@10"], row["NDCG@10"]) == (0.0605, 0.0318)
    row, note = reference_for("ml-100k")
    assert row is None and "'ml-100k'" in note


def test_bce_reproduces_the_earlier_loop(tmp_path):
    from jaxrec import seqrec

    ds = make_preset("tiny")
    config = load_config(sasrec.Config, CONFIGS / "sasrec/embedded.yaml",
                         [*TINY_SETS, "train.loss=bce", f"out_dir={tmp_path}"])
    result = seqrec.fit(config, ds, leave_one_out(ds))
    for k in ("NDCG@10", "HR@10", "MRR"):
        assert result["test"][k] == pytest.approx(EXPECTED["bce"][k], abs=1e-4), k
    assert result["curve"][-1] == pytest.approx(EXPECTED["bce"]["curve"], abs=2e-4)


def test_sigterm_mid_epoch_then_resume_equals_the_uninterrupted_run(tmp_path, monkeypatch):
    """Checkpoints every epoch; a SIGTERM in the middle of epoch 3 saves and stops; the same call resumes:
    parameters, valid/test metrics and the curve equal a run that was never interrupted."""
    from jaxrec import seqrec

    ds = make_preset("tiny")
    split = leave_one_out(ds)

    def config(name, checkpoints):
        sets = [*TINY_SETS, "train.epochs=4", "train.patience=2", f"out_dir={tmp_path / name}"]
        sets += [f"train.checkpoint_dir={tmp_path / name / 'ckpt'}"] if checkpoints else []
        return load_config(sasrec.Config, CONFIGS / "sasrec/embedded.yaml", sets)

    whole = seqrec.fit(config("whole", False), ds, split)
    produced = []
    original = batches.EpochBatches.__next__

    def next_then_preempt(self):
        produced.append(1)
        if len(produced) == 2 * self.steps_per_epoch + 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self)

    monkeypatch.setattr(batches.EpochBatches, "__next__", next_then_preempt)
    stopped = seqrec.fit(config("resumed", True), ds, split)
    monkeypatch.undo()
    spe = whole["step"] // whole["epochs_run"]
    assert stopped["stopped"] == "sigterm" and 2 * spe < stopped["step"] < 3 * spe
    resumed = seqrec.fit(config("resumed", True), ds, split)
    assert resumed["stopped"] == "steps" and resumed["step"] == whole["step"]
    for key in ("valid", "test", "curve", "best_epoch", "epochs_run"):
        assert resumed[key] == whole[key], key
    np.testing.assert_array_equal(np.load(tmp_path / "resumed" / "item_embeddings.npy"),
                                  np.load(tmp_path / "whole" / "item_embeddings.npy"))


def test_eval_reloads_the_best_checkpoint(trained, capsys):
    out, _, sets = trained
    config = str(CONFIGS / "sasrec/embedded.yaml")
    capsys.readouterr()
    assert main(["eval", "--config", config, *sets]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    saved = json.loads((out / "results.json").read_text())
    assert evaluated["test"]["NDCG@10"] == pytest.approx(saved["test"]["NDCG@10"], abs=1e-6)
    assert evaluated["valid"]["NDCG@10"] == pytest.approx(saved["valid"]["NDCG@10"], abs=1e-6)
    assert evaluated["protocol"] == saved["protocol"]
    # removing other items from the ranking can only move a target up, and the result says so
    assert main(["eval", "--config", config, *sets, "--set", "eval.exclude_history=true"]) == 0
    excluded = json.loads(capsys.readouterr().out)
    assert excluded["test"]["MRR"] >= evaluated["test"]["MRR"]
    assert excluded["protocol"].endswith("history items excluded")


def test_a_diverging_run_stops_with_one_line_and_saves_nothing(trained, tmp_path, capsys):
    import shutil

    out, _, sets = trained
    rerun = tmp_path / "rerun"
    shutil.copytree(out, rerun)
    saved = (rerun / "params.safetensors").read_bytes()
    capsys.readouterr()
    assert main(["train", "--config", str(CONFIGS / "sasrec/embedded.yaml"), *sets, "--set", f"out_dir={rerun}",
                 "--set", "train.lr=1e30", "--set", "train.epochs=2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("jaxrec: error: training diverged: the loss or gradient norm is NaN/Inf")
    assert (rerun / "params.safetensors").read_bytes() == saved  # the earlier run's model is untouched


def test_tiled_ranks_equal_brute_force_ranks_of_the_trained_model(trained):
    """SASRec evaluation ranks with the tiled kernel: the same ranks as sorting the dense [U, N] scores."""
    from jaxrec.eval.ranking import ranks_from_scores
    from jaxrec.models.sasrec import to_tokens
    from jaxrec.seqrec.evaluate import rank_batch

    out, _, _ = trained
    ds = make_preset("tiny")
    model = SASRec(SASRecConfig(num_items=ds.num_items, max_len=8), rngs=nnx.Rngs(0))
    load_params(model, out / "params.safetensors")
    for exclude in (False, True):
        arrays = batches.eval_arrays(leave_one_out(ds), "test", 8, exclude)
        dense = model.score_all(model(to_tokens(arrays["inputs"]))[:, -1])
        expected = ranks_from_scores(dense, arrays["targets"], arrays.get("exclude"))
        np.testing.assert_array_equal(rank_batch(model, **arrays), expected)
