"""Lazy examples: the input pipeline tokenizes text examples record by record (each host only its own
rows, optionally in grain worker processes) and yields exactly the batches of the same examples
tokenized up front — causal and seq2seq, bucketing, packing and length grouping, RSLLM's placeholder
prompts — resumes exactly, and a tiny ``finetune`` reproduces the losses recorded before the change."""

import dataclasses
import json
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxrec.data.pipeline import (CausalFeatures, Seq2SeqFeatures, TokenDataConfig, host_batches, make_batches,
                                  token_lengths)
from jaxrec.data.tasks import ITEM_PLACEHOLDER, Example
from jaxrec.models.item_prompts import PlaceholderRows, TaggedFeatures, encode_prompts
from jaxrec.models.prompts import encode
from jaxrec.models.run_dir import make_tokenizer
from jaxrec.models.section import ModelSection
from jaxrec.parallel.mesh import make_mesh
from jaxrec.train.finetune import TextRows

WORDS = [f"w{i}" for i in range(40)]


def text_examples(n=48, seed=0):
    rs = np.random.RandomState(seed)
    return [Example("t", " ".join(rs.choice(WORDS, rs.randint(2, 14))), " ".join(rs.choice(WORDS, rs.randint(1, 5))))
            for _ in range(n)]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    exs = text_examples()
    return make_tokenizer(ModelSection(vocab_size=300), lambda: [e.prompt + " " + e.response for e in exs],
                          tmp_path_factory.mktemp("tok"))


def upfront_rows(tokenizer, examples):
    """Today's rows: every example tokenized in one call, before the pipeline."""
    prompts, responses = encode(tokenizer, [e.prompt for e in examples]), encode(tokenizer, [e.response for e in examples])
    return [{"prompt_ids": p, "response_ids": r} for p, r in zip(prompts, responses)]


def assert_same_batches(a, b):
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert sorted(x) == sorted(y)
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


