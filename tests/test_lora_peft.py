"""LoRA adapters in HF PEFT format: a PEFT (torch) adapter loads into jaxrec with the same logits,
and a jaxrec adapter loads into PEFT with the same logits; merge/unmerge; target errors."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from jaxrec.errors import ConfigError  # noqa: E402
from jaxrec.models import load_pretrained  # noqa: E402
from jaxrec.models.lora import LoraConfig, apply_lora, lora_modules, merge_lora, unmerge_lora  # noqa: E402
from jaxrec.models.peft_io import load_adapter, save_adapter  # noqa: E402

IDS = np.array([[5, 9, 3, 17, 33, 2, 8, 41], [7, 7, 1, 60, 12, 19, 25, 4]])


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                   tie_word_embeddings=False)
    model = transformers.LlamaForCausalLM(cfg).eval()
    path = tmp_path_factory.mktemp("hf_llama")
    model.save_pretrained(path)
    return path


def torch_logits(model):
    with torch.no_grad():
        return model(torch.tensor(IDS)).logits.float().numpy()


def test_peft_adapter_loads_with_same_logits(hf_dir, tmp_path):
    base = transformers.LlamaForCausalLM.from_pretrained(hf_dir).eval()
    cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                          modules_to_save=["lm_head"])
    pm = peft.get_peft_model(base, cfg)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                p.add_(0.05 * torch.randn_like(p))
    pm.save_pretrained(tmp_path)
    expected = torch_logits(pm.eval())

    model = load_pretrained(hf_dir)
    lora = load_adapter(model, tmp_path)
    assert lora.rank == 4 and lora.scale == 2.0 and len(lora_modules(model)) == 6
    got = np.asarray(model(jnp.asarray(IDS)))
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_jaxrec_adapter_loads_into_peft_and_merges(hf_dir, tmp_path):
    model = load_pretrained(hf_dir)
    before = np.asarray(model(jnp.asarray(IDS)))
    apply_lora(model, LoraConfig(rank=2, alpha=4, target_modules=("k_proj", "o_proj")))
    np.testing.assert_allclose(np.asarray(model(jnp.asarray(IDS))), before, atol=1e-6)  # B starts at 0
    for i, (_, m) in enumerate(lora_modules(model)):
        m.lora_b[...] = 0.1 * jax.random.normal(jax.random.key(i), m.lora_b.shape)
    adapted = np.asarray(model(jnp.asarray(IDS)))
    save_adapter(model, tmp_path, LoraConfig(rank=2, alpha=4, target_modules=("k_proj", "o_proj")))

    base = transformers.LlamaForCausalLM.from_pretrained(hf_dir).eval()
    pm = peft.PeftModel.from_pretrained(base, tmp_path).eval()
    np.testing.assert_allclose(adapted, torch_logits(pm), atol=1e-4)

    merge_lora(model)
    np.testing.assert_allclose(np.asarray(model(jnp.asarray(IDS))), adapted, atol=1e-4)
    unmerge_lora(model)
    np.testing.assert_allclose(np.asarray(model(jnp.asarray(IDS))), adapted, atol=1e-5)


def test_target_matching_nothing_is_a_clear_error(hf_dir):
    model = load_pretrained(hf_dir)
    with pytest.raises(ConfigError, match="'qproj' matches no linear module.*q_proj"):
        apply_lora(model, LoraConfig(target_modules=("qproj",)))
