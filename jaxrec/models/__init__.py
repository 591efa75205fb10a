"""jaxrec.models: Flax NNX Llama-family, T5 and BERT models with Hugging Face checkpoint interop, one
registry row each (:mod:`jaxrec.models.registry`).

```python
from jaxrec.models import load_pretrained, save_pretrained
model = load_pretrained(path, dtype="float32")                          # HF dir -> nnx.Module
logits = model(input_ids, attention_mask=mask)                          # decoder-only [B,T,V]
logits = model(input_ids, attention_mask=mask, decoder_input_ids=dec)   # T5 [B,Td,V]
vectors = model.embed(input_ids, mask, normalize=True)                  # BERT float32 [B,d]
state, logits0 = model.prefill(input_ids, mask, num_beams=K, max_new_tokens=S)
logits, state = model.decode_step(tokens, state, step)
state = model.reorder_beams(state, parent)
```
"""

from jaxrec.models.bert import BertConfig, BertModel
from jaxrec.models.decoding import DecodeState
from jaxrec.models.hf_io import load_pretrained, read_hf_config, save_pretrained
from jaxrec.models.llama import LlamaConfig, LlamaForCausalLM, tiny_llama_config
from jaxrec.models.registry import ARCHITECTURES, architecture, build_model
from jaxrec.models.t5 import T5Config, T5ForConditionalGeneration, tiny_t5_config

__all__ = [
    "ARCHITECTURES", "BertConfig", "BertModel", "DecodeState", "LlamaConfig", "LlamaForCausalLM", "T5Config",
    "T5ForConditionalGeneration", "architecture", "build_model", "load_pretrained", "read_hf_config",
    "save_pretrained", "tiny_llama_config", "tiny_t5_config",
]
