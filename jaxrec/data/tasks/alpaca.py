"""The generic Alpaca instruction format used by the decoder-only methods (BIGRec, LC-Rec, RSLLM).

``prompt`` ends with the ``### Response:`` header and a newline; the response text follows directly.
"""

from __future__ import annotations

HEADER_WITH_INPUT = ("Below is an instruction that describes a task, paired with an input that provides "
                     "further context. Write a response that appropriately completes the request.\n\n")
HEADER_NO_INPUT = "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
RESPONSE_HEADER = "### Response:\n"


def alpaca_prompt(instruction: str, input_text: str | None = None) -> str:
    """Render an instruction (and optional input) up to and including the response header."""
    if input_text is None:
        return f"{HEADER_NO_INPUT}### Instruction:\n{instruction}\n\n{RESPONSE_HEADER}"
    return f"{HEADER_WITH_INPUT}### Instruction:\n{instruction}\n\n### Input:\n{input_text}\n\n{RESPONSE_HEADER}"
