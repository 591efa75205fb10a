"""The record every task builder emits and every tokenizer/pipeline consumes."""

from __future__ import annotations

import dataclasses
import logging

log = logging.getLogger("jaxrec.data.tasks")


@dataclasses.dataclass(frozen=True)
class Example:
    """One text-to-text training or evaluation sample.

    Attributes:
      task: the task name, e.g. ``"seqrec"``, ``"item2index"``, ``"mim"``, ``"bpr"``, ``"rating"``.
      prompt: the full model input text. Decoder-only methods: the rendered instruction prompt up to
        and including the ``### Response:`` header line; T5: the encoder input.
      response: the target text (the loss covers only these tokens unless training on inputs).
      user: user id, or -1 for item-only tasks.
      target: target item id (used by evaluation), or -1.
      meta: task extras (candidate ids, rating value, placeholder item ids, ...), see docs/TASKS.md.
    """

    task: str
    prompt: str
    response: str
    user: int = -1
    target: int = -1
    meta: dict | None = None


def log_skip(task: str, reason: str) -> None:
    """Record that ``task`` (or part of it) produced no examples, and why."""
    log.warning("task %s skipped: %s", task, reason)
