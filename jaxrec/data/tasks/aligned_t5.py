"""Aligned FLAN-T5 tasks (Cao et al., 2024): recommendation tasks plus natural-language auxiliary
tasks that carry recommender knowledge. Prompts are T5 encoder inputs (no instruction header).

Items are written as ``key: title``, lists joined by ``"; "``; the key is the item's id text
(seeded random integers or semantic ids, see :func:`jaxrec.data.tasks.item_text.item_keys`) and is
what retrieval, ranking and BPR answer with. Tasks (each switchable):

* ``retrieval``: history → next item's key (every position of every training sequence);
* ``ranking``: history + shuffled candidates (1 positive + negatives) → the positive's key;
  evaluation uses 1 + 99 seeded negatives, a sampled protocol labelled in ``meta``;
* ``rating``: rated history + an item → its 1-5 rating (needs ratings; skipped otherwise);
* ``mim`` (masked item modelling): a window of a user's sequence with items replaced by sentinels
  → the masked items' keys after their sentinels;
* ``bpr``: history + two items in random order (the next interacted item and a sampled negative)
  → the interacted item's key;
* ``mlm``: T5 span corruption over an item's title and description, prefixed by its key.

Negatives are never the positive nor any item of the user's training sequence (training) or of
the user's whole sequence (evaluation).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Literal, Mapping, Sequence

import numpy as np

from jaxrec.data.dataset import Dataset
from jaxrec.data.splits import LeaveOneOut
from jaxrec.data.tasks import item_text
from jaxrec.data.tasks.example import Example, log_skip
from jaxrec.data.tasks.mixing import mix_tasks
from jaxrec.data.tasks.rows import Rows, leave_one_out_rows, sliding_rows
from jaxrec.data.tasks.sampling import exclusion_sets, sample_negatives, task_rng, with_item
from jaxrec.data.tasks.span_corruption import corrupt_spans, sentinel
from jaxrec.data.tasks.templates import Template, pick
from jaxrec.errors import ConfigError, DataError

TASKS = ("retrieval", "ranking", "rating", "mim", "bpr", "mlm")
EVAL_TASKS = ("retrieval", "ranking", "rating")

TEMPLATES: dict[str, tuple[Template, ...]] = {
    "retrieval": (
        Template("A user interacted with these items, oldest first: {history}. "
                 "Which item will the user interact with next?"),
        Template("Items a user engaged with, in order: {history}. Recommend the item they are most likely to "
                 "engage with next."),
    ),
    "ranking": (
        Template("A user interacted with these items, oldest first: {history}. "
                 "Which of these candidates will the user like most? Candidates: {candidates}."),
        Template("Given a user's item history {history}, pick the item the user prefers among: {candidates}."),
    ),
    "rating": (
        Template("A user gave these ratings (1 to 5 stars): {history}. "
                 "How many stars will the user give {item_full}? Answer with a number from 1 to 5.", "{rating}"),
        Template("Rating history of a user: {history}. Predict the user's rating (1-5) of {item_full}.", "{rating}"),
    ),
    "mim": (Template("Recover the masked items in this user's history: {sequence}", "{masked}"),),
    "bpr": (
        Template("A user interacted with these items, oldest first: {history}. "
                 "Which item would the user prefer: {first} or {second}?"),
    ),
    "mlm": (Template("Fill in the masked words of the text about item {item}: {text}", "{masked}"),),
}


@dataclasses.dataclass(frozen=True)
class AlignedT5TaskConfig:
    """Which tasks to build and how.

    Attributes:
      tasks: task names, a subset of :data:`TASKS` (drop auxiliary tasks for ablations).
      ratios: per task the fraction of its examples kept in the mix (default 1; see ``mix_tasks``).
      id_mode: item keys as seeded ``random`` integers or ``semantic`` ids from an index.
      max_history: most recent items shown in a history; also the MIM window length.
      train_negatives: ranking negatives per training example.
      eval_negatives: ranking negatives per evaluation example (sampled protocol, 99).
      mim_mask_prob: probability that an item of a MIM window is masked (>= 1 and < all are).
      mlm_noise_density / mlm_mean_span: T5 span-corruption parameters.
      mlm_max_words: item text is cut to this many words before corruption.
    """

    tasks: tuple[str, ...] = TASKS
    ratios: dict[str, float] = dataclasses.field(default_factory=dict)
    id_mode: Literal["random", "semantic"] = "random"
    max_history: int = 20
    train_negatives: int = 4
    eval_negatives: int = 99
    mim_mask_prob: float = 0.2
    mlm_noise_density: float = 0.15
    mlm_mean_span: float = 3.0
    mlm_max_words: int = 128


def aligned_t5_item_keys(ds: Dataset, config: AlignedT5TaskConfig,
                         index: Mapping[int | str, Sequence[str]] | None = None, seed: int = 0) -> list[str]:
    """Per item its key text; save it with the run: training and evaluation must share it."""
    return item_text.item_keys(ds, config.id_mode, index, seed)


class _Writer:
    """Renders items and histories of one dataset with one set of keys."""

    def __init__(self, ds: Dataset, keys: Sequence[str]):
        if len(keys) != ds.num_items:
            raise DataError(f"item keys: expected one per item ({ds.num_items}), got {len(keys)}")
        self.ds = ds
        self.keys = list(keys)
        self.titles = item_text.titles(ds)
        self.descriptions = item_text.descriptions(ds)
        self._full = [f"{k}: {t}" for k, t in zip(self.keys, self.titles)]

    def full(self, item: int) -> str:
        """``key: title``."""
        return self._full[item]

    def listing(self, items: Sequence[int]) -> str:
        return "; ".join([self._full[i] for i in items])


def _format_rating(r: float) -> str:
    return str(int(r)) if float(r).is_integer() else f"{r:.1f}"


def _check(config: AlignedT5TaskConfig) -> None:
    unknown = sorted((set(config.tasks) | set(config.ratios)) - set(TASKS))
    if unknown:
        raise ConfigError(f"unknown aligned-T5 tasks {unknown} in tasks/ratios; expected a subset of {list(TASKS)}")
    if config.max_history < 1 or config.train_negatives < 1 or config.eval_negatives < 1:
        raise ConfigError("aligned-T5 max_history, train_negatives and eval_negatives must be >= 1")
    if not 0.0 <= config.mim_mask_prob <= 1.0:
        raise ConfigError(f"mim_mask_prob must lie in [0, 1], got {config.mim_mask_prob}")


def _render(task: str, values: dict[str, str], rng: np.random.Generator, user: int, target: int,
            meta: dict, template: int | None = None) -> Example:
    k = pick(TEMPLATES[task], values, rng) if template is None else template
    prompt, response = TEMPLATES[task][k].render(values)
    return Example(task, prompt, response, user, target, {"template": k, **meta})


def _retrieval(w: _Writer, rows: Rows, h: int, rng, template: int | None) -> list[Example]:
    out = []
    for user, history, target in zip(rows.users.tolist(), rows.histories, rows.targets.tolist()):
        shown = history[-h:].tolist()
        out.append(_render("retrieval", {"history": w.listing(shown), "item": w.keys[target]}, rng, user, target,
                           {"history": shown}, template))
    return out


def _ranking(w: _Writer, rows: Rows, h: int, negatives: int, exclude_of: Callable[[int], frozenset[int]], rng,
             template: int | None, protocol: str | None) -> list[Example]:
    out = []
    for user, history, target in zip(rows.users.tolist(), rows.histories, rows.targets.tolist()):
        shown = history[-h:].tolist()
        negs = sample_negatives(rng, w.ds.num_items, with_item(exclude_of(user), target), negatives)
        candidates = rng.permutation([*negs.tolist(), target]).tolist()
        meta = {"history": shown, "candidates": candidates}
        if protocol:
            meta["protocol"] = protocol
        values = {"history": w.listing(shown), "candidates": w.listing(candidates), "item": w.keys[target]}
        out.append(_render("ranking", values, rng, user, target, meta, template))
    return out


def _rating_example(w: _Writer, user: int, history: np.ndarray, ratings: np.ndarray, target: int, rating: float,
                    rng, template: int | None) -> Example:
    listed = "; ".join(f"{w.full(i)} ({_format_rating(r)} star{'' if r == 1 else 's'})"
                       for i, r in zip(history.tolist(), ratings.tolist()))
    values = {"history": listed, "item_full": w.full(target), "rating": _format_rating(rating)}
    return _render("rating", values, rng, user, target, {"history": history.tolist(), "rating": float(rating)},
                   template)


def _rating_train(w: _Writer, split: LeaveOneOut, h: int, rng) -> list[Example]:
    out = []
    for user, seq in enumerate(split.train):
        ratings = w.ds.user_ratings(user)
        for i in range(1, len(seq)):
            lo = max(0, i - h)
            out.append(_rating_example(w, user, seq[lo:i], ratings[lo:i], int(seq[i]), float(ratings[i]), rng, None))
    return out


def _mim(w: _Writer, split: LeaveOneOut, h: int, mask_prob: float, rng) -> list[Example]:
    out = []
    for user, seq in enumerate(split.train):
        for end in range(len(seq), 1, -h):  # windows of h items from the most recent backwards
            window = seq[max(0, end - h):end].tolist()
            if len(window) < 2:
                break
            masked = rng.random(len(window)) < mask_prob
            if not masked.any():
                masked[rng.integers(len(window))] = True
            if masked.all():
                masked[rng.integers(len(window))] = False
            parts, answers, k = [], [], 0
            for item, m in zip(window, masked.tolist()):
                if m:
                    parts.append(sentinel(k))
                    answers.append(f"{sentinel(k)} {w.keys[item]}")
                    k += 1
                else:
                    parts.append(w.full(item))
            values = {"sequence": "; ".join(parts), "masked": " ".join(answers)}
            out.append(_render("mim", values, rng, user, -1,
                               {"items": window, "masked_items": [i for i, m in zip(window, masked) if m]}))
    return out


def _bpr(w: _Writer, split: LeaveOneOut, rows: Rows, h: int, rng) -> list[Example]:
    exclude_of = exclusion_sets(lambda u: split.train[u])
    out = []
    for user, history, target in zip(rows.users.tolist(), rows.histories, rows.targets.tolist()):
        shown = history[-h:].tolist()
        negative = int(sample_negatives(rng, w.ds.num_items, exclude_of(user), 1)[0])
        first, second = (target, negative) if rng.random() < 0.5 else (negative, target)
        values = {"history": w.listing(shown), "first": w.full(first), "second": w.full(second),
                  "item": w.keys[target]}
        out.append(_render("bpr", values, rng, user, target,
                           {"history": shown, "positive": target, "negative": negative}))
    return out


def _mlm(w: _Writer, config: AlignedT5TaskConfig, rng) -> list[Example]:
    out = []
    for item in range(w.ds.num_items):
        text = w.titles[item] + (f". {w.descriptions[item]}" if w.descriptions[item] else "")
        words = text.split()[:config.mlm_max_words]
        if len(words) < 2:
            continue
        corrupted, masked = corrupt_spans(words, rng, config.mlm_noise_density, config.mlm_mean_span)
        out.append(_render("mlm", {"item": w.keys[item], "text": corrupted, "masked": masked}, rng, -1, item, {}))
    return out


def aligned_t5_task_examples(task: str, ds: Dataset, split: LeaveOneOut, keys: Sequence[str],
                             config: AlignedT5TaskConfig = AlignedT5TaskConfig(), seed: int = 0) -> list[Example]:
    """Training examples of one task (empty, with a logged note, when its inputs are missing)."""
    _check(config)
    return _task_examples(task, _Writer(ds, keys), split, config, seed)


def _task_examples(task: str, w: _Writer, split: LeaveOneOut, config: AlignedT5TaskConfig,
                   seed: int) -> list[Example]:
    rng = task_rng(seed, f"aligned_t5-{task}")
    h = config.max_history
    if task == "retrieval":
        return _retrieval(w, sliding_rows(split.train, h), h, rng, None)
    if task == "ranking":
        return _ranking(w, sliding_rows(split.train, h), h, config.train_negatives,
                        exclusion_sets(lambda u: split.train[u]), rng, None, None)
    if task == "rating":
        if w.ds.ratings is None:
            log_skip(task, f"dataset {w.ds.name!r} has no ratings")
            return []
        return _rating_train(w, split, h, rng)
    if task == "mim":
        return _mim(w, split, h, config.mim_mask_prob, rng)
    if task == "bpr":
        return _bpr(w, split, sliding_rows(split.train, h), h, rng)
    if task == "mlm":
        return _mlm(w, config, rng)
    raise ConfigError(f"unknown aligned-T5 task {task!r}; expected one of {list(TASKS)}")


def aligned_t5_train_examples(ds: Dataset, split: LeaveOneOut, keys: Sequence[str],
                              config: AlignedT5TaskConfig = AlignedT5TaskConfig(), seed: int = 0) -> list[Example]:
    """All configured tasks' training examples, scaled by ``config.ratios`` and shuffled together."""
    _check(config)
    w = _Writer(ds, keys)
    per_task = {t: _task_examples(t, w, split, config, seed) for t in config.tasks}
    return mix_tasks(per_task, config.ratios, task_rng(seed, "aligned_t5-mix"))


