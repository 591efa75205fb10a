"""Train/valid/test splits of a canonical :class:`~jaxrec.data.dataset.Dataset`.

Two protocols, as used by the papers jaxrec reproduces:

* :func:`leave_one_out` — per user, the last item is the test target, the second-to-last the
  validation target, everything before is training data (SASRec, S3-Rec, TIGER, LC-Rec, ...).
* :func:`temporal_split` — BIGRec's global temporal split: next-item examples (an interaction and
  the user's previous <= ``history`` items) are ordered by timestamp and cut 80/10/10.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxrec.data.dataset import Dataset
from jaxrec.errors import DataError

MIN_EVAL_LENGTH = 3


@dataclasses.dataclass
class LeaveOneOut:
    """Per-user leave-one-out split.

    Users with at least 3 interactions are evaluated: ``train[u] = seq[:-2]``, validation predicts
    ``seq[-2]`` from ``seq[:-2]``, test predicts ``seq[-1]`` from ``seq[:-1]``. Users with fewer
    than 3 interactions are not evaluated (neither valid nor test) and their whole sequence is
    training data. Hence ``valid_users`` and ``test_users`` are the same users.

    Attributes:
      train: per user u (all users), int32 [n_u'] training items; popularity counts come from these.
      valid_users: int32 [Uv] users with a validation example, ascending.
      valid_history: per valid user, int32 [n_u - 2] = ``seq[:-2]``.
      valid_target: int32 [Uv] = ``seq[-2]``.
      test_users: int32 [Ut] users with a test example, ascending.
      test_history: per test user, int32 [n_u - 1] = ``seq[:-1]``.
      test_target: int32 [Ut] = ``seq[-1]``.
    """

    train: list[np.ndarray]
    valid_users: np.ndarray
    valid_history: list[np.ndarray]
    valid_target: np.ndarray
    test_users: np.ndarray
    test_history: list[np.ndarray]
    test_target: np.ndarray


def leave_one_out(ds: Dataset) -> LeaveOneOut:
    """Split every user's chronological sequence into train / valid target / test target."""
    sequences = ds.sequences()
    lengths = ds.lengths()
    evaluated = np.flatnonzero(lengths >= MIN_EVAL_LENGTH).astype(np.int32)
    train = [s[:-2] if len(s) >= MIN_EVAL_LENGTH else s for s in sequences]
    ends = ds.offsets[1:][evaluated]
    return LeaveOneOut(
        train=train,
        valid_users=evaluated,
        valid_history=[train[u] for u in evaluated],
        valid_target=ds.item_ids[ends - 2].astype(np.int32),
        test_users=evaluated.copy(),
        test_history=[sequences[u][:-1] for u in evaluated],
        test_target=ds.item_ids[ends - 1].astype(np.int32),
    )


@dataclasses.dataclass
class TemporalExamples:
    """Next-item examples of one period of a temporal split (N examples).

    Attributes:
      users: int32 [N] user of each example.
      history: per example, int32 [h] with 1 <= h <= history window (``min_history`` may allow 0):
        the user's items immediately before the target, oldest first.
      target: int32 [N] the interacted item.
      timestamp: int64 [N] time of the target interaction.
    """

    users: np.ndarray
    history: list[np.ndarray]
    target: np.ndarray
    timestamp: np.ndarray

    def __len__(self) -> int:
        return int(self.target.shape[0])


@dataclasses.dataclass
class TemporalSplit:
    """BIGRec's global temporal split.

    Attributes:
      train, valid, test: the examples of each period.
      cut_timestamps: (t1, t2): timestamps of the first interaction of the valid and test periods
        (None for an empty period).
    """

    train: TemporalExamples
    valid: TemporalExamples
    test: TemporalExamples
    cut_timestamps: tuple[int | None, int | None]


def temporal_split(ds: Dataset, ratios: tuple[float, float, float] = (0.8, 0.1, 0.1), history: int = 10,
                   min_history: int = 1, min_target_rating: float | None = None) -> TemporalSplit:
    """Cut next-item examples by time into train/valid/test periods (BIGRec protocol).

    Semantics:
      * Every interaction with at least ``min_history`` earlier interactions of the same user (and,
        if ``min_target_rating`` is set, a rating >= it) is one example: target = its item, history =
        the up to ``history`` items the user interacted with just before it, oldest first — from
        any period, so test histories may contain train items.
      * The N examples are sorted by (timestamp, user id, position in the user's sequence), a stable
        order, and cut: the first ``floor(r_train * N)`` are train, up to
        ``floor((r_train + r_valid) * N)`` valid, the rest test.
      * BIGRec's own preprocessing corresponds to ``history=10, min_history=10`` and, on MovieLens,
        ``min_target_rating=4`` (ratings > 3); the defaults keep every interaction that has a history.

    Raises:
      DataError: the dataset has no timestamps (or no ratings when ``min_target_rating`` is set), or
        ratios/history are invalid.
    """
    if ds.timestamps is None:
        raise DataError(f"dataset {ds.name!r} has no timestamps; the temporal split needs them "
                        f"(use leave_one_out, or prepare the data from a source with timestamps)")
    if min_target_rating is not None and ds.ratings is None:
        raise DataError(f"dataset {ds.name!r} has no ratings; min_target_rating={min_target_rating} needs them")
    if len(ratios) != 3 or any(r < 0 for r in ratios) or abs(sum(ratios) - 1.0) > 1e-6:
        raise DataError(f"temporal split ratios must be 3 non-negative numbers summing to 1, got {tuple(ratios)}")
    if history < 1 or min_history < 0 or min_history > history:
        raise DataError(f"need history >= 1 and 0 <= min_history <= history, got history={history}, "
                        f"min_history={min_history}")
    lengths = ds.lengths()
    users = np.repeat(np.arange(ds.num_users, dtype=np.int32), lengths)
    position = np.arange(ds.num_interactions, dtype=np.int64) - np.repeat(ds.offsets[:-1], lengths)
    eligible = position >= min_history
    if min_target_rating is not None:
        eligible &= ds.ratings >= min_target_rating
    rows = np.flatnonzero(eligible)
    rows = rows[np.lexsort((position[rows], users[rows], ds.timestamps[rows]))]
    n = rows.size
    c1 = int(np.floor(ratios[0] * n))
    c2 = max(c1, int(np.floor((ratios[0] + ratios[1]) * n)))

    def examples(part: np.ndarray) -> TemporalExamples:
        starts = np.maximum(ds.offsets[users[part]], part - history)
        return TemporalExamples(
            users=users[part],
            history=[ds.item_ids[s:r] for s, r in zip(starts.tolist(), part.tolist())],
            target=ds.item_ids[part].astype(np.int32),
            timestamp=ds.timestamps[part],
        )

    def first_ts(part: np.ndarray) -> int | None:
        return int(ds.timestamps[part[0]]) if part.size else None

    periods = (rows[:c1], rows[c1:c2], rows[c2:])
    return TemporalSplit(train=examples(periods[0]), valid=examples(periods[1]), test=examples(periods[2]),
                         cut_timestamps=(first_ts(periods[1]), first_ts(periods[2])))
