"""Input pipeline: examples → token batches on device (grain).

``examples`` is any random-access sequence: token rows (dicts with ``prompt_ids`` / ``response_ids``
and any extras the features read), or raw examples (e.g. :class:`jaxrec.data.tasks.Example` text)
with an ``encoder`` that turns a list of them into such rows. Raw examples are tokenized lazily,
one record at a time, by the host that reads them, so no host ever holds every token list. Steps:

1. global shuffle of example indices (seeded; reshuffled every epoch). With ``group_by_length`` the
   shuffled indices are sorted by token length within windows of that many global batches and the
   window's batches shuffled again (:class:`LengthGroups`; it reads an int32 length per example, not
   tokens). Then this process's rows of each global batch (:class:`HostRows`) — every host reads its
   own contiguous block of each global batch;
2. per record: the example (:class:`Records`: looked up, and encoded when there is an ``encoder``),
   then its features (decoder-only: ``input_ids``/``targets``/``loss_mask`` shifted by one;
   T5: encoder ``input_ids`` + ``decoder_input_ids``/``targets``/``loss_mask``), truncated to
   ``seq_len`` (the end of the response is cut first). With ``workers`` this step runs in that many
   grain worker processes (batches are the same for any count);
3. batching: either length bucketing (pad the batch to the smallest of ``bucket_lengths`` that fits;
   one compilation per bucket) or packing (several examples per row with ``segment_ids``/``positions``;
   decoder-only);
4. :class:`DeviceIterator`: host batches → global ``jax.Array``s sharded over the mesh's data axes,
   ``prefetch`` batches ahead (transfers overlap compute). Its ``get_state``/``set_state`` give the
   exact position (batches handed out so far), which is what checkpoints store.

Loss masks: response tokens (+ EOS) only, or every real token when ``train_on_inputs`` (BIGRec).
"""

from __future__ import annotations

import collections
import dataclasses
import json
from typing import Annotated, Any, Callable, Iterator, Sequence

import grain
import jax
import numpy as np
from absl import flags
from jax.sharding import Mesh

from jaxrec.config import Range, check_ranges
from jaxrec.data.packing import pack
from jaxrec.errors import ConfigError, DataError
from jaxrec.parallel.mesh import check_batch_size
from jaxrec.parallel.rules import batch_sharding

# raw examples → their token rows (dicts with ``prompt_ids``/``response_ids`` lists and any extras the
# features read), one row per example, each independent of the others in the list
Encoder = Callable[[Sequence[Any]], list[dict]]


@dataclasses.dataclass(frozen=True)
class TokenDataConfig:
    """Token batches (the ``train.data`` section): fixed ``seq_len`` rows, built by bucketing (padding) or packing."""

    seq_len: Annotated[int, Range(min=2)] = 256
    packing: bool = False
    bucket_lengths: tuple[int, ...] = ()  # pad each batch to the smallest bucket that fits (default: seq_len)
    # sort rows by length within windows of this many global batches, then shuffle the batches of the
    # window (0: off): batches of similar lengths pad to smaller buckets (raw examples: the trainer
    # tokenizes every example once up front to count its tokens, keeping only the counts)
    group_by_length: Annotated[int, Range(min=0)] = 0
    train_on_inputs: bool = False  # BIGRec's option: the loss covers the prompt tokens as well
    shuffle: bool = True
    prefetch: Annotated[int, Range(min=0)] = 2
    # grain worker processes that tokenize examples and build features (0: in this process; each worker
    # holds a copy of the examples' text); the batches, and a checkpoint's position, are the same for any count
    workers: Annotated[int, Range(min=0)] = 0

    def __post_init__(self):
        check_ranges(self)


