"""Collision rate, code usage and collision resolution (rounds, duplicates, extra level)."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec.index.collisions import (ResolveConfig, append_disambiguation_level, code_usage, collision_rate,
                                     resolve_collisions)


def _rate(codes):
    return 1 - len(np.unique(codes, axis=0)) / len(codes)


def test_collision_rate_and_usage():
    codes = np.array([[0, 1], [0, 1], [0, 2], [3, 1], [0, 1]], np.int32)
    assert float(collision_rate(codes)) == pytest.approx(_rate(codes)) == 2 / 5
    usage = code_usage(codes, 4)
    assert usage["used_fraction"] == [0.5, 0.5]
    assert usage["max_items_per_code"] == [4, 4]


def test_resolution_rounds_reach_zero_collisions():
    rng = np.random.default_rng(0)
    n, k = 48, 16
    prefixes = rng.integers(0, 6, n)
    codes = np.stack([prefixes, rng.integers(0, 3, n)], 1).astype(np.int32)  # crowded on 3 of 16 codes
    residuals = rng.normal(size=(n, 4)).astype(np.float32)
    residuals[1] = residuals[0]  # duplicate embeddings must still be told apart
    codes[1] = codes[0]
    codebook = rng.normal(size=(k, 4)).astype(np.float32)
    before = _rate(codes)
    resolved, report = resolve_collisions(codes, jnp.asarray(residuals), jnp.asarray(codebook), ResolveConfig())
    assert report["collision_rate_before"] == pytest.approx(before) and before > 0
    assert report["collision_rate_final"] == report["collision_rate_after_rounds"] == 0 == _rate(resolved)
    assert not report["extra_level"] and resolved.shape == codes.shape
    np.testing.assert_array_equal(resolved[:, 0], codes[:, 0])  # only the last level moves
    again, _ = resolve_collisions(codes, jnp.asarray(residuals), jnp.asarray(codebook), ResolveConfig())
    np.testing.assert_array_equal(again, resolved)  # deterministic


def test_extra_level_when_a_prefix_holds_more_items_than_codes():
    codes = np.zeros((6, 2), np.int32)  # six items on one prefix, only 4 codes available
    codes[5] = [1, 0]
    residuals, codebook = jnp.ones((6, 2)), jnp.eye(4, 2)
    resolved, report = resolve_collisions(codes, residuals, codebook, ResolveConfig(rounds=3))
    assert report["extra_level"] and report["collision_rate_after_rounds"] > 0
    assert resolved.shape == (6, 3) and _rate(resolved) == 0 == report["collision_rate_final"]
    kept, report = resolve_collisions(codes, residuals, codebook, ResolveConfig(rounds=3, on_remaining="keep"))
    assert kept.shape == (6, 2) and report["collision_rate_final"] > 0
    np.testing.assert_array_equal(append_disambiguation_level(np.array([[1], [2], [1]]))[:, 1], [0, 0, 1])
