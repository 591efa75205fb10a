"""T5-style sentinels and span corruption (masked language modelling over words)."""

from __future__ import annotations

import numpy as np

from jaxrec.errors import DataError

MAX_SENTINELS = 100  # T5 vocabularies hold <extra_id_0> ... <extra_id_99>


def sentinel(k: int) -> str:
    """The k-th T5 sentinel token text, ``<extra_id_k>``."""
    if not 0 <= k < MAX_SENTINELS:
        raise DataError(f"sentinel index {k} outside [0, {MAX_SENTINELS})")
    return f"<extra_id_{k}>"


def _random_partition(rng: np.random.Generator, total: int, parts: int) -> list[int]:
    """``parts`` positive integers summing to ``total`` (a seeded random composition)."""
    cuts = np.sort(rng.choice(np.arange(1, total), size=parts - 1, replace=False)) if parts > 1 else np.zeros(0, int)
    bounds = np.concatenate([[0], cuts, [total]])
    return np.diff(bounds).tolist()


def corrupt_spans(words: list[str], rng: np.random.Generator, noise_density: float = 0.15,
                  mean_span: float = 3.0) -> tuple[str, str]:
    """Replace random word spans by sentinels, T5 style. Needs at least 2 words.

    ``round(n * noise_density)`` (at least 1) words are masked in ``round(noise / mean_span)`` (at
    least 1) spans; the text alternates kept and masked spans, starting with a kept one. Returns
    ``(input, target)``: ``"a b <extra_id_0> e <extra_id_1>"`` and ``"<extra_id_0> c d <extra_id_1> f"``.
    """
    n = len(words)
    if n < 2:
        raise DataError(f"span corruption needs at least 2 words, got {n}")
    num_noise = min(n - 1, max(1, int(round(n * noise_density))))
    num_spans = max(1, min(int(round(num_noise / mean_span)), num_noise, n - num_noise, MAX_SENTINELS))
    noise = _random_partition(rng, num_noise, num_spans)
    kept = _random_partition(rng, n - num_noise, num_spans)
    inputs, targets, pos = [], [], 0
    for k, (keep, drop) in enumerate(zip(kept, noise)):
        inputs.extend(words[pos:pos + keep])
        inputs.append(sentinel(k))
        pos += keep
        targets.append(sentinel(k))
        targets.extend(words[pos:pos + drop])
        pos += drop
    return " ".join(inputs), " ".join(targets)