CASES = {
    "causal_buckets": (TokenDataConfig(seq_len=24, bucket_lengths=(8, 16)), False),
    "causal_group_by_length": (TokenDataConfig(seq_len=24, bucket_lengths=(8, 12, 16, 20), group_by_length=3), False),
    "causal_packing": (TokenDataConfig(seq_len=24, packing=True), False),
    "causal_unshuffled": (TokenDataConfig(seq_len=12, shuffle=False), False),
    "seq2seq_buckets": (TokenDataConfig(seq_len=16, bucket_lengths=(8,)), True),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_lazy_batches_equal_the_batches_of_rows_tokenized_up_front(tokenizer, case):
    config, seq2seq = CASES[case]
    eos = tokenizer.eos_token_id
    features = Seq2SeqFeatures(16, 4, eos, 0) if seq2seq else CausalFeatures(config.seq_len, eos, tokenizer.bos_token_id)
    examples = text_examples()
    kw = {"global_batch": 8, "seed": 3, "num_epochs": 2, "target_len": 4 if seq2seq else None,
          "pad_id": tokenizer.pad_token_id}
    upfront = list(host_batches(upfront_rows(tokenizer, examples), features, config, **kw))
    encoder = TextRows(tokenizer)
    lengths = token_lengths(encoder, examples, chunk=5)  # chunks of 5: a last partial chunk too
    assert lengths.dtype == np.int32 and lengths.shape == (48, 2)
    assert lengths.tolist() == [[len(r["prompt_ids"]), len(r["response_ids"])] for r in upfront_rows(tokenizer, examples)]
    lazy = list(host_batches(examples, features, config, encoder=encoder, lengths=lengths.sum(1), **kw))
    assert_same_batches(lazy, upfront)
    if not config.packing:
        assert len(lazy) == 12  # 2 epochs of 48 examples in batches of 8


@dataclasses.dataclass(frozen=True)
class CountingRows(TextRows):
    """TextRows that records which examples (by prompt) it encoded."""

    seen: list = dataclasses.field(default_factory=list)

    def __call__(self, examples):
        self.seen.extend(e.prompt for e in examples)
        return super().__call__(examples)


def test_each_host_encodes_only_its_own_rows(tokenizer, monkeypatch):
    examples = [Example("t", f"w{i} w{i % 7}", "w1") for i in range(32)]  # distinct prompts
    features = CausalFeatures(16, tokenizer.eos_token_id, tokenizer.bos_token_id)
    config = TokenDataConfig(seq_len=16)
    seen, firsts = [], []
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    for index in range(2):
        monkeypatch.setattr(jax, "process_index", lambda index=index: index)
        encoder = CountingRows(tokenizer, [])
        batches = list(host_batches(examples, features, config, global_batch=8, seed=1, num_epochs=1, encoder=encoder))
        assert len(batches) == 4 and all(b["input_ids"].shape[0] == 4 for b in batches)
        firsts.append(np.concatenate([b["input_ids"][:, 1] for b in batches]))  # each row's first prompt token
        seen.append(encoder.seen)
    # each host tokenized its 16 rows once; the hosts' rows are disjoint and make up the epoch
    assert [len(s) for s in seen] == [16, 16] and sorted(seen[0] + seen[1]) == sorted(e.prompt for e in examples)
    monkeypatch.undo()
    single = list(host_batches(examples, features, config, global_batch=8, seed=1, num_epochs=1,
                               encoder=TextRows(tokenizer)))
    # global batch s = host 0's 4 rows then host 1's 4 rows
    np.testing.assert_array_equal(np.concatenate([b["input_ids"][:, 1] for b in single]),
                                  np.stack([f.reshape(4, 4) for f in firsts], 1).reshape(-1))


def test_placeholder_rows_encode_like_encode_prompts_and_batch_alike(tokenizer):
    rs = np.random.RandomState(4)
    examples = []
    for u in range(16):
        items = rs.randint(0, 50, rs.randint(0, 4)).tolist()
        prompt = "w3 w4 " + " then ".join(f"w{u % 9} {ITEM_PLACEHOLDER}" for _ in items) + " w5"
        examples.append(Example("rsllm", prompt, f"w{u % 11}", user=u, target=u + 2, meta={"placeholder_items": items}))
    rows = PlaceholderRows(tokenizer)(examples)
    assert [r["prompt_ids"] for r in rows] == encode_prompts(tokenizer, examples)
    assert [r["target"] for r in rows] == [e.target for e in examples]
    assert sum(i < 0 for r in rows for i in r["prompt_ids"]) == sum(len(e.meta["placeholder_items"]) for e in examples)
    features = TaggedFeatures(20, tokenizer.eos_token_id, tokenizer.bos_token_id)
    config = TokenDataConfig(seq_len=20, group_by_length=2)
    lazy = list(host_batches(examples, features, config, global_batch=4, num_epochs=1, encoder=PlaceholderRows(tokenizer),
                             lengths=token_lengths(PlaceholderRows(tokenizer), examples).sum(1)))
    assert_same_batches(lazy, list(host_batches(rows, features, config, global_batch=4, num_epochs=1)))
    assert any(b["target_tag"].any() for b in lazy)


def device_batches(tokenizer, config):
    examples = text_examples(40, seed=5)
    encoder = TextRows(tokenizer)
    return make_batches(examples, CausalFeatures(24, tokenizer.eos_token_id, tokenizer.bos_token_id), config,
                        make_mesh(), global_batch=8, seed=2, encoder=encoder,
                        lengths=token_lengths(encoder, examples).sum(1))


def take(iterator, n):
    return [{k: np.asarray(v) for k, v in next(iterator).items()} for _ in range(n)]


def test_lazy_pipeline_resumes_exactly(tokenizer):
    for config in (TokenDataConfig(seq_len=24, bucket_lengths=(12,), group_by_length=2),
                   TokenDataConfig(seq_len=24, packing=True)):
        reference = take(device_batches(tokenizer, config), 9)
        it = device_batches(tokenizer, config)
        take(it, 4)
        resumed = device_batches(tokenizer, config)
        resumed.set_state(it.get_state())
        assert_same_batches(take(resumed, 5), reference[4:])


def test_worker_processes_yield_the_same_batches_and_resume_exactly(tokenizer):
    config = TokenDataConfig(seq_len=24, packing=True, workers=1)  # packing: stateful, after the workers
    reference = take(device_batches(tokenizer, dataclasses.replace(config, workers=0)), 7)
    it = device_batches(tokenizer, config)
    assert_same_batches(take(it, 3), reference[:3])
    resumed = device_batches(tokenizer, config)
    resumed.set_state(it.get_state())
    assert_same_batches(take(resumed, 4), reference[3:])


# losses (train/loss, steps 1-4) and truncation counts of the run below, recorded with the code that
# tokenized every example up front (commit 4563c68), 8 CPU devices
RECORDED = {"losses": [5.68574333190918, 5.708662986755371, 5.696659088134766, 5.664871692657471],
            "truncated": 14, "no_response": 8}


def test_tiny_finetune_reproduces_the_losses_recorded_before_lazy_examples(tokenizer, tmp_path):
    from jaxrec.models import build_model, tiny_llama_config
    from jaxrec.models.lora import LoraConfig
    from jaxrec.train.config import OptimConfig, TrainConfig
    from jaxrec.train.finetune import finetune

    cfg = TrainConfig(batch_size=8, steps=4, log_every=1, progress=False, log_dir=str(tmp_path), peak_flops=1e12,
                      optim=OptimConfig(learning_rate=1e-2, warmup_steps=1),
                      data=TokenDataConfig(seq_len=24, bucket_lengths=(8, 16), group_by_length=2),
                      lora=LoraConfig(rank=4, alpha=8, target_modules=("q_proj", "v_proj")))
    model = build_model(tiny_llama_config(len(tokenizer), hidden_size=32, intermediate_size=64, head_dim=8,
                                          num_layers=1), seed=0)
    _, summary = finetune(model, tokenizer, text_examples(), cfg)
    rows = [json.loads(line) for line in (Path(tmp_path) / "metrics.jsonl").read_text().splitlines()]
    got = {"losses": [r["train/loss"] for r in rows if "train/loss" in r], "truncated": summary["truncated_examples"],
           "no_response": summary["examples_without_response"]}
    assert got["truncated"] == RECORDED["truncated"] and got["no_response"] == RECORDED["no_response"]
    np.testing.assert_allclose(got["losses"], RECORDED["losses"], rtol=1e-6)
