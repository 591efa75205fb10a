"""`jaxrec bench llm-eval` on a tiny random Llama saved as an HF directory (with a BPE tokenizer), synthetic
data, 4 users, peer hf: the JSON has its figures, and with identical fp32 weights both sides generate the
same top-beam texts and give every user the same target rank."""

import argparse
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """An HF directory: random Llama (sharpened output layer, so beams do not near-tie) + BPE tokenizer."""
    from jaxrec.data.tasks.item_text import quoted, titles
    from jaxrec.data.source import DataConfig, SyntheticData, load_dataset
    from jaxrec.models.tokenizer import train_bpe_tokenizer

    path = tmp_path_factory.mktemp("tiny-llama")
    ds = load_dataset(DataConfig(synthetic=SyntheticData()))
    texts = [quoted(t) for t in titles(ds)] + ["Looking at the items this user has bought so far, recommend one"]
    tokenizer = train_bpe_tokenizer(texts, 512, path)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)).eval()
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(8.0)
    model.save_pretrained(path)
    return path


def parse(argv):
    from jaxrec.bench import llm_eval

    sub = argparse.ArgumentParser().add_subparsers()
    llm_eval.register(sub)
    return sub.choices["llm-eval"].parse_args(argv)


def test_llm_eval_bench_agrees_with_hf(tiny_checkpoint, capsys):
    args = parse(["--model", str(tiny_checkpoint), "--users", "4", "--beams", "4", "--batch", "4",
                  "--repeats", "1", "--peer", "hf"])
    assert args.func(args) == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("hardware", "users_per_s", "users_per_s_best", "compile_s", "catalog_embed_s", "phases_s",
                "peer_users_per_s", "peer_users_per_s_best", "peer_catalog_embed_s", "speedup_vs_peer",
                "hr_at_10", "peer_hr_at_10", "agreement"):
        assert key in result, key
    assert result["benchmark"] == "llm-eval" and result["config"]["users"] == 4
    assert result["config"]["chat_template"] is False  # the BPE tokenizer has no chat template
    assert result["users_per_s"] > 0 and result["peer_users_per_s"] > 0 and result["compile_s"] >= 0
    assert result["agreement"] == 1.0, result["differing_texts"]
    ranks, peer_ranks = np.array(result["target_ranks"]), np.array(result["peer_target_ranks"])
    assert len(ranks) == 4 and ((1 <= ranks) & (ranks <= result["config"]["catalog_items"])).all()
    np.testing.assert_array_equal(ranks, peer_ranks)
    assert result["rank_agreement"] == 1.0
    assert result["hr_at_10"] == result["peer_hr_at_10"] == float(np.mean(ranks <= 10))
