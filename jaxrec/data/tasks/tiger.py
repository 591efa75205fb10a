"""TIGER's examples: an item is its semantic-ID code tokens; the encoder reads a history of them.

Encoder input: ``[<u_{user mod n}>]`` (``user_tokens`` = n > 0, TIGER's user hash) then the code tokens of the
last ``max_history`` items, whitespace-separated; target: the next item's code tokens. One training example
per position t >= 1 of every user's training sequence (items [:t] -> item t).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from jaxrec.data.splits import LeaveOneOut
from jaxrec.data.tasks.example import Example


def user_token(bucket: int) -> str:
    return f"<u_{bucket}>"


def encoder_text(history: np.ndarray, user: int, item_tokens: Sequence[str], max_history: int,
                 user_tokens: int) -> str:
    """The encoder input of ``user`` after ``history`` (item ids; ``item_tokens[i]``: item i's code tokens)."""
    words = [user_token(user % user_tokens)] if user_tokens else []
    return " ".join(words + [item_tokens[i] for i in np.asarray(history)[-max_history:].tolist()])


def tiger_train_examples(split: LeaveOneOut, item_tokens: Sequence[str], max_history: int,
                         user_tokens: int) -> list[Example]:
    """One ``seqrec`` example per position t >= 1 of every user's training sequence."""
    out = []
    for user, seq in enumerate(split.train):
        for t in range(1, len(seq)):
            out.append(Example("seqrec", encoder_text(seq[:t], user, item_tokens, max_history, user_tokens),
                               item_tokens[seq[t]], user, int(seq[t])))
    return out


def encoder_length(max_history: int, levels: int, user_tokens: int) -> int:
    """Encoder tokens of the longest input: user token + max_history items x levels + EOS."""
    return int(user_tokens > 0) + max_history * levels + 1
