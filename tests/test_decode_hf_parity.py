"""beam_search == HF generate(num_beams, num_return_sequences, prefix_allowed_tokens_fn) on tiny
random Llama and T5 checkpoints: semantic IDs (fixed length) and titles (variable length)."""

import numpy as np
import pytest

from jaxrec.decode import ItemTrie, beam_search
from jaxrec.models import load_pretrained

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VOCAB, PAD, EOS = 96, 0, 2
BEAMS = 6
REAL = -1e7  # HF pads missing hypotheses with copies scored about -1e9 / length


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """name -> (jaxrec model, HF torch model) sharing random weights through a saved checkpoint."""
    torch.manual_seed(0)
    llama = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        eos_token_id=EOS, pad_token_id=PAD)).eval()
    t5 = transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        feed_forward_proj="gated-gelu", eos_token_id=EOS, pad_token_id=PAD,
        decoder_start_token_id=PAD)).eval()
    out = {}
    for name, hf in (("llama", llama), ("t5", t5)):
        with torch.no_grad():  # sharper distributions than the default init: beams diverge
            hf.get_output_embeddings().weight.mul_(8.0)
        path = tmp_path_factory.mktemp(name)
        hf.save_pretrained(path)
        out[name] = (load_pretrained(path), hf)
    return out


def _semantic_ids():
    rng = np.random.default_rng(0)
    codes = {tuple(rng.integers(0, 6, 3)) for _ in range(60)}
    return [[10 + c0, 20 + c1, 30 + c2] for c0, c1, c2 in sorted(codes)]


def _titles():
    rng = np.random.default_rng(1)
    stems = [list(rng.integers(40, 90, rng.integers(1, 3))) for _ in range(6)]
    titles = {tuple(stems[rng.integers(6)] + list(rng.integers(40, 90, rng.integers(0, 4))))
              for _ in range(40)}
    return [list(map(int, t)) for t in sorted(titles)]


def _prompts(encoder_decoder: bool):
    rng = np.random.default_rng(2)
    ids = rng.integers(3, VOCAB, (3, 7))
    mask = np.ones_like(ids)
    if encoder_decoder:
        mask[1, 5:] = 0  # right padding for the encoder
    else:
        mask[1, :3] = 0  # left padding
        mask[2, :1] = 0
    return ids * mask + PAD * (1 - mask), mask


def _trie_fn(items, start):
    """HF prefix_allowed_tokens_fn walking a Python dict trie (the reference implementations' way)."""
    root = {}
    for seq in items:
        node = root
        for t in seq + [EOS]:
            node = node.setdefault(t, {})

    def allowed(batch_id, sent):
        node = root
        for t in sent[start:].tolist():
            node = node.get(t)
            if node is None:
                return [EOS]  # a -inf filler beam; any token will do
        return list(node) or [EOS]

    return allowed


def _lcrec_fn(items, start):
    """LC-Rec's function: tokens seen at that position in any item, then EOS."""
    levels = [sorted({s[i] for s in items if len(s) > i}) for i in range(max(map(len, items)))]
    levels.append([EOS])

    def allowed(batch_id, sent):
        n = len(sent) - start
        return levels[n] if n < len(levels) else [EOS]

    return allowed


CASES = {
    "llama-sid": ("llama", _semantic_ids, "trie", dict()),
    "llama-title": ("llama", _titles, "trie", dict()),
    "llama-title-never": ("llama", _titles, "trie", dict(early_stopping="never", length_penalty=2.0)),
    "llama-sid-lcrec": ("llama", _semantic_ids, "per_level", dict()),
    "t5-sid": ("t5", _semantic_ids, "trie", dict()),
    "t5-title-early": ("t5", _titles, "trie", dict(early_stopping=True, length_penalty=0.5)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_beam_search_matches_hf_generate(checkpoints, case):
    name, make_items, mode, options = CASES[case]
    model, hf = checkpoints[name]
    items = make_items()
    trie = ItemTrie.from_sequences(items, eos_id=EOS)
    ids, mask = _prompts(encoder_decoder=name == "t5")
    steps = trie.max_length + 1
    start = 1 if name == "t5" else ids.shape[1]
    fn = (_lcrec_fn if mode == "per_level" else _trie_fn)(items, start)
    with torch.no_grad():
        ref = hf.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), num_beams=BEAMS,
                          num_return_sequences=BEAMS, max_new_tokens=steps, do_sample=False,
                          prefix_allowed_tokens_fn=fn, eos_token_id=EOS, pad_token_id=PAD,
                          return_dict_in_generate=True, output_scores=True, **options)
    ref_seqs = ref.sequences[:, start:].numpy().reshape(3, BEAMS, -1)
    ref_scores = ref.sequences_scores.numpy().reshape(3, BEAMS)
    out = beam_search(model, ids, mask, constraint=trie, mode=mode, num_beams=BEAMS,
                      num_return_sequences=BEAMS, max_new_tokens=steps, eos_token_id=EOS,
                      pad_token_id=PAD, **options)
    seqs, scores, item_ids = map(np.asarray, out)
    for b in range(3):
        real = ref_scores[b] > REAL
        assert real.sum() >= 2
        np.testing.assert_allclose(scores[b][real], ref_scores[b][real], atol=1e-4, rtol=0)
        assert np.isneginf(scores[b][~real]).all()
        for r in np.flatnonzero(real):
            want = ref_seqs[b, r]
            n = len(want) if EOS not in want else list(want).index(EOS) + 1
            assert list(seqs[b, r, :n]) == list(want[:n])
            assert item_ids[b, r] == trie.item_id(want[:n])
        if mode == "trie":
            assert (item_ids[b][real] >= 0).all()
