"""TIGER's examples: an item is its semantic-ID code tokens; the encoder reads a history of them.

Encoder input: ``[<u_{user mod n}>]`` (``user_tokens`` = n > 0, TIGER's user hash) then the code tokens of the
last ``max_history`` items, whitespace-separated; target: the next item's code tokens. One training example
per position t >= 1 of every user's training sequence (items [:t] -> item t). The examples are a lazy sequence:
only the (user, position) pairs are held, and the training pipeline builds each example where it reads it.
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


class TigerExamples(Sequence[Example]):
    """One ``seqrec`` example per position t >= 1 of every user's training sequence, user by user, built on
    access from ``pairs`` int64 [E, 2] (user, t)."""

    def __init__(self, split: LeaveOneOut, item_tokens: Sequence[str], max_history: int, user_tokens: int):
        lengths = np.asarray([len(seq) for seq in split.train], np.int64)
        users = np.repeat(np.arange(len(lengths)), np.maximum(lengths - 1, 0))
        starts = np.cumsum(np.maximum(lengths - 1, 0)) - np.maximum(lengths - 1, 0)
        self.pairs = np.stack([users, np.arange(len(users)) - starts[users] + 1], axis=1)
        self.train, self.item_tokens = split.train, item_tokens
        self.max_history, self.user_tokens = max_history, user_tokens

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        user, t = (int(x) for x in self.pairs[index])
        seq = self.train[user]
        return Example("seqrec", encoder_text(seq[:t], user, self.item_tokens, self.max_history, self.user_tokens),
                       self.item_tokens[seq[t]], user, int(seq[t]))


def tiger_train_examples(split: LeaveOneOut, item_tokens: Sequence[str], max_history: int,
                         user_tokens: int) -> TigerExamples:
    """The training examples (a lazy sequence; see :class:`TigerExamples`)."""
    return TigerExamples(split, item_tokens, max_history, user_tokens)


def encoder_length(max_history: int, levels: int, user_tokens: int) -> int:
    """Encoder tokens of the longest input: user token + max_history items x levels + EOS."""
    return int(user_tokens > 0) + max_history * levels + 1
