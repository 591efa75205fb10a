"""Next-item rows: the (user, history, target) triples that sequential task builders render.

Every split protocol (leave-one-out, BIGRec's temporal split, sliding windows over training
sequences) is reduced to :class:`Rows`, so each builder is written once against one shape.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np

from jaxrec.data.splits import LeaveOneOut, TemporalExamples
from jaxrec.errors import DataError


@dataclasses.dataclass(frozen=True)
class Rows:
    """N next-item rows.

    Attributes:
      users: int32 [N] user of each row.
      histories: per row, int32 [h] the items before the target, oldest first (untruncated).
      targets: int32 [N] the next item.
    """

    users: np.ndarray
    histories: list[np.ndarray]
    targets: np.ndarray

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def take(self, index: np.ndarray) -> "Rows":
        """The rows at ``index`` (int [M]), in that order."""
        index = np.asarray(index, dtype=np.int64)
        return Rows(self.users[index], [self.histories[i] for i in index.tolist()], self.targets[index])


def sliding_rows(sequences: list[np.ndarray], max_history: int, min_history: int = 1) -> Rows:
    """One row per position of every sequence: target ``seq[i]``, history ``seq[max(0, i-H):i]``.

    Positions with fewer than ``min_history`` (>= 1) previous items make no row.
    ``sequences`` is indexed by user id (e.g. ``LeaveOneOut.train``).
    """
    if max_history < 1 or min_history < 1:
        raise DataError(f"need max_history >= 1 and min_history >= 1, got {max_history}, {min_history}")
    users, histories, targets = [], [], []
    for u, seq in enumerate(sequences):
        seq = np.asarray(seq, dtype=np.int32)
        for i in range(min_history, len(seq)):
            users.append(u)
            histories.append(seq[max(0, i - max_history):i])
            targets.append(int(seq[i]))
    return Rows(np.asarray(users, np.int32), histories, np.asarray(targets, np.int32))


def leave_one_out_rows(split: LeaveOneOut, part: Literal["valid", "test"]) -> Rows:
    """The validation or test rows of a leave-one-out split (one per evaluated user)."""
    if part == "valid":
        return Rows(split.valid_users, list(split.valid_history), split.valid_target)
    if part == "test":
        return Rows(split.test_users, list(split.test_history), split.test_target)
    raise DataError(f"split part must be 'valid' or 'test', got {part!r}")


def temporal_rows(examples: TemporalExamples) -> Rows:
    """The rows of one period of a temporal split."""
    return Rows(examples.users, list(examples.history), examples.target)


def last_item_rows(sequences: list[np.ndarray]) -> Rows:
    """One row per user with at least 2 items: target = last item, history = everything before."""
    users = [u for u, s in enumerate(sequences) if len(s) >= 2]
    return Rows(np.asarray(users, np.int32), [np.asarray(sequences[u][:-1], np.int32) for u in users],
                np.asarray([int(sequences[u][-1]) for u in users], np.int32))
