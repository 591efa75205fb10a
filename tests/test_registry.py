"""The model registry: every row's model round-trips through HF files (config and weights), an HF config is
dispatched by model_type (or architectures), unknown names fail with one error listing the known ones, and a
recipe's from-scratch ``model:`` section builds the same configs as before the registry."""

import json
import types

import jax
import numpy as np
import pytest
from flax import nnx

from jaxrec.config import from_dict
from jaxrec.errors import ConfigError, JaxrecError
from jaxrec.models import (BertConfig, LlamaConfig, T5Config, build_model, load_pretrained, save_pretrained,
                           tiny_llama_config, tiny_t5_config)
from jaxrec.models.registry import ARCHITECTURES, MODEL_TYPES, architecture, config_from_hf, for_config, is_seq2seq
from jaxrec.models.section import ModelSection, make_model

#: one tiny config per HF model_type the registry loads (a new row without an entry here fails the first test)
TINY = {
    "llama": tiny_llama_config(96, hidden_size=32, intermediate_size=48, head_dim=8, num_layers=1),
    "qwen2": tiny_llama_config(96, hidden_size=32, intermediate_size=48, head_dim=8, num_layers=1,
                               model_type="qwen2", qkv_bias=True, tie_word_embeddings=True),
    "mistral": tiny_llama_config(96, hidden_size=32, intermediate_size=48, head_dim=8, num_layers=1,
                                 model_type="mistral", sliding_window=16),
    "t5": tiny_t5_config(96, d_model=32, d_kv=8, d_ff=48, num_layers=1, num_decoder_layers=2),
    "bert": BertConfig(vocab_size=96, hidden_size=32, num_layers=1, num_heads=4, intermediate_size=48),
}


def test_every_model_type_has_a_tiny_config_of_its_row():
    assert sorted(TINY) == sorted(MODEL_TYPES)
    for model_type, config in TINY.items():
        assert config.model_type == model_type and for_config(config) is MODEL_TYPES[model_type]


@pytest.mark.parametrize("model_type", sorted(TINY))
def test_each_row_builds_a_model_whose_hf_files_round_trip(model_type, tmp_path):
    config = TINY[model_type]
    model = build_model(config, seed=3)
    assert type(model) is MODEL_TYPES[model_type].model
    save_pretrained(model, tmp_path)
    hf = json.loads((tmp_path / "config.json").read_text())
    assert hf["model_type"] == model_type and set(hf["architectures"]) <= set(MODEL_TYPES[model_type].hf_architectures)
    loaded = load_pretrained(tmp_path)
    assert type(loaded) is type(model) and loaded.config.to_hf() == hf  # the HF config round-trips
    ours, theirs = (dict(nnx.to_flat_state(nnx.state(m, nnx.Param))) for m in (model, loaded))
    assert ours.keys() == theirs.keys()
    for path in ours:
        np.testing.assert_array_equal(jax.device_get(ours[path].get_value()), jax.device_get(theirs[path].get_value()))


def test_a_config_without_model_type_is_found_by_its_architectures():
    config = TINY["qwen2"]
    hf = {k: v for k, v in config.to_hf().items() if k != "model_type"}
    assert hf["architectures"] == ["Qwen2ForCausalLM"]
    assert config_from_hf(hf, set()).to_hf() == config.to_hf()


def test_unknown_names_give_one_error_listing_the_known_ones(tmp_path):
    save_pretrained(build_model(TINY["llama"]), tmp_path)
    hf = json.loads((tmp_path / "config.json").read_text())
    hf.update(model_type="gpt2", architectures=["GPT2LMHeadModel"])
    (tmp_path / "config.json").write_text(json.dumps(hf))
    with pytest.raises(JaxrecError, match=r"config.json: unsupported model_type 'gpt2'; expected one of "
                                          r"llama, qwen2, mistral, t5, bert$"):
        load_pretrained(tmp_path)
    with pytest.raises(JaxrecError, match="unknown architecture 'gpt2'; expected one of llama, t5, bert$"):
        architecture("gpt2")
    with pytest.raises(JaxrecError, match="no architecture has the config class SimpleNamespace"):
        build_model(types.SimpleNamespace(model_type="llama"))
    with pytest.raises(ConfigError, match=r"run.yaml: model: arch='bert': expected one of llama, t5"):
        from_dict(ModelSection, {"arch": "bert"}, where="run.yaml", prefix="model")


def test_encoder_decoder_flag_of_each_row():
    assert {name: row.encoder_decoder for name, row in ARCHITECTURES.items()} == {
        "llama": False, "t5": True, "bert": False}
    assert is_seq2seq(build_model(TINY["t5"])) and not is_seq2seq(build_model(TINY["mistral"]))


class _Tokenizer:
    """What a from-scratch model reads of its tokenizer: the vocabulary size and special ids."""

    bos_token_id, eos_token_id, pad_token_id = 1, 2, 0

    def __len__(self):
        return 300


def test_from_scratch_sections_build_the_configs_recipes_always_built():
    section = ModelSection(hidden_size=32, intermediate_size=64, num_layers=3, num_heads=4, num_kv_heads=2,
                           max_position_embeddings=256, dtype="bfloat16", seed=5)
    llama = make_model(section, _Tokenizer()).config
    assert llama == LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_layers=3, num_heads=4,
                                num_kv_heads=2, head_dim=8, max_position_embeddings=256, bos_token_id=1,
                                eos_token_id=2, pad_token_id=0, dtype="bfloat16", param_dtype="bfloat16")
    t5 = make_model(ModelSection(arch="t5", hidden_size=32, intermediate_size=64, num_layers=3, num_heads=4),
                    _Tokenizer()).config
    assert t5 == T5Config(vocab_size=300, d_model=32, d_kv=8, d_ff=64, num_layers=3, num_decoder_layers=3,
                          num_heads=4, pad_token_id=0, eos_token_id=2)
    same_seed = make_model(section, _Tokenizer())
    np.testing.assert_array_equal(np.asarray(same_seed.embed_tokens.embedding.get_value(), np.float32),
                                  np.asarray(build_model(llama, seed=5).embed_tokens.embedding.get_value(), np.float32))
