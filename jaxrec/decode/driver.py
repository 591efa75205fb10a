"""Beam search over many prompts: the one driver every recipe decodes through.

Prompts (token ids) are left-padded to one length (default: the longest rounded up to 16) and run
in fixed-size batches (the last one filled with copies of its last row), so a whole evaluation
compiles once per (batch, length, mode). Results come back as numpy, in prompt order.

```python
seqs, scores, items = generate(model, prompts, num_beams=20, max_new_tokens=S, eos_id=e, pad_id=p,
                               constraint=trie)            # [P,R,S], [P,R], [P,R] (-1: not an item)
texts = decode_texts(tokenizer, seqs[:, 0], eos_id=e)
```
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from jaxrec.decode.beam_search import beam_search


def left_pad(seqs: Sequence[Sequence[int]], length: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids [B,length] int32, mask [B,length] int32): each sequence right-aligned (left padding);
    longer sequences keep their last ``length`` tokens."""
    ids = np.full((len(seqs), length), pad_id, np.int32)
    mask = np.zeros((len(seqs), length), np.int32)
    for row, seq in enumerate(seqs):
        tail = list(seq)[-length:]
        if tail:
            ids[row, length - len(tail):] = tail
            mask[row, length - len(tail):] = 1
    return ids, mask


def padded_length(seqs: Sequence[Sequence[int]], multiple: int = 16) -> int:
    """The longest sequence rounded up to ``multiple`` (one compiled shape for a whole set)."""
    longest = max((len(s) for s in seqs), default=1)
    return -(-longest // multiple) * multiple


def batched(fn: Callable[..., tuple], seqs: Sequence[Sequence[int]], batch_size: int, pad_id: int,
            length: int | None = None, desc: str | None = None, rows: tuple[np.ndarray, ...] = ()
            ) -> tuple[np.ndarray, ...]:
    """Apply ``fn(ids [batch_size,L], mask, *row_arrays)`` → tuple of arrays [batch_size,...] over all
    ``seqs`` (``rows``: arrays [P,...] batched alongside); the last batch is filled with copies of its
    last row; results concatenated (numpy). ``desc``: a progress bar (rows done) on stderr."""
    length = length or padded_length(seqs)
    parts = []
    with tqdm(total=len(seqs), desc=desc, unit="row", leave=False, disable=desc is None) as bar:
        for start in range(0, len(seqs), batch_size):
            idx = np.minimum(np.arange(start, start + batch_size), len(seqs) - 1)
            real = min(batch_size, len(seqs) - start)
            ids, mask = left_pad([seqs[i] for i in idx], length, pad_id)
            parts.append(tuple(np.asarray(x)[:real] for x in fn(ids, mask, *(r[idx] for r in rows))))
            bar.update(real)
    return tuple(np.concatenate(cols) for cols in zip(*parts))


def generate(model, prompts: Sequence[Sequence[int]], *, num_beams: int, max_new_tokens: int, eos_id: int, pad_id: int,
             constraint=None, mode: str | None = None, num_return_sequences: int | None = None,
             length_penalty: float = 1.0, batch_size: int = 32, length: int | None = None, desc: str | None = None):
    """Beam search over every prompt (token ids); returns numpy ``(sequences [P,R,S], scores [P,R],
    item_ids [P,R])`` as :func:`jaxrec.decode.beam_search` (``constraint`` with ``mode="none"``:
    free generation that still reports which generations are exactly an item). ``length``: the
    padded prompt length (default :func:`padded_length` of ``prompts``); ``desc``: a progress bar name."""

    def run(ids, mask):
        out = beam_search(model, ids, mask, constraint, mode=mode, num_beams=num_beams,
                          num_return_sequences=num_return_sequences or num_beams, max_new_tokens=max_new_tokens,
                          length_penalty=length_penalty, eos_token_id=eos_id, pad_token_id=pad_id)
        return out.sequences, out.scores, out.item_ids

    return batched(run, prompts, batch_size, pad_id, length, desc)


def decode_texts(tokenizer, sequences: np.ndarray, eos_id: int) -> list[str]:
    """Generated token rows [P,S] → text, cut at the first EOS."""
    texts = []
    for row in np.asarray(sequences):
        end = np.flatnonzero(row == eos_id)
        texts.append(tokenizer.decode(row[: end[0] if end.size else len(row)].tolist(), skip_special_tokens=True))
    return texts
