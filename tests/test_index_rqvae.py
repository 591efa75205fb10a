"""RQ-VAE semantic index end to end on clustered synthetic embeddings (tiny config)."""

import json

import numpy as np
import pytest

from jaxrec import cli
from jaxrec.config import load_config
from jaxrec.index.build import IndexConfig, build_semantic_index
from jaxrec.index.index_io import read_index

TINY = ["model.hidden=[32]", "model.e_dim=8", "model.levels=3", "model.codebook_size=32",
        "train.epochs=60", "train.batch_size=64", "train.lr=3e-3", "train.warmup_epochs=2",
        "train.eval_every=20", "train.kmeans_iters=10", "train.sinkhorn_epsilons=[0,0,0.003]"]


@pytest.fixture(scope="module")
def embeddings():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(64, 16)) * 2
    return (centers[rng.integers(0, 64, 300)] + rng.normal(size=(300, 16))).astype(np.float32)


@pytest.fixture(scope="module")
def built(embeddings):
    config = load_config(IndexConfig, None, TINY)
    return config, build_semantic_index(embeddings, config, seed=3)


def test_training_reduces_reconstruction_and_resolves_collisions(built):
    config, (codes, report) = built
    recon = report["train"]["recon_loss"]
    assert len(recon) == config.train.epochs and recon[-1] < 0.5 * recon[0]
    assert report["collision_rate_before"] > 0 and report["collision_rate_after_rounds"] == 0
    assert not report["extra_level"] and codes.shape == (300, config.model.levels)
    assert len(np.unique(codes, axis=0)) == len(codes) and codes.dtype == np.int32
    assert len(report["code_usage"]["used_fraction"]) == config.model.levels
    json.dumps(report)  # serialisable


def test_same_seed_same_codes(built, embeddings):
    config, (codes, _) = built
    again, _ = build_semantic_index(embeddings, config, seed=3)
    np.testing.assert_array_equal(again, codes)


def test_cli_build_writes_index_and_report(tmp_path, embeddings):
    np.save(tmp_path / "emb.npy", embeddings)
    out = tmp_path / "toy.index.json"
    args = ["index", "build", "--embeddings", str(tmp_path / "emb.npy"), "--out", str(out), "--seed", "3"]
    assert cli.main(args + [a for s in TINY for a in ("--set", s)]) == 0
    assert read_index(out).shape[0] == 300
    assert json.loads((tmp_path / "toy.index.report.json").read_text())["collision_rate_final"] == 0
    assert cli.main(["index", "build", "--embeddings", str(tmp_path / "emb.npy"), "--out", str(out),
                     "--set", "model.levels=2"]) == 2  # 4 Sinkhorn epsilons for 2 levels: a clear error


def test_a_diverging_rqvae_stops_with_one_error(embeddings):
    from jaxrec.errors import JaxrecError

    config = load_config(IndexConfig, None, [*TINY, "train.lr=1e30", "train.epochs=20", "train.grad_clip=1e30"])
    with pytest.raises(JaxrecError, match="RQ-VAE loss is not finite by epoch 20: try a lower train.lr"):
        build_semantic_index(embeddings, config, seed=3)
