"""Training and evaluation arrays of a sequential recommender, from a leave-one-out split.

Training: every user's sequence gives next-item pairs (:func:`training_pairs`); an epoch groups the rows
into a few static length buckets and shuffles them (:func:`epoch_batches`); :class:`EpochBatches` yields
the batches of all epochs with a resumable position (the interface of the engine's data iterator).
Evaluation: :func:`eval_arrays`.
"""

from __future__ import annotations

import json

import numpy as np

from jaxrec.data.splits import LeaveOneOut
from jaxrec.eval.evaluators import padded_ids


def left_pad(sequences: list[np.ndarray], length: int) -> np.ndarray:
    """int32 [U, length]: the last ``length`` items of each sequence, left-padded with -1."""
    out = np.full((len(sequences), length), -1, dtype=np.int32)
    for row, seq in enumerate(sequences):
        tail = seq[-length:] if length else seq[:0]
        if tail.size:
            out[row, length - tail.size:] = tail
    return out


def training_pairs(train: list[np.ndarray], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Next-item pairs per user: inputs = seq[:-1], labels = seq[1:], each [U', max_len] left-padded (-1).

    Only users with at least 2 training items contribute; sequences keep their last ``max_len + 1``
    items. A last all-padding row (index U') is appended to fill incomplete batches (it carries no loss).
    """
    usable = [s[-(max_len + 1):] for s in train if len(s) >= 2] + [np.zeros(0, np.int32)]
    return left_pad([s[:-1] for s in usable], max_len), left_pad([s[1:] for s in usable], max_len)


def length_buckets(max_len: int) -> np.ndarray:
    """Static training lengths: powers of two from 8, capped by (and always including) ``max_len``."""
    return np.array(sorted({min(2 ** i, max_len) for i in range(3, max_len.bit_length() + 1)} | {max_len}))


def epoch_batches(labels: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[tuple[np.ndarray, int]]:
    """One epoch of ``(row indices [batch_size], length T)`` batches, bucketed by sequence length.

    Rows (all but the final padding row of :func:`training_pairs`) are grouped by the smallest bucket
    of :func:`length_buckets` that holds their items, shuffled within buckets, cut into batches (the
    last one of a bucket filled with the padding row) and the batches shuffled. A batch of bucket T
    only needs the last T positions: short sequences do not pay for ``max_len`` (one compilation per bucket).
    The number of batches does not depend on ``rng``.
    """
    max_len = labels.shape[1]
    buckets = length_buckets(max_len)
    lengths = (labels[:-1] >= 0).sum(axis=1)
    which = np.searchsorted(buckets, lengths)
    pad_row = labels.shape[0] - 1
    batches = []
    for b, length in enumerate(buckets):
        rows = rng.permutation(np.flatnonzero(which == b))
        rows = np.concatenate([rows, np.full(-rows.size % batch_size, pad_row)])
        batches += [(chunk, int(length)) for chunk in rows.reshape(-1, batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def proposal_log_q(labels: np.ndarray, num_items: int, proposal: str) -> np.ndarray:
    """float32 [N] log-probabilities of the sampled-softmax proposal: ``uniform``, or ``popularity`` =
    (occurrences as a training target + 1) / total."""
    if proposal == "uniform":
        return np.full(num_items, -np.log(num_items), np.float32)
    counts = np.bincount(labels[labels >= 0], minlength=num_items).astype(np.float64) + 1.0
    return np.log(counts / counts.sum()).astype(np.float32)


class EpochBatches:
    """The training batches of ``epochs`` epochs: dicts of numpy arrays ``input_ids``/``targets`` [B, T]
    (T: the batch's length bucket), in :func:`epoch_batches` order with ``np.random.default_rng(seed)``.

    With ``log_q`` (a proposal from :func:`proposal_log_q`) each batch also holds ``negatives`` [B, n]
    drawn from it (seeded by (seed, batch number): resumable), ``negative_log_q`` [B, n] and
    ``target_log_q`` [B, T] (0 at padding). ``get_state``/``set_state`` give the position as a dict
    (the next batch to return), as the engine's :class:`~jaxrec.data.pipeline.DeviceIterator` expects.
    """

    def __init__(self, inputs: np.ndarray, labels: np.ndarray, batch_size: int, epochs: int, seed: int,
                 log_q: np.ndarray | None = None, negatives: int = 0):
        self.inputs, self.labels, self.batch_size, self.epochs, self.seed = inputs, labels, batch_size, epochs, seed
        self.log_q, self.negatives = log_q, negatives
        self._cdf = None if log_q is None else np.cumsum(np.exp(log_q.astype(np.float64)))
        self.steps_per_epoch = len(epoch_batches(labels, batch_size, np.random.default_rng(0)))
        self._rng = np.random.default_rng(seed)
        self._start_epoch(0)

    def _start_epoch(self, epoch: int) -> None:
        self._epoch, self._index = epoch, 0
        self._epoch_rng = json.loads(json.dumps(self._rng.bit_generator.state))  # the rng at this epoch's start
        self._batches = epoch_batches(self.labels, self.batch_size, self._rng) if epoch < self.epochs else []

    def __iter__(self) -> EpochBatches:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._index == len(self._batches):
            if self._epoch + 1 >= self.epochs:
                raise StopIteration
            self._start_epoch(self._epoch + 1)
        rows, length = self._batches[self._index]
        number = self._epoch * self.steps_per_epoch + self._index
        self._index += 1
        batch = {"input_ids": self.inputs[rows, -length:], "targets": self.labels[rows, -length:]}
        if self.log_q is not None:
            draw = np.random.default_rng([self.seed, number]).random((len(rows), self.negatives)) * self._cdf[-1]
            negatives = np.minimum(np.searchsorted(self._cdf, draw, side="right"), len(self._cdf) - 1).astype(np.int32)
            targets = batch["targets"]
            batch.update(negatives=negatives, negative_log_q=self.log_q[negatives],
                         target_log_q=np.where(targets >= 0, self.log_q[np.maximum(targets, 0)], 0).astype(np.float32))
        return batch

    def get_state(self) -> dict:
        return {"epoch": self._epoch, "index": self._index, "rng": self._epoch_rng}

    def set_state(self, state: dict) -> None:
        self._rng.bit_generator.state = state["rng"]
        self._start_epoch(state["epoch"])
        self._index = state["index"]


def eval_arrays(split: LeaveOneOut, which: str, max_len: int, exclude_history: bool) -> dict[str, np.ndarray]:
    """Ranking inputs for ``which`` (valid: history ``seq[:-2]``, target ``seq[-2]``; test: ``seq[:-1]``,
    ``seq[-1]``): ``inputs`` [U, max_len], ``targets`` [U], with ``exclude_history`` ``exclude`` [U, E]."""
    histories = split.valid_history if which == "valid" else split.test_history
    targets = split.valid_target if which == "valid" else split.test_target
    arrays = {"inputs": left_pad(histories, max_len), "targets": np.asarray(targets, np.int32)}
    if exclude_history:
        arrays["exclude"] = padded_ids(histories)
    return arrays
