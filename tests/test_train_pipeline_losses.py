"""Input pipeline + losses: packed rows score like the same examples unpacked, the T5 seq2seq loss equals
a direct computation from the raw ids, and length bucketing pads each batch to its smallest bucket."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxrec.data.pipeline import CausalFeatures, Seq2SeqFeatures, TokenDataConfig, host_batches
from jaxrec.models import build_model, tiny_llama_config, tiny_t5_config
from jaxrec.train.losses import causal_lm_loss, seq2seq_lm_loss
from jaxrec.models.prompts import bos_id, encode, row_fits
from jaxrec.models.section import ModelSection
from jaxrec.models.run_dir import make_tokenizer


def examples(n, seed=0):
    rs = np.random.RandomState(seed)
    return [dict(prompt_ids=rs.randint(3, 60, rs.randint(2, 8)).tolist(),
                 response_ids=rs.randint(3, 60, rs.randint(1, 4)).tolist()) for _ in range(n)]


def jitted_loss(loss_fn, model):
    graphdef, state = nnx.split(model)
    return jax.jit(lambda state, batch: loss_fn(nnx.merge(graphdef, state), batch)[:2]), state


def test_packed_rows_score_like_the_same_examples_unpacked():
    model = build_model(tiny_llama_config(64, hidden_size=32, intermediate_size=64, head_dim=8), seed=0)
    loss, state = jitted_loss(causal_lm_loss, model)
    packed = next(iter(host_batches(examples(32), CausalFeatures(24, eos_id=2, bos_id=1), TokenDataConfig(seq_len=24, packing=True),
                                    global_batch=4)))
    # cut every packed row back into its examples (segments), one right-padded row each
    rows = []
    for r in range(4):
        for seg in range(1, packed["segment_ids"][r].max() + 1):
            at = packed["segment_ids"][r] == seg
            np.testing.assert_array_equal(packed["positions"][r][at], np.arange(at.sum()))
            rows.append({k: packed[k][r][at] for k in ("input_ids", "targets", "loss_mask")})
    assert len(rows) > 4  # rows hold several examples
    width = max(len(r["input_ids"]) for r in rows)
    unpacked = {k: np.stack([np.pad(r[k], (0, width - len(r[k]))) for r in rows]) for k in rows[0]}
    unpacked["attention_mask"] = np.stack([np.arange(width) < len(r["input_ids"]) for r in rows]).astype(np.int32)
    (packed_mean, packed_n), (plain_mean, plain_n) = loss(state, packed), loss(state, unpacked)
    assert float(packed_n) == float(plain_n) == packed["loss_mask"].sum()
    assert float(packed_mean) * float(packed_n) == pytest.approx(float(plain_mean) * float(plain_n), rel=1e-5)


def test_t5_seq2seq_loss_equals_a_direct_computation():
    model = build_model(tiny_t5_config(64, d_model=32, d_kv=8, d_ff=64), seed=0)
    data = examples(4, seed=1)
    features = Seq2SeqFeatures(seq_len=8, target_len=4, eos_id=1, decoder_start_id=0)
    batch = next(iter(host_batches(data, features, TokenDataConfig(seq_len=8, shuffle=False), global_batch=4,
                                   target_len=4)))
    loss, state = jitted_loss(seq2seq_lm_loss, model)
    got, count = loss(state, batch)
    # direct: encoder prompt + EOS (cut to 8), decoder start + target, target = response + EOS (cut to 4)
    logits = nnx.jit(lambda m, x, mask, dec: m(x, attention_mask=mask, decoder_input_ids=dec))(
        model, jnp.asarray(batch["input_ids"]), jnp.asarray(batch["attention_mask"]),
        jnp.asarray(batch["decoder_input_ids"]))
    logp = np.asarray(jax.nn.log_softmax(logits, axis=-1))
    nll = []
    for i, ex in enumerate(data):
        src = (ex["prompt_ids"] + [1])[:8]
        tgt = (ex["response_ids"] + [1])[:4]
        np.testing.assert_array_equal(batch["input_ids"][i][:len(src)], src)
        assert batch["attention_mask"][i].sum() == len(src)
        np.testing.assert_array_equal(batch["decoder_input_ids"][i][:len(tgt)], [0] + tgt[:-1])
        nll += [-logp[i, t, token] for t, token in enumerate(tgt)]
    assert float(count) == len(nll)
    assert float(got) == pytest.approx(np.mean(nll), rel=1e-5)


def test_length_buckets_pad_each_batch_to_its_smallest_bucket():
    config = TokenDataConfig(seq_len=16, bucket_lengths=(6, 10), shuffle=False)
    batches = host_batches(examples(40, seed=2), CausalFeatures(16, eos_id=2, bos_id=1), config, global_batch=4,
                           num_epochs=1)
    widths = set()
    for batch in batches:
        lengths = batch["attention_mask"].sum(axis=1)
        width = batch["input_ids"].shape[1]
        assert width == min(b for b in (6, 10, 16) if b >= lengths.max())
        assert all(batch[k].shape == (4, width) for k in ("targets", "loss_mask"))
        assert not batch["loss_mask"][np.arange(width)[None] >= lengths[:, None]].any()
        widths.add(width)
    assert len(widths) > 1


def test_group_by_length_permutes_rows_into_batches_of_similar_length():
    data = examples(64, seed=3)
    for i, e in enumerate(data):
        e["prompt_ids"] = [3 + i] + e["prompt_ids"]  # first token = example number, to track rows
    features = CausalFeatures(16, eos_id=2, bos_id=1)

    def epoch(group, seed=0):
        config = TokenDataConfig(seq_len=16, bucket_lengths=(6, 8, 10, 12, 14), group_by_length=group)
        return list(host_batches(data, features, config, global_batch=4, seed=seed, num_epochs=1))

    grouped, plain = epoch(4), epoch(0)
    rows = lambda batches: sorted(int(r) - 3 for b in batches for r in b["input_ids"][:, 1])
    assert rows(grouped) == rows(plain) == list(range(64))  # a permutation of the same epoch
    spread = lambda batches: np.mean([np.ptp(b["attention_mask"].sum(1)) for b in batches])
    width = lambda batches: np.mean([b["input_ids"].shape[1] for b in batches])
    assert spread(grouped) < spread(plain) and width(grouped) < width(plain)
    assert all((a["input_ids"] == b["input_ids"]).all() for a, b in zip(grouped, epoch(4)))  # deterministic
    assert [b["input_ids"].tolist() for b in grouped] != [b["input_ids"].tolist() for b in epoch(4, seed=1)]
    with pytest.raises(Exception, match="'group_by_length' must be >= 0"):
        host_batches(data, features, TokenDataConfig(seq_len=16, group_by_length=-1), global_batch=4)
    with pytest.raises(Exception, match="pre-tokenized"):
        next(iter(host_batches([{"prompt": "a b", "response": "c"}] * 8, features,
                               TokenDataConfig(seq_len=16, group_by_length=2), global_batch=4)))


@pytest.mark.parametrize("bos_id", [1, None])
def test_keeps_response_says_whether_a_cut_row_still_scores_the_response(bos_id):
    features = CausalFeatures(8, eos_id=2, bos_id=bos_id)
    for prompt_len in range(4, 12):
        row = features.map({"prompt_ids": list(range(10, 10 + prompt_len)), "response_ids": [7, 7, 7]})
        assert features.keeps_response(prompt_len) == bool(row["loss_mask"].any()), prompt_len


def test_row_fits_agrees_with_the_rows_the_pipeline_builds(tmp_path):
    """``row_fits`` (used to shorten LC-Rec histories) says True exactly when the built row scores the
    whole response and its EOS."""

    texts = [f"user {i} watched item {i * 7} then item {i * 3}" for i in range(200)]
    tokenizer = make_tokenizer(ModelSection(vocab_size=300), lambda: texts, tmp_path)
    bos = bos_id(tokenizer)
    for seq_len in (12, 20, 32):
        fits = row_fits(tokenizer, seq_len)
        features = CausalFeatures(seq_len, eos_id=tokenizer.eos_token_id, bos_id=bos)
        for n in range(1, 9):
            prompt, response = " then ".join(f"item {7 * k}" for k in range(n)), "item 42"
            p, r = encode(tokenizer, [prompt, response])
            row = features.map({"prompt_ids": p, "response_ids": r})
            whole = int(row["loss_mask"].sum()) == len(r) + 1
            assert fits(prompt, response) == whole, (seq_len, n)