@dataclasses.dataclass(frozen=True)
class CausalFeatures(grain.transforms.Map):
    """prompt + response + EOS → shifted ``input_ids``/``targets``/``loss_mask`` (length ≤ seq_len)."""

    seq_len: int
    eos_id: int
    bos_id: int | None = None
    train_on_inputs: bool = False

    def keeps_response(self, prompt_len: int) -> bool:
        """Whether a row still scores a response token after a prompt of ``prompt_len`` ids (BOS not counted):
        rows keep their first ``seq_len + 1`` tokens, so a longer prompt leaves nothing to learn."""
        return prompt_len + (self.bos_id is not None) <= self.seq_len

    def keeps_whole(self, prompt_len: int, response_len: int) -> bool:
        """Whether a row holds the whole example: BOS, prompt, response and EOS in ``seq_len + 1`` tokens."""
        return (self.bos_id is not None) + prompt_len + response_len + 1 <= self.seq_len + 1

    def map(self, example: dict) -> dict:
        prompt = ([self.bos_id] if self.bos_id is not None else []) + list(example["prompt_ids"])
        tokens = (prompt + list(example["response_ids"]) + [self.eos_id])[: self.seq_len + 1]
        tokens = np.asarray(tokens, np.int32)
        mask = np.ones(len(tokens) - 1, np.float32)
        if not self.train_on_inputs:
            mask[: max(len(prompt) - 1, 0)] = 0.0  # target i is token i+1: score response tokens only
        return {"input_ids": tokens[:-1], "targets": tokens[1:], "loss_mask": mask}


@dataclasses.dataclass(frozen=True)
class Seq2SeqFeatures(grain.transforms.Map):
    """prompt → encoder ``input_ids``; response + EOS → ``decoder_input_ids``/``targets``/``loss_mask``."""

    seq_len: int
    target_len: int
    eos_id: int
    decoder_start_id: int

    def map(self, example: dict) -> dict:
        src = (list(example["prompt_ids"]) + [self.eos_id])[: self.seq_len]
        tgt = (list(example["response_ids"]) + [self.eos_id])[: self.target_len]
        return {"input_ids": np.asarray(src, np.int32),
                "decoder_input_ids": np.asarray([self.decoder_start_id] + tgt[:-1], np.int32),
                "targets": np.asarray(tgt, np.int32), "loss_mask": np.ones(len(tgt), np.float32)}


DECODER_FEATURES = ("decoder_input_ids", "targets", "loss_mask")


@dataclasses.dataclass(frozen=True)
class PadToBucket:
    """Collate a list of feature dicts into [B, L] arrays, L the smallest bucket ≥ the longest row
    (separately for encoder and decoder features); adds ``attention_mask`` (and
    ``decoder_attention_mask`` for T5)."""

    buckets: tuple[int, ...]
    target_buckets: tuple[int, ...] = ()
    pad_id: int = 0

    @staticmethod
    def _bucket(length: int, buckets: Sequence[int]) -> int:
        return next(b for b in buckets if b >= length)

    def __call__(self, rows: Sequence[dict]) -> dict:
        out = {}
        for key in rows[0]:
            buckets = self.target_buckets if key in DECODER_FEATURES and self.target_buckets else self.buckets
            width = self._bucket(max(len(r[key]) for r in rows), buckets)
            pad = self.pad_id if key.endswith("ids") else 0
            arr = np.full((len(rows), width), pad, rows[0][key].dtype)
            for i, r in enumerate(rows):
                arr[i, : len(r[key])] = r[key]
            out[key] = arr
        lengths = np.asarray([len(r["input_ids"]) for r in rows])
        out["attention_mask"] = (np.arange(out["input_ids"].shape[1])[None] < lengths[:, None]).astype(np.int32)
        if "decoder_input_ids" in out:
            tl = np.asarray([len(r["targets"]) for r in rows])
            out["decoder_attention_mask"] = (np.arange(out["targets"].shape[1])[None] < tl[:, None]).astype(np.int32)
        return out


def _packed_attention(row_batch: dict) -> dict:
    row_batch["attention_mask"] = (row_batch["segment_ids"] > 0).astype(np.int32)
    return row_batch


