"""Prompt / task builders: datasets and splits → text :class:`Example` records for every LLM method.

See docs/TASKS.md for each task's templates and exact sample format.
"""

from jaxrec.data.tasks.aligned_t5 import (AlignedT5TaskConfig, aligned_t5_eval_examples, aligned_t5_item_keys,
                                          aligned_t5_task_examples, aligned_t5_train_examples)
from jaxrec.data.tasks.alpaca import alpaca_prompt
from jaxrec.data.tasks.bigrec import bigrec_eval_examples, bigrec_examples, bigrec_train_examples
from jaxrec.data.tasks.example import Example
from jaxrec.data.tasks.lcrec import (LCRecTaskConfig, lcrec_eval_all_templates, lcrec_eval_examples,
                                     lcrec_task_examples, lcrec_train_examples)
from jaxrec.data.tasks.rows import Rows, last_item_rows, leave_one_out_rows, sliding_rows, temporal_rows
from jaxrec.data.tasks.rsllm import (ITEM_PLACEHOLDER, rsllm_candidate_examples, rsllm_eval_examples,
                                     rsllm_examples, rsllm_train_examples)

__all__ = [
    "AlignedT5TaskConfig", "Example", "ITEM_PLACEHOLDER", "LCRecTaskConfig", "Rows", "aligned_t5_eval_examples",
    "aligned_t5_item_keys", "aligned_t5_task_examples", "aligned_t5_train_examples", "alpaca_prompt",
    "bigrec_eval_examples", "bigrec_examples", "bigrec_train_examples", "last_item_rows", "lcrec_eval_all_templates",
    "lcrec_eval_examples", "lcrec_task_examples", "lcrec_train_examples", "leave_one_out_rows",
    "rsllm_candidate_examples", "rsllm_eval_examples", "rsllm_examples", "rsllm_train_examples", "sliding_rows",
    "temporal_rows",
]
