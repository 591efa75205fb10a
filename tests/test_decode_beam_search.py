"""beam_search properties on a tiny pure-JAX model implementing the decoding protocol."""

import importlib
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxrec.decode import ItemTrie, beam_search
from jaxrec.errors import DataError, JaxrecError

bs = importlib.import_module("jaxrec.decode.beam_search")

VOCAB, EOS, PAD = 24, 1, 0
SEARCH = dict(num_beams=4, num_return_sequences=4, max_new_tokens=6)  # shared: few compilations


@dataclass(frozen=True)
class ToyConfig:
    vocab_size: int = VOCAB
    eos_token_id: int = EOS
    pad_token_id: int = PAD
    max_position_embeddings: int = 64


class ToyLM(nnx.Module):
    """Logits depend on the prompt and on every generated token (so cache reordering matters)."""

    def __init__(self, dim: int = 16, seed: int = 0):
        keys = jax.random.split(jax.random.key(seed), 2)
        self.config = ToyConfig()
        self.embed = nnx.Param(jax.random.normal(keys[0], (VOCAB, dim)))
        self.out = nnx.Param(jax.random.normal(keys[1], (dim, VOCAB)) * 2.0)

    def _logits(self, h):
        return jnp.tanh(h) @ self.out[...]

    def prefill(self, input_ids, attention_mask, num_beams, max_new_tokens):
        mask = attention_mask[..., None].astype(jnp.float32)
        prompt = (self.embed[...][input_ids] * mask).sum(1) / mask.sum(1)
        gen = jnp.zeros((input_ids.shape[0], num_beams, max_new_tokens, prompt.shape[-1]))
        return {"prompt": prompt, "gen": gen}, self._logits(prompt)

    def decode_step(self, tokens, state, step):
        gen = jax.lax.dynamic_update_index_in_dim(state["gen"], self.embed[...][tokens], step, axis=2)
        decay = 0.5 ** (step - jnp.arange(gen.shape[2]))
        weights = jnp.where(jnp.arange(gen.shape[2]) <= step, decay, 0.0)
        h = state["prompt"][:, None] + jnp.einsum("bksd,s->bkd", gen, weights)
        return self._logits(h), {"prompt": state["prompt"], "gen": gen}

    def reorder_beams(self, state, parent):
        gen = jnp.take_along_axis(state["gen"], parent[:, :, None, None], axis=1)
        return {"prompt": state["prompt"], "gen": gen}


@pytest.fixture(scope="module")
def model():
    return ToyLM()


@pytest.fixture(scope="module")
def prompts():
    rng = np.random.default_rng(1)
    ids = rng.integers(2, VOCAB, (4, 6))
    mask = np.ones_like(ids)
    mask[1, :2] = 0  # left padding
    return ids, mask


def _items(n, rng, lo=1, hi=5):
    seqs = {tuple(rng.integers(2, VOCAB, rng.integers(lo, hi + 1))) for _ in range(n)}
    return [list(s) for s in sorted(seqs)]


def test_every_constrained_output_is_an_item_and_scores_are_sorted(model, prompts):
    items = _items(40, np.random.default_rng(2))
    trie = ItemTrie.from_sequences(items, eos_id=EOS)
    out = beam_search(model, *prompts, constraint=trie, **SEARCH)
    seqs, scores, ids = map(np.asarray, out)
    assert seqs.shape == (4, 4, 6) and (ids >= 0).all()
    assert (np.diff(scores, axis=1) <= 0).all()
    for b in range(4):
        for r in range(4):
            want = trie.sequence(ids[b, r])
            assert list(seqs[b, r, :len(want)]) == list(want)
            assert (seqs[b, r, len(want):] == PAD).all()


def test_one_item_trie_returns_that_item(model, prompts):
    trie = ItemTrie.from_sequences([[7, 3, 9]], eos_id=EOS)
    out = beam_search(model, *prompts, constraint=trie, **SEARCH)
    ids = np.asarray(out.item_ids)
    assert (ids[:, 0] == 0).all() and (ids[:, 1:] == -1).all()
    assert np.isfinite(out.scores[:, 0]).all() and np.isneginf(out.scores[:, 1:]).all()


def test_beams_at_least_items_returns_every_item(model, prompts):
    items = [[3, 4], [3, 5, 6], [8], [3, 4, 7]]
    trie = ItemTrie.from_sequences(items, eos_id=EOS)
    out = beam_search(model, *prompts, constraint=trie, early_stopping="never", length_penalty=0.0,
                      **SEARCH)
    ids = np.asarray(out.item_ids)
    for row in ids:
        assert sorted(row[row >= 0]) == list(range(len(items)))