class HostRows(grain.MapDataset):
    """This process's rows of each global batch: for batch s, global rows
    ``[s*B + p*b, s*B + (p+1)*b)`` (B global, b = B / processes, p = process index). Global batch s is
    then exactly the rows a single process would read, in the same order."""

    def __init__(self, parent: grain.MapDataset, local: int, processes: int, index: int):
        super().__init__(parent)
        self.local, self.processes, self.index = local, processes, index

    def __len__(self) -> int:
        return (len(self._parent) // (self.local * self.processes)) * self.local

    def __getitem__(self, j):
        if isinstance(j, slice):
            return self.slice(j)
        block, row = divmod(j, self.local)
        return self._parent[(block * self.processes + self.index) * self.local + row]

    def __str__(self) -> str:
        return f"HostRows(local={self.local}, processes={self.processes}, index={self.index})"


class LengthGroups(grain.MapDataset):
    """A permutation of ``parent``'s rows (example indices): each window of ``window`` global batches
    (``batch`` rows each) is sorted by ``lengths[index]`` (stable), then its batches are put in a
    seeded random order. Rows past the window's last whole batch keep their sorted place. Pure index
    arithmetic, so the iterator position stays an exact checkpoint."""

    def __init__(self, parent: grain.MapDataset, lengths: np.ndarray, batch: int, window: int, seed: int):
        super().__init__(parent)
        self.lengths, self.batch, self.rows, self.seed = lengths, batch, batch * window, seed
        self._cache: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self._parent)

    def _order(self, w: int) -> np.ndarray:
        """Parent offsets (within window ``w``) of the window's rows, in output order."""
        if self._cache is None or self._cache[0] != w:
            start = w * self.rows
            size = min(self.rows, len(self._parent) - start)
            lengths = self.lengths[np.asarray([self._parent[start + i] for i in range(size)], np.int64)]
            by_length = np.argsort(lengths, kind="stable")
            whole = size // self.batch
            batches = np.random.default_rng([self.seed, w]).permutation(whole)
            head = by_length[:whole * self.batch].reshape(whole, self.batch)[batches].reshape(-1)
            self._cache = (w, np.concatenate([head, by_length[whole * self.batch:]]))
        return self._cache[1]

    def __getitem__(self, j):
        if isinstance(j, slice):
            return self.slice(j)
        w, offset = divmod(j, self.rows)
        return self._parent[w * self.rows + int(self._order(w)[offset])]

    def __str__(self) -> str:
        return f"LengthGroups(batch={self.batch}, rows={self.rows})"


@dataclasses.dataclass(frozen=True)
class Records(grain.transforms.Map):
    """Example index → its token row: ``examples[index]``, or ``encoder([examples[index]])[0]``."""

    examples: Sequence[Any]
    encoder: Encoder | None = None

    def map(self, index: int) -> dict:
        example = self.examples[index]
        return example if self.encoder is None else self.encoder([example])[0]


def token_lengths(encoder: Encoder, examples: Sequence[Any], chunk: int = 1024) -> np.ndarray:
    """int32 [N, 2]: the prompt and response token counts of every example, encoded ``chunk`` at a
    time (token lists are dropped once counted)."""
    out = np.zeros((len(examples), 2), np.int32)
    for start in range(0, len(examples), chunk):
        rows = encoder(examples[start:start + chunk])
        out[start:start + len(rows)] = [(len(r["prompt_ids"]), len(r["response_ids"])) for r in rows]
    return out


def example_lengths(examples: Sequence[dict]) -> np.ndarray:
    """int32 [N]: tokens (prompt + response) of each pre-tokenized example."""
    if not all(isinstance(e, dict) and "prompt_ids" in e for e in examples):
        raise ConfigError("data.group_by_length needs token lengths: pre-tokenized examples (prompt_ids / "
                          "response_ids), or lengths= with an encoder")
    return np.asarray([len(e["prompt_ids"]) + len(e.get("response_ids", ())) for e in examples], np.int32)


