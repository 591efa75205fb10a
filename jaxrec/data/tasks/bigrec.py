"""BIGRec prompts: the user's last <= 10 item titles in quotes → the next item's quoted title.

Alpaca format with input (see :mod:`jaxrec.data.tasks.alpaca`); the wording follows a domain preset
(``movies``, ``games`` or generic ``items``). Training uses BIGRec's few-shot setting: a seeded
sample (default 1,024) of the temporal split's training examples.
"""

from __future__ import annotations

from typing import Literal

from jaxrec.data.dataset import Dataset
from jaxrec.data.splits import TemporalSplit
from jaxrec.data.tasks import item_text
from jaxrec.data.tasks.alpaca import alpaca_prompt
from jaxrec.data.tasks.domains import DomainName, get_domain
from jaxrec.data.tasks.example import Example
from jaxrec.data.tasks.rows import Rows, temporal_rows
from jaxrec.data.tasks.sampling import subsample, task_rng
from jaxrec.errors import DataError

TASK = "seqrec"
INSTRUCTION = ("Looking at the {plural} this user has {verb} so far, recommend one new {noun} "
               "the user is likely to enjoy.")
INPUT = "The user has {verb} these {plural}, oldest first: {history}"


def bigrec_examples(ds: Dataset, rows: Rows, domain: DomainName = "movies", max_history: int = 10) -> list[Example]:
    """One example per row; the history is cut to its last ``max_history`` items.

    ``meta["history"]`` lists the item ids shown in the prompt, oldest first.
    """
    words = get_domain(domain)
    if max_history < 1:
        raise DataError(f"BIGRec max_history must be >= 1, got {max_history}")
    titles = item_text.titles(ds)
    instruction = INSTRUCTION.format(noun=words.noun, plural=words.plural, verb=words.verb)
    out = []
    for user, history, target in zip(rows.users.tolist(), rows.histories, rows.targets.tolist()):
        shown = history[-max_history:].tolist()
        listed = ", ".join(item_text.quoted(titles[i]) for i in shown)
        prompt = alpaca_prompt(instruction, INPUT.format(verb=words.verb, plural=words.plural, history=listed))
        out.append(Example(TASK, prompt, item_text.quoted(titles[target]), user, target, {"history": shown}))
    return out


def bigrec_train_examples(ds: Dataset, split: TemporalSplit, domain: DomainName = "movies",
                          sample: int | None = 1024, seed: int = 0, max_history: int = 10) -> list[Example]:
    """A seeded sample of ``sample`` training examples (None or -1: all), in time order."""
    rows = temporal_rows(split.train)
    keep = subsample(task_rng(seed, "bigrec-train"), len(rows), sample)
    return bigrec_examples(ds, rows.take(keep), domain, max_history)


def bigrec_eval_examples(ds: Dataset, split: TemporalSplit, part: Literal["valid", "test"],
                         domain: DomainName = "movies", max_history: int = 10, sample: int | None = None,
                         seed: int = 0) -> list[Example]:
    """The valid or test examples of the temporal split (optionally a seeded sample of them)."""
    if part not in ("valid", "test"):
        raise DataError(f"split part must be 'valid' or 'test', got {part!r}")
    rows = temporal_rows(split.valid if part == "valid" else split.test)
    keep = subsample(task_rng(seed, f"bigrec-{part}"), len(rows), sample)
    return bigrec_examples(ds, rows.take(keep), domain, max_history)