def aligned_t5_eval_examples(task: Literal["retrieval", "ranking", "rating"], ds: Dataset, split: LeaveOneOut,
                             keys: Sequence[str], part: Literal["valid", "test"] = "test",
                             config: AlignedT5TaskConfig = AlignedT5TaskConfig(), seed: int = 0) -> list[Example]:
    """Evaluation prompts (template 0), one per evaluated user.

    ``ranking``: ``meta["candidates"]`` holds 1 + ``eval_negatives`` shuffled ids and
    ``meta["protocol"]`` labels the sampled protocol. ``rating``: ``meta["rating"]`` is the truth.
    """
    _check(config)
    w = _Writer(ds, keys)
    rows = leave_one_out_rows(split, part)
    rng = task_rng(seed, f"aligned_t5-eval-{task}-{part}")
    h = config.max_history
    if task == "retrieval":
        return _retrieval(w, rows, h, rng, 0)
    if task == "ranking":
        protocol = f"sampled: 1 positive + {config.eval_negatives} negatives not interacted by the user"
        return _ranking(w, rows, h, config.eval_negatives, exclusion_sets(ds.sequence), rng, 0, protocol)
    if task == "rating":
        if ds.ratings is None:
            raise DataError(f"dataset {ds.name!r} has no ratings; rating evaluation needs them")
        offset = 2 if part == "valid" else 1
        out = []
        for user, history, target in zip(rows.users.tolist(), rows.histories, rows.targets.tolist()):
            ratings = ds.user_ratings(user)
            n = len(ratings) - offset  # position of the target in the user's sequence
            shown = history[-h:]
            out.append(_rating_example(w, user, shown, ratings[n - len(shown):n], target, float(ratings[n]), rng, 0))
        return out
    raise DataError(f"aligned-T5 evaluation task must be one of {list(EVAL_TASKS)}, got {task!r}")
