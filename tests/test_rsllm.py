"""RSLLM: placeholder injection, InfoNCE vs NumPy, prompt encoding, stage switching, a tiny end-to-end run."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxrec.config import from_dict

from brute_force import hr_ndcg, list_rank, subset
from jaxrec.models.injected_run import load_stage2
from jaxrec.models.item_prompts import encode_prompts, model_inputs
from jaxrec.train.contrastive import ContrastiveConfig, lm_contrastive_loss

TINY = {
    "method": "rsllm",
    "data": {"synthetic": {"preset": "tiny", "num_users": 60, "num_items": 60}},
    "prompts": {"domain": "items", "max_history": 3},
    "model": {"vocab_size": 320, "hidden_size": 32, "intermediate_size": 64, "num_layers": 1, "num_heads": 2,
              "num_kv_heads": 1, "max_position_embeddings": 1024},
    "stage1": {"batch_size": 8, "steps": 2, "log_every": 1, "progress": False, "peak_flops": 1.0e12,
               "lora": {"mode": "full"}, "data": {"seq_len": 256}},
    "stage2": {"batch_size": 8, "steps": 2, "log_every": 1, "progress": False, "peak_flops": 1.0e12,
               "lora": {"mode": "full"}, "data": {"seq_len": 256}},
    "generation": {"num_beams": 2, "batch_size": 8},
    "eval": {"ks": [1, 5], "users": 8, "num_candidates": 5, "free": False},  # free generation + grounding: BIGRec tests
}
# Fixed-seed figures of the end-to-end run below (2 + 2 steps, 8 users, 2 beams: a list of 2, so @5 = @2;
# read from its results.json on CPU, fp32). One user more or less moves HR by 1/8; fp32 rounding on
# another host moves beam scores by ~1e-6, hence abs=1e-4.
CONSTRAINED = {"valid": {"HR@1": 0.0, "NDCG@1": 0.0, "HR@5": 0.0, "NDCG@5": 0.0, "MRR@2": 0.0},
               "test": {"HR@1": 0.0, "NDCG@1": 0.0, "HR@5": 0.25, "NDCG@5": 0.157732, "MRR@2": 0.125}}


@pytest.fixture(scope="module")
def llm():
    """One tiny Llama for the unit tests (each test works on its own ``nnx.clone``)."""
    from jaxrec.models import build_model, tiny_llama_config

    config = tiny_llama_config(50, hidden_size=16, intermediate_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                               head_dim=8)
    return build_model(config, seed=0)


def injected(llm, trainable_table=False, items=7, id_dim=4):
    from jaxrec.models import projector as proj

    model = nnx.clone(llm)
    table = np.random.default_rng(1).normal(size=(items, id_dim)).astype(np.float32)
    projector = proj.ItemProjector(id_dim, 8, 16, out_rms=proj.token_embedding_rms(model), rngs=nnx.Rngs(params=3))
    return proj.inject(model, projector, table, trainable_table=trainable_table), table


# ----------------------------------------------------------------------------- injection


def test_injection_replaces_exactly_the_placeholder_positions(llm):
    from jaxrec.models.projector import placeholder_id

    model, table = injected(llm)
    ids = np.array([[3, 5, placeholder_id(2), 9, placeholder_id(0)], [1, placeholder_id(6), 4, 4, 2]], np.int32)
    out, projected = nnx.jit(lambda m, x, t: (m.embed_tokens(x), m.embed_tokens.projector(t)))(
        model, jnp.asarray(ids), jnp.asarray(table))
    out, projected = np.asarray(out), np.asarray(projected)
    tokens = np.asarray(model.embed_tokens.base.embedding[...])
    for b, t in np.ndindex(ids.shape):
        expected = projected[-1 - ids[b, t]] if ids[b, t] < 0 else tokens[ids[b, t]]
        np.testing.assert_allclose(out[b, t], expected, rtol=1e-6, atol=1e-7)
    # the whole forward sees exactly these embeddings (nothing else changes)
    forward = nnx.jit(lambda m, x, e: (m(x, attention_mask=jnp.ones_like(x)),
                                       m(None, attention_mask=jnp.ones_like(x), inputs_embeds=e)))
    from_ids, from_embeds = forward(model, jnp.asarray(ids), jnp.asarray(out))
    np.testing.assert_allclose(np.asarray(from_ids), np.asarray(from_embeds), rtol=1e-5, atol=1e-5)


def test_projector_starts_at_token_embedding_scale_and_detach_restores_the_model(llm):
    from jaxrec.models import projector as proj

    from jaxrec.errors import JaxrecError

    model, table = injected(llm)
    base = model.embed_tokens.base
    z = np.asarray(model.embed_tokens.project(jnp.arange(table.shape[0])))
    assert z.shape == (7, 16)
    token_rms = np.sqrt(np.mean(np.asarray(base.embedding[...]) ** 2))
    assert 0.3 < np.sqrt(np.mean(z ** 2)) / token_rms < 3.0
    layer = proj.detach(model)
    assert model.embed_tokens is base and isinstance(layer, proj.ItemInjectingEmbed)
    with pytest.raises(JaxrecError):
        proj.detach(model)


def test_prompt_encoding_puts_items_at_the_placeholders():
    from jaxrec.data.splits import leave_one_out
    from jaxrec.data.synthetic import make_synthetic
    from jaxrec.data.tasks import ITEM_PLACEHOLDER, rsllm_eval_examples
    from jaxrec.models.tokenizer import train_bpe_tokenizer

    ds = make_synthetic(num_users=20, num_items=30, seed=0, num_topics=3, max_length=12)
    split = leave_one_out(ds)
    examples = rsllm_eval_examples(ds, split, "test", 2, "items", 3, candidates=4, seed=0)
    tokenizer = train_bpe_tokenizer([e.prompt for e in examples], 300)
    for e, ids in zip(examples, encode_prompts(tokenizer, examples)):
        ids = np.asarray(ids)
        assert (-1 - ids[ids < 0]).tolist() == e.meta["placeholder_items"] == e.meta["history"] + e.meta["candidates"]
        assert tokenizer.decode(ids[ids >= 0].tolist()) == e.prompt.replace(ITEM_PLACEHOLDER, "")
    text_only = rsllm_eval_examples(ds, split, "test", 1, "items", 3)
    assert model_inputs(tokenizer, text_only[:2]) == [[tokenizer.bos_token_id] + x for x in
                                                            tokenizer([e.prompt for e in text_only[:2]],
                                                                      add_special_tokens=False)["input_ids"]]


def test_candidate_training_prompts_carry_history_and_candidate_placeholders():
    from jaxrec.data.splits import leave_one_out
    from jaxrec.data.synthetic import make_synthetic
    from jaxrec.methods import rsllm

    ds = make_synthetic(num_users=20, num_items=30, seed=0, num_topics=3, max_length=12)
    split = leave_one_out(ds)
    config = from_dict(rsllm.Config, {"prompts": {"domain": "items", "max_history": 3, "train_candidates": 4}})
    text, unified = (rsllm.train_examples(config, ds, split, stage) for stage in (1, 2))
    assert [e.meta["candidates"] for e in text] == [e.meta["candidates"] for e in unified]
    assert all(e.meta["placeholder_items"] == [] for e in text)
    assert all(e.meta["placeholder_items"] == e.meta["history"] + e.meta["candidates"] and e.target in
               e.meta["candidates"] for e in unified)
    assert rsllm.max_placeholders(config.prompts) == 7


# ----------------------------------------------------------------------------- contrastive


def numpy_info_nce(q, k, valid, tau, labels):
    qn = q / np.sqrt((q * q).sum(1, keepdims=True) + 1e-6)
    kn = k / np.sqrt((k * k).sum(1, keepdims=True) + 1e-6)
    total, rows = 0.0, 0
    for i in range(len(q)):
        if not valid[i]:
            continue
        sims = [qn[i] @ kn[j] / tau for j in range(len(k)) if j == i or (valid[j] and labels[j] != labels[i])]
        total += np.log(np.sum(np.exp(sims))) - qn[i] @ kn[i] / tau
        rows += 1
    return total / max(rows, 1)


def test_info_nce_equals_numpy():
    from jaxrec.train.contrastive import info_nce

    rng = np.random.default_rng(0)
    q, k = rng.normal(size=(2, 9, 5))
    valid = np.array([1, 1, 0, 1, 1, 1, 0, 1, 1], bool)
    labels = np.array([4, 2, 4, 7, 2, 9, 1, 3, 5])  # items 4 and 2 repeat: not negatives of each other
    loss = jax.jit(info_nce, static_argnums=3)
    for tau, lab in ((0.1, labels), (0.5, np.arange(9))):
        got = float(loss(jnp.asarray(q), jnp.asarray(k), jnp.asarray(valid), tau, jnp.asarray(lab)))
        assert got == pytest.approx(numpy_info_nce(q, k, valid, tau, lab), rel=1e-5)
    assert float(loss(jnp.asarray(q), jnp.asarray(k), jnp.zeros(9, bool), 0.1, jnp.asarray(labels))) == 0.0


def test_first_positions_and_gather():
    from jaxrec.train.contrastive import first_positions, gather_positions

    flags = jnp.asarray([[0, 1, 0, 1, 1], [0, 0, 0, 0, 1]], bool)
    positions, valid = first_positions(flags, 3)
    assert np.asarray(positions)[0].tolist() == [1, 3, 4] and np.asarray(valid)[0].all()
    assert np.asarray(positions)[1, 0] == 4 and np.asarray(valid)[1].tolist() == [True, False, False]
    hidden = jnp.arange(2 * 5 * 2, dtype=jnp.float32).reshape(2, 5, 2)
    assert np.asarray(gather_positions(hidden, positions - 1))[0].tolist() == [[0, 1], [4, 5], [6, 7]]


def test_stage2_loss_equals_direct_computation(llm):
    from jaxrec.models.projector import placeholder_id
    from jaxrec.train.losses import token_cross_entropy

    model, _ = injected(llm)
    ph = placeholder_id
    ids = jnp.asarray([[1, 5, ph(2), 6, ph(3), 8, 9, 2], [1, 7, ph(5), 6, ph(2), 6, 3, 0]], jnp.int32)
    targets = jnp.concatenate([ids[:, 1:], jnp.full((2, 1), 2, jnp.int32)], axis=1)
    batch = {"input_ids": ids, "targets": targets, "attention_mask": jnp.asarray([[1] * 8, [1] * 7 + [0]]),
             "loss_mask": jnp.ones((2, 8), jnp.float32),
             "target_tag": jnp.zeros((2, 8), jnp.int32).at[0, 5].set(1 + 4).at[1, 5].set(1 + 0)}
    c = ContrastiveConfig(lambda_seq=0.3, lambda_item=0.7, temperature=0.2)

    @nnx.jit
    def compute(model, batch):
        hidden = model(batch["input_ids"], attention_mask=batch["attention_mask"], return_hidden=True)
        mask = batch["loss_mask"] * (batch["targets"] >= 0)
        lm, n = token_cross_entropy(model.logits(hidden), jnp.maximum(batch["targets"], 0), mask)
        projected = model.embed_tokens.project(jnp.arange(7))
        return lm_contrastive_loss(c, 3)(model, batch), hidden, lm, n, projected

    (loss, count, metrics), hidden, lm, n, projected = compute(model, batch)
    hidden, projected = np.asarray(hidden), np.asarray(projected)
    assert float(count) == float(n) == 12.0  # placeholders are never targets
    z = lambda items: projected[items]  # noqa: E731
    seq = numpy_info_nce(hidden[[0, 1], [5, 5]], z([4, 0]), [True, True], 0.2, [4, 0])
    item_text = hidden[[0, 0, 0, 1, 1, 1], [1, 3, 0, 1, 3, 0]]
    item = numpy_info_nce(z([2, 3, 0, 5, 2, 0]), item_text, [True, True, False, True, True, False], 0.2,
                          [2, 3, 0, 5, 2, 0])
    assert float(metrics["seq_nce"]) == pytest.approx(seq, rel=1e-4)
    assert float(metrics["item_nce"]) == pytest.approx(item, rel=1e-4)
    assert float(loss) == pytest.approx(float(lm) + 0.3 * seq + 0.7 * item, rel=1e-4)


# ----------------------------------------------------------------------------- stage switching


def trained_paths(model, lora):
    from jaxrec.models.lora import apply_lora, trainable_filter
    from jaxrec.train.train_step import split_model

    apply_lora(model, lora)
    _, params, _, frozen = split_model(model, trainable_filter(lora))
    names = lambda state: {".".join(map(str, p)) for p, _ in nnx.to_flat_state(state)}  # noqa: E731
    return names(params), names(frozen)


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_stage_switching_freezes_what_it_should(llm, mode):
    from jaxrec.methods.rsllm import stage_lora
    from jaxrec.models.lora import LoraConfig

    lora = LoraConfig(mode=mode, rank=2)
    stage1, _ = trained_paths(nnx.clone(llm), stage_lora(lora, 1, False))  # stage 1: no projector in the model yet
    stage2, frozen2 = trained_paths(injected(llm)[0], stage_lora(lora, 2, False))
    stage2_table, _ = trained_paths(injected(llm, trainable_table=True)[0], stage_lora(lora, 2, True))
    projector = {p for p in stage2 if ".projector." in p}
    assert projector and all("embed_tokens.projector" in p for p in projector)
    assert "embed_tokens.item_table" in frozen2 and "embed_tokens.item_table" not in stage2
    assert stage2_table == stage2 | {"embed_tokens.item_table"}
    if mode == "lora":
        assert stage1 and all(p.endswith(("lora_a", "lora_b")) for p in stage1)
        assert {p for p in stage2 if not p.endswith(("lora_a", "lora_b"))} == projector
    else:
        assert "embed_tokens.embedding" in stage1 and "embed_tokens.base.embedding" in stage2


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from jaxrec.methods import rsllm

    out = tmp_path_factory.mktemp("rsllm")
    config = from_dict(rsllm.Config, {**TINY, "out_dir": str(out), "id_model": {"run_dir": str(out / "sasrec")}})
    # a SASRec run's embeddings are loaded, not trained again (SASRec training is tested on its own)
    (out / "sasrec").mkdir()
    np.save(out / "sasrec" / "item_embeddings.npy", np.random.default_rng(0).normal(size=(60, 6)).astype(np.float32))
    summary = rsllm.train(config)
    return config, summary, rsllm.evaluate(config)


def test_end_to_end(run):
    from jaxrec.data.source import load_dataset
    from jaxrec.models.projector import unit_rms

    config, summary, result = run
    assert summary["stage1"]["step"] == 2 and summary["stage2"]["step"] == 2
    for key in ("lm_loss", "seq_nce", "item_nce"):
        assert np.isfinite(summary["stage2"][key]) and summary["stage2"][key] > 0
    assert result["examples"] == {"valid": 8, "test": 8}
    assert "free" not in result
    for part in ("valid", "test"):
        metrics = result["constrained"][part]
        assert metrics["users"] == 8
        assert subset(metrics, CONSTRAINED[part]) == pytest.approx(CONSTRAINED[part], abs=1e-4)
    llara = result["llara"]
    assert llara["protocol"].startswith("sampled") and llara["test"] == {"HR@1": 0.0, "ValidRatio": 0.0, "users": 8}
    assert json.loads((Path(config.out_dir) / "results.json").read_text()) == json.loads(json.dumps(result))
    # the SASRec table stayed frozen through stage 2; the trained model reloads with it
    ds = load_dataset(config.data)
    sasrec_table = unit_rms(np.load(Path(config.id_model.run_dir) / "item_embeddings.npy"))
    np.testing.assert_array_equal(np.load(Path(config.out_dir) / "stage2" / "item_table.npy"), sasrec_table)
    model, _ = load_stage2(config.out_dir, config.model, config.projector)
    assert model.embed_tokens.num_items == ds.num_items


def test_constrained_figures_recomputed_from_the_beams(run):
    """The evaluated users' constrained beams (distinct catalog items) from the reloaded stage-2 model,
    ranked by position: HR/NDCG by brute force equal the written figures."""
    from jaxrec.data.source import load_dataset
    from jaxrec.data.splits import leave_one_out
    from jaxrec.data.tasks import rsllm_eval_examples
    from jaxrec.data.tasks.item_text import titles
    from jaxrec.decode import ItemTrie
    from jaxrec.decode.driver import generate, padded_length
    from jaxrec.methods import rsllm
    from jaxrec.models.prompts import encode

    config, _, result = run
    ds = load_dataset(config.data)
    split = leave_one_out(ds)
    model, tok = load_stage2(config.out_dir, config.model, config.projector)
    trie = ItemTrie.from_sequences(encode(tok, titles(ds)), eos_id=tok.eos_token_id, vocab_size=model.config.vocab_size)
    examples = {part: rsllm.sample_examples(rsllm_eval_examples(ds, split, part, 2, "items", 3), 8, config.eval.seed)
                for part in ("valid", "test")}
    prompts = {part: model_inputs(tok, ex) for part, ex in examples.items()}
    for part, ex in examples.items():
        _, _, items = generate(model, prompts[part], constraint=trie, num_beams=2, max_new_tokens=trie.max_length + 1,
                               eos_id=tok.eos_token_id, pad_id=tok.pad_token_id, batch_size=8,
                               length=padded_length(prompts["valid"] + prompts["test"]))  # as the evaluation pads
        assert items.shape == (8, 2) and ((items >= 0) & (items < ds.num_items)).all()
        assert all(len(set(row)) == 2 for row in items.tolist())
        expected = hr_ndcg([list_rank(row, e.target) for row, e in zip(items, ex)], (1, 5), "MRR@2")
        assert subset(result["constrained"][part], expected) == pytest.approx(expected)


def test_excluding_the_prompt_history_from_grounding_only_moves_targets_up(run):
    """eval.exclude_history: free-generation ranks can only shrink; constrained lists and LLaRA are untouched."""
    import dataclasses

    from jaxrec.methods import rsllm

    config, _, _ = run
    free = dataclasses.replace(config, eval=dataclasses.replace(config.eval, free=True))
    plain = rsllm.evaluate(free)
    kept = rsllm.evaluate(dataclasses.replace(free, eval=dataclasses.replace(free.eval, exclude_history=True)))
    assert kept["protocol"]["free"].endswith("history items excluded")
    assert plain["protocol"]["free"].endswith("history items kept in the ranking")
    assert kept["constrained"] == plain["constrained"]
    for part in ("valid", "test"):
        assert kept["free"][part]["MRR"] >= plain["free"][part]["MRR"]
    rsllm.evaluate(config)  # leave the run's results.json as the other tests read it
