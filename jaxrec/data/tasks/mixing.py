"""Combining several tasks' examples into one training stream with per-task ratios."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from jaxrec.data.tasks.example import Example
from jaxrec.errors import ConfigError


def mix_tasks(per_task: Mapping[str, list[Example]], ratios: Mapping[str, float],
              rng: np.random.Generator) -> list[Example]:
    """Scale each task's examples by its ratio, then shuffle them all together.

    A task keeps ``round(ratio * n)`` of its ``n`` examples: ratio 1 (the default for a task not
    named in ``ratios``) keeps all, 0.25 a seeded quarter, 2.5 two full copies plus a seeded half.
    Deterministic given ``rng``; tasks are visited in the order of ``per_task``. Ratios of tasks
    that are not in ``per_task`` (switched off) are ignored; callers check names against their task list.
    """
    out: list[Example] = []
    for task, examples in per_task.items():
        ratio = float(ratios.get(task, 1.0))
        if ratio < 0:
            raise ConfigError(f"mixing ratio of task {task!r} must be >= 0, got {ratio}")
        n = len(examples)
        keep = int(round(ratio * n))
        copies, rest = divmod(keep, n) if n else (0, 0)
        out.extend(examples * copies)
        out.extend(examples[i] for i in np.sort(rng.choice(n, size=rest, replace=False)).tolist())
    order = rng.permutation(len(out))
    return [out[i] for i in order.tolist()]