def host_batches(examples: Sequence[Any], features: grain.transforms.Map, config: TokenDataConfig, *,
                 global_batch: int, seed: int = 0, pad_id: int = 0, target_len: int | None = None,
                 num_epochs: int | None = None, encoder: Encoder | None = None,
                 lengths: np.ndarray | None = None) -> grain.IterDataset:
    """This process's share of every global batch, as numpy dicts (infinite unless ``num_epochs``).
    ``examples`` are token rows, or raw examples that ``encoder`` turns into rows record by record;
    ``lengths`` (int32 [N], tokens per example) is read by ``group_by_length`` (default: counted from
    pre-tokenized rows)."""
    processes = jax.process_count()
    if global_batch % processes:
        raise ConfigError(f"train.batch_size={global_batch} must be a multiple of the {processes} processes")
    local = global_batch // processes
    if len(examples) < global_batch:
        raise DataError(f"{len(examples)} training examples are fewer than one batch of {global_batch}")
    ds = grain.MapDataset.range(len(examples))
    if config.shuffle:
        ds = ds.shuffle(seed=seed)
    ds = ds.repeat(num_epochs)
    if config.group_by_length < 0:
        raise ConfigError(f"data.group_by_length must be >= 0 (global batches per window; 0: off), "
                          f"got {config.group_by_length}")
    if config.group_by_length:
        lengths = example_lengths(examples) if lengths is None else np.asarray(lengths)
        if lengths.shape != (len(examples),):
            raise DataError(f"lengths of shape {lengths.shape} for {len(examples)} examples")
        ds = LengthGroups(ds, lengths, global_batch, config.group_by_length, seed)
    ds = HostRows(ds, local, processes, jax.process_index()).map(Records(examples, encoder)).map(features)
    if config.packing and isinstance(features, Seq2SeqFeatures):
        raise ConfigError("data.packing is supported for decoder-only models only")
    buckets = tuple(sorted(set(config.bucket_lengths) | {config.seq_len}))
    if not config.packing and (buckets[0] <= 0 or buckets[-1] > config.seq_len):
        raise ConfigError(f"data.bucket_lengths must lie in [1, seq_len={config.seq_len}], got {config.bucket_lengths}")
    collate = PadToBucket(buckets, (target_len,) if target_len else (), pad_id)
    if not config.packing and not config.workers:
        return ds.batch(local, drop_remainder=True, batch_fn=collate).to_iter_dataset()
    rows = ds.to_iter_dataset()
    if config.workers:  # records are encoded in worker processes, batched (packing is stateful) here
        if not flags.FLAGS.is_parsed():  # grain's worker processes read its absl flags: use their defaults
            flags.FLAGS.mark_as_parsed()
        rows = rows.mp_prefetch(grain.MultiprocessingOptions(num_workers=config.workers))
    if config.packing:
        rows = pack(rows, config.seq_len, ("input_ids", "targets", "loss_mask"), local, seed)
        return rows.batch(local, drop_remainder=True).map(_packed_attention)
    return rows.batch(local, drop_remainder=True, batch_fn=collate)


class DeviceIterator:
    """Global, mesh-sharded batches from per-host numpy batches, ``prefetch`` steps ahead.

    ``get_state()`` / ``set_state()`` (JSON bytes, the interface grain's orbax handler expects) refer
    to the next batch *to be returned*, not the next one prefetched, so a restore is exact.
    """

    def __init__(self, dataset: grain.IterDataset, mesh: Mesh, prefetch: int = 2):
        self._iter = iter(dataset)
        self.mesh = mesh
        self.prefetch = max(prefetch, 0)
        self._queue: collections.deque = collections.deque()

    def _to_global(self, host_batch: dict) -> dict:
        return {k: jax.make_array_from_process_local_data(batch_sharding(self.mesh, v.ndim), v)
                for k, v in host_batch.items()}

    def _fill(self) -> None:
        while len(self._queue) <= self.prefetch:
            state = self._iter.get_state()
            try:
                host = next(self._iter)
            except StopIteration:
                return
            self._queue.append((state, self._to_global(host)))

    def __iter__(self) -> Iterator[dict]:
        return self

    def __next__(self) -> dict:
        self._fill()
        if not self._queue:
            raise StopIteration
        return self._queue.popleft()[1]

    def get_state(self) -> bytes:
        state = self._queue[0][0] if self._queue else self._iter.get_state()
        return json.dumps(state).encode()

    def set_state(self, state: bytes) -> None:
        self._queue.clear()
        self._iter.set_state(json.loads(state))

    def start_prefetch(self) -> None:
        """Called by grain's checkpoint handler after a restore; batches are fetched lazily."""


def make_batches(examples: Sequence[Any], features: grain.transforms.Map, config: TokenDataConfig, mesh: Mesh, *,
                 global_batch: int, seed: int = 0, pad_id: int = 0, target_len: int | None = None,
                 num_epochs: int | None = None, encoder: Encoder | None = None,
                 lengths: np.ndarray | None = None) -> DeviceIterator:
    """The full pipeline: checks the batch against the mesh, then :func:`host_batches` on device."""
    check_batch_size(global_batch, mesh)
    ds = host_batches(examples, features, config, global_batch=global_batch, seed=seed, pad_id=pad_id,
                      target_len=target_len, num_epochs=num_epochs, encoder=encoder, lengths=lengths)
    return DeviceIterator(ds, mesh, config.prefetch)


def batch_spec(iterator: DeviceIterator) -> dict[str, Any]:
    """Shapes/dtypes of the next batch (without consuming it)."""
    iterator._fill()
    return {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in iterator._queue[0][1].items()}
