"""SASRec: model invariants, config round trip, and `jaxrec train`/`eval` learning the synthetic data."""

import contextlib
import io
import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import optax
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

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "sasrec"


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
    np.testing.assert_array_equal(sasrec.length_buckets(50), [8, 16, 32, 50])
    inputs, labels = sasrec.training_pairs([np.arange(n, dtype=np.int32) for n in (1, 3, 12, 40)], max_len=20)
    assert inputs.shape == (4, 20)  # 3 usable users + the padding row
    np.testing.assert_array_equal(inputs[0, -3:], [-1, 0, 1])
    np.testing.assert_array_equal(labels[2, -2:], [38, 39])
    batches = sasrec.epoch_batches(labels, batch_size=2, rng=np.random.default_rng(0))
    assert sorted((int(t), sorted(idx.tolist())) for idx, t in batches) == [(8, [0, 3]), (16, [1, 3]), (20, [2, 3])]


@pytest.mark.parametrize("name", ["embedded.yaml", "beauty.yaml"])
def test_config_round_trip(name):
    config = load_config(sasrec.Config, CONFIGS / name)
    assert from_dict(sasrec.Config, to_dict(config)) == config
    changed = load_config(sasrec.Config, CONFIGS / name, ["train.loss=bce", "eval.exclude_history=true"])
    assert changed.train.loss == "bce" and changed.eval.exclude_history


def test_config_errors():
    with pytest.raises(ConfigError, match="model.hiden_size"):
        load_config(sasrec.Config, CONFIGS / "embedded.yaml", ["model.hiden_size=3"])
    with pytest.raises(ConfigError, match="exactly one"):
        load_config(sasrec.Config, CONFIGS / "embedded.yaml", ["data.path=/x"])
    with pytest.raises(ConfigError, match="train.loss"):
        load_config(sasrec.Config, CONFIGS / "embedded.yaml", ["train.loss=hinge"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`jaxrec bench sasrec` (= train + test) on the tiny synthetic shop saved as a prepared dataset dir."""
    root = tmp_path_factory.mktemp("sasrec")
    data, out = root / "tiny", root / "run"
    make_preset("tiny").save(data)
    sets = ["--set", "model.max_len=8", "--set", "train.epochs=6", "--set", "train.batch_size=64",
            "--set", "train.progress=false", "--set", f"out_dir={out}"]
    capture = io.StringIO()
    with contextlib.redirect_stdout(capture):
        assert main(["bench", "sasrec", "--data", str(data), "--config", str(CONFIGS / "embedded.yaml"), *sets]) == 0
    eval_sets = [*sets, "--set", f"data.path={data}", "--set", "data.synthetic=null"]
    return out, json.loads(capture.getvalue()), eval_sets


def test_sasrec_learns_and_beats_popularity(trained):
    out, bench, _ = trained
    result = json.loads((out / "results.json").read_text())
    ds = make_preset("tiny")
    pop = evaluate_split(leave_one_out(ds), ds.num_items, "test")
    assert result["test"]["users"] == pop["users"] == ds.num_users
    assert result["test"]["NDCG@10"] > pop["NDCG@10"] + 0.03
    losses = [row["loss"] for row in result["curve"]]
    assert losses[-1] < losses[0]
    embeddings = np.load(out / "item_embeddings.npy")
    assert embeddings.shape == (ds.num_items, 64) and embeddings.dtype == np.float32
    assert (out / "logs" / "metrics.jsonl").is_file() and (out / "config.yaml").is_file()
    # the benchmark record reports the same test run next to the published reference
    assert bench["ours"]["Recall@10"] == pytest.approx(result["test"]["HR@10"])
    assert bench["reference"]["NDCG@10"] == 0.0318 and "hardware" in bench and bench["wall_seconds"] > 0


def test_eval_reloads_the_best_checkpoint(trained, capsys):
    out, _, sets = trained
    config = str(CONFIGS / "embedded.yaml")
    capsys.readouterr()
    assert main(["eval", "--config", config, *sets]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    saved = json.loads((out / "results.json").read_text())
    assert evaluated["test"]["NDCG@10"] == pytest.approx(saved["test"]["NDCG@10"], abs=1e-6)
    assert evaluated["valid"]["NDCG@10"] == pytest.approx(saved["valid"]["NDCG@10"], abs=1e-6)
    # removing other items from the ranking can only move a target up
    assert main(["eval", "--config", config, *sets, "--set", "eval.exclude_history=true"]) == 0
    excluded = json.loads(capsys.readouterr().out)
    assert excluded["test"]["MRR"] >= evaluated["test"]["MRR"]


def test_bce_loss_step_decreases_loss():
    import jax
    import optax

    model = SASRec(SASRecConfig(num_items=20, max_len=8, hidden_size=16, dropout=0.0), nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    tx = optax.adam(1e-2)
    opt_state = tx.init(params)
    train_step, _ = sasrec.make_steps(graphdef, tx, "bce", 20)
    inputs = np.tile(np.arange(8, dtype=np.int32), (4, 1))
    losses = []
    for step in range(10):
        params, opt_state, loss = train_step(params, opt_state, inputs, inputs + 1, jax.random.key(step))
        losses.append(float(loss))
    assert losses[-1] < losses[0]


def test_a_diverging_run_stops_with_one_line_and_saves_nothing(trained, tmp_path, capsys):
    import shutil

    out, _, sets = trained
    rerun = tmp_path / "rerun"
    shutil.copytree(out, rerun)
    saved = (rerun / "params.safetensors").read_bytes()
    capsys.readouterr()
    assert main(["train", "--config", str(CONFIGS / "embedded.yaml"), *sets, "--set", f"out_dir={rerun}",
                 "--set", "train.lr=1e30", "--set", "train.epochs=2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("jaxrec: error: SASRec diverged: the training loss of epoch 1 is ")
    assert err[0].endswith("no model was saved. Lower train.lr")
    assert (rerun / "params.safetensors").read_bytes() == saved  # the earlier run's model is untouched


def test_tiled_ranks_equal_brute_force_ranks_of_the_trained_model(trained):
    """SASRec evaluation ranks with the tiled kernel: the same ranks as sorting the dense [U, N] scores."""
    from flax import nnx

    from jaxrec.eval.metrics import ranks_from_scores
    from jaxrec.methods.sasrec import eval_arrays, make_steps
    from jaxrec.models.sasrec import SASRecConfig, load_params, to_tokens

    out, _, _ = trained
    ds = make_preset("tiny")
    model = SASRec(SASRecConfig(num_items=ds.num_items, max_len=8), rngs=nnx.Rngs(0))
    load_params(model, out / "params.safetensors")
    graphdef, params = nnx.split(model)
    _, rank_batch = make_steps(graphdef, optax.identity(), "softmax", ds.num_items)
    for exclude in (False, True):
        arrays = eval_arrays(leave_one_out(ds), "test", 8, exclude)
        dense = model.score_all(model(to_tokens(arrays["inputs"]))[:, -1])
        expected = ranks_from_scores(dense, arrays["targets"], arrays.get("exclude"))
        np.testing.assert_array_equal(rank_batch(params, **arrays), expected)