def test_dense_levels_long_items_in_the_while_loop_and_sharding_agree(model, prompts, monkeypatch):
    items = _items(60, np.random.default_rng(3), lo=2, hi=5)
    trie = ItemTrie.from_sequences(items, eos_id=EOS)
    args = dict(constraint=trie, **SEARCH)
    ref = beam_search(model, *prompts, dense_depths=0, **args)  # all steps unrolled
    dense = beam_search(model, *prompts, dense_depths=2, **args)
    monkeypatch.setattr(bs, "UNROLLED_STEPS", 3)  # steps 3.. in the while_loop, batch sharded
    sharding = NamedSharding(Mesh(np.array(jax.devices()[:4]), ("data",)), PartitionSpec("data"))
    looped = beam_search(model, *(jax.device_put(jnp.asarray(x), sharding) for x in prompts),
                         dense_depths=0, **args)
    assert looped.sequences.sharding.is_equivalent_to(sharding, 3)
    for other in (dense, looped):
        np.testing.assert_array_equal(other.sequences, ref.sequences)
        np.testing.assert_array_equal(other.item_ids, ref.item_ids)
        np.testing.assert_allclose(other.scores, ref.scores, rtol=1e-6)
    assert (np.asarray(ref.item_ids) >= 0).all()


def test_per_level_and_unconstrained_modes(model, prompts):
    items = [[3, 4, 5], [6, 7, 8], [3, 7, 9]]
    trie = ItemTrie.from_sequences(items, eos_id=EOS)
    levels = beam_search(model, *prompts, constraint=trie, mode="per_level", **SEARCH)
    seqs, ids = np.asarray(levels.sequences), np.asarray(levels.item_ids)
    for b in range(4):
        for r in range(4):
            assert [seqs[b, r, t] in trie.level_tokens[t] for t in range(4)] == [True] * 4
            assert ids[b, r] == trie.item_id(seqs[b, r, :4])
    free = beam_search(model, *prompts, constraint=trie, mode="none", **SEARCH)
    seqs, ids = np.asarray(free.sequences), np.asarray(free.item_ids)
    for b in range(4):
        for r in range(4):
            ends = np.flatnonzero(seqs[b, r] == EOS)
            want = trie.item_id(seqs[b, r, :ends[0] + 1]) if len(ends) else -1
            assert ids[b, r] == want


@pytest.mark.parametrize("kwargs, message", [
    (dict(max_new_tokens=3), "shorter than the longest item"),
    (dict(num_beams=2, num_return_sequences=3), "num_return_sequences"),
    (dict(max_new_tokens=70), "max_position_embeddings"),
    (dict(mode="beam"), "mode must be"),
    (dict(eos_token_id=2), "ends items with EOS"),
])
def test_bad_arguments_raise_before_compiling(model, prompts, kwargs, message):
    trie = ItemTrie.from_sequences([[3, 4, 5]], eos_id=EOS)
    with pytest.raises(JaxrecError, match=message):
        beam_search(model, *prompts, constraint=trie, **kwargs)


def test_item_token_outside_the_model_vocabulary(model, prompts):
    trie = ItemTrie.from_sequences([[3, VOCAB + 5]], eos_id=EOS)
    with pytest.raises(JaxrecError, match="outside the model's vocabulary"):
        beam_search(model, *prompts, constraint=trie)


def test_bad_prompts_and_tries_raise_naming_the_problem(model, prompts):
    trie = ItemTrie.from_sequences([[3, 4, 5]], eos_id=EOS)
    ids, mask = prompts
    oov = ids.copy()
    oov[2, 3] = VOCAB + 1
    with pytest.raises(JaxrecError, match=rf"input_ids\[2, 3\] = {VOCAB + 1} is outside the model's vocabulary"):
        beam_search(model, oov, mask, constraint=trie)
    negative = ids.copy()
    negative[0, 5] = -1
    with pytest.raises(JaxrecError, match=r"input_ids\[0, 5\] = -1 is outside"):
        beam_search(model, negative, mask, constraint=trie)
    padded = ids.copy()
    padded[1, 0] = -1  # under the padding mask: never read, allowed
    np.testing.assert_array_equal(beam_search(model, padded, mask, constraint=trie, num_beams=1).scores,
                                  beam_search(model, ids, mask, constraint=trie, num_beams=1).scores)
    with pytest.raises(JaxrecError, match="the batch is empty"):
        beam_search(model, ids[:0], mask[:0], constraint=trie)
    with pytest.raises(JaxrecError, match="must be integer token ids, got dtype float"):
        beam_search(model, ids + 0.5, mask, constraint=trie)
    with pytest.raises(DataError, match="eos_id must be a token id in the vocabulary, got -1"):
        ItemTrie.from_sequences([[3, 4]], eos_id=-1)
    with pytest.raises(DataError, match="token ids must be integers, got float64"):
        ItemTrie.from_sequences([[3, 4.7]], eos_id=EOS)
    with pytest.raises(DataError, match="token ids must be integers"):
        ItemTrie.from_sequences(np.array([[3.0, 4.5]]), eos_id=EOS)
