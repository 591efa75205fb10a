"""LC-Rec alignment tasks over semantic-id item indices (Alpaca format without input).

Items are written as their index tokens concatenated (``<a_12><b_7><c_3><d_0>``); histories list
indices oldest first, separated by ``", "``. Every task has several templates (our wording), one
drawn per example with the task's seeded generator. Tasks:

* ``seqrec``: history indices → next item's index (every position of every training sequence);
* ``item2index``: title and/or description → index (every item with that text);
* ``index2item``: index → title and/or description;
* ``fusionseqrec``: history indices → next item's title, or history titles → next item's index;
* ``itemsearch``: a search query (+ history) → index. Datasets carry no user queries, so the query
  is derived from the target item's categories and attributes (``itemsearch_query="derive"``), or
  the task is skipped (``"skip"``, or items without such text) with a logged note;
* ``preferenceobtain``: history → the user's preference text, only when ``preferences`` are given;
  otherwise skipped with a logged note.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Literal, Mapping, Sequence

import numpy as np

from jaxrec.data.dataset import Dataset
from jaxrec.data.splits import LeaveOneOut
from jaxrec.data.tasks import item_text
from jaxrec.data.tasks.alpaca import alpaca_prompt
from jaxrec.data.tasks.example import Example, log_skip
from jaxrec.data.tasks.mixing import mix_tasks
from jaxrec.data.tasks.rows import Rows, last_item_rows, leave_one_out_rows, sliding_rows
from jaxrec.data.tasks.sampling import task_rng
from jaxrec.data.tasks.templates import Template, check_template_index, pick
from jaxrec.errors import ConfigError, DataError

TASKS = ("seqrec", "item2index", "index2item", "fusionseqrec", "itemsearch", "preferenceobtain")

SEQREC_TEMPLATES = (
    Template("Here are the items this user interacted with, in order: {history}. "
             "Which item is the user most likely to interact with next?"),
    Template("A user's interaction history, from oldest to newest: {history}. Predict the item they will choose next."),
    Template("Given the chronological item sequence {history}, recommend the next item for this user."),
    Template("The user has engaged with {history} (earliest first). What should be recommended to them now?"),
    Template("Based on the items {history} that a user has interacted with, suggest the one item they will want next."),
)
ITEM2INDEX_TEMPLATES = (
    Template('Which item has the title "{title}"? Answer with its index.'),
    Template('An item is described as follows: "{description}". Give the index of this item.'),
    Template('Give the index of the item titled "{title}", whose description reads: "{description}".'),
    Template("Find the item index for this title: {title}"),
)
INDEX2ITEM_TEMPLATES = (
    Template("What is the title of item {item}?", "{title}"),
    Template("Tell me the name of the item with index {item}.", "{title}"),
    Template("Give the title and the description of item {item}.", "Title: {title}\nDescription: {description}"),
    Template("Write the description of item {item}.", "{description}"),
)
FUSIONSEQREC_TEMPLATES = (
    Template("The user interacted with these items in order: {history}. "
             "What is the title of the item they will pick next?", "{title}"),
    Template("From the interaction sequence {history}, predict the next item and answer with its title.", "{title}"),
    Template("A user's history, listed by title from oldest to newest: {history_titles}. "
             "Which item index comes next?"),
    Template("These titles were chosen by a user, oldest first: {history_titles}. "
             "Recommend the next item by giving its index."),
)
ITEMSEARCH_TEMPLATES = (
    Template("A user whose history is {history} is looking for: {query}. Which item matches best?"),
    Template("Search request: {query}. Return the index of the item that fits this request."),
    Template('Given the user\'s past items {history} and the current request "{query}", recommend one item.'),
)
PREFERENCEOBTAIN_TEMPLATES = (
    Template("A user interacted with {history}, in this order. Summarise what this user likes.", "{preference}"),
    Template("Describe the preferences of a user whose item history is {history}.", "{preference}"),
)
TEMPLATES: dict[str, tuple[Template, ...]] = {
    "seqrec": SEQREC_TEMPLATES,
    "item2index": ITEM2INDEX_TEMPLATES,
    "index2item": INDEX2ITEM_TEMPLATES,
    "fusionseqrec": FUSIONSEQREC_TEMPLATES,
    "itemsearch": ITEMSEARCH_TEMPLATES,
    "preferenceobtain": PREFERENCEOBTAIN_TEMPLATES,
}


@dataclasses.dataclass(frozen=True)
class LCRecTaskConfig:
    """Which alignment tasks to build and how.

    Attributes:
      tasks: task names, a subset of :data:`TASKS`.
      ratios: per task the fraction of its examples kept in the mix (default 1; see ``mix_tasks``).
      max_history: most recent items shown in a history (LC-Rec: 20).
      itemsearch_query: ``"derive"`` queries from item categories/attributes, or ``"skip"`` the task.
      fit_history: a history prompt too long for a training row (``train.data.seq_len``) shows fewer,
        most recent, items instead of being cut at the row's end (which can drop its whole response).
    """

    tasks: tuple[str, ...] = TASKS
    ratios: dict[str, float] = dataclasses.field(default_factory=dict)
    max_history: int = 20
    itemsearch_query: Literal["derive", "skip"] = "derive"
    fit_history: bool = False


class _Text:
    """The text fields of items (index, title, description) for one dataset and index."""

    def __init__(self, ds: Dataset, index: Mapping[int | str, Sequence[str]]):
        self.index = item_text.index_strings(index, ds.num_items)
        self.title = [t if it.get("title") else "" for t, it in zip(item_text.titles(ds), ds.items)]
        self.description = item_text.descriptions(ds)
        self.items = ds.items

    def history(self, items: np.ndarray) -> str:
        return ", ".join(self.index[i] for i in items.tolist())

    def history_titles(self, items: np.ndarray) -> str:
        if not all(self.title[i] for i in items.tolist()):
            return ""
        return ", ".join(item_text.quoted(self.title[i]) for i in items.tolist())

    def item_values(self, item: int) -> dict[str, str]:
        return {"item": self.index[item], "title": self.title[item], "description": self.description[item]}

    def derived_query(self, item: int) -> str:
        """``"<last category> with <attr>, <attr>"`` from the item's own text, or ``""``."""
        it = self.items[item]
        categories = [c for c in it.get("categories") or [] if c]
        attributes = [a for a in it.get("attributes") or [] if a][:3]
        head = categories[-1] if categories else ""
        if head and attributes:
            return f"{head} with {', '.join(attributes)}"
        return head or ", ".join(attributes)


def _render(task: str, templates: Sequence[Template], values: dict[str, str], rng: np.random.Generator,
            user: int, target: int) -> Example | None:
    k = pick(templates, values, rng)
    if k is None:
        return None
    instruction, response = templates[k].render(values)
    return Example(task, alpaca_prompt(instruction), response, user, target, {"template": k})


Fits = Callable[[str, str], bool]  # (prompt, response) -> whether the example fits a training row


def _row_examples(task: str, rows: Rows, text: _Text, max_history: int, rng: np.random.Generator,
                  extra: Callable[[int, int], dict[str, str]] | None = None, fits: Fits | None = None) -> list[Example]:
    """One example per row; with ``fits``, a prompt too long for a training row shows fewer history items
    (the oldest dropped: the most that fit, at least one) instead of losing its end to truncation."""
    out = []
    for user, history, target in zip(rows.users.tolist(), rows.histories, rows.targets.tolist()):
        shown = history[-max_history:]

        def values_for(items: np.ndarray) -> dict[str, str]:
            values = {**text.item_values(target), "history": text.history(items),
                      "history_titles": text.history_titles(items)}
            if extra is not None:
                values.update(extra(user, target))
            return values

        ex = _render(task, TEMPLATES[task], values_for(shown), rng, user, target)
        if ex is None:
            continue
        if fits is not None and len(shown) > 1 and not fits(ex.prompt, ex.response):
            ex = _shortest_history_that_fits(ex, TEMPLATES[task][ex.meta["template"]], shown, values_for, fits)
        out.append(ex)
    return out


def _shortest_history_that_fits(ex: Example, template: Template, shown: np.ndarray,
                                values_for: Callable[[np.ndarray], dict[str, str]], fits: Fits) -> Example:
    """``ex`` re-rendered with the longest suffix of ``shown`` that fits (binary search; 1 item at least)."""
    lo, hi, best = 1, len(shown) - 1, None
    while lo <= hi:
        m = (lo + hi) // 2
        instruction, response = template.render(values_for(shown[-m:]))
        candidate = dataclasses.replace(ex, prompt=alpaca_prompt(instruction), response=response,
                                        meta={**ex.meta, "history_shown": m})
        if fits(candidate.prompt, candidate.response):
            best, lo = candidate, m + 1
        else:
            hi = m - 1
    if best is None:
        instruction, response = template.render(values_for(shown[-1:]))
        best = dataclasses.replace(ex, prompt=alpaca_prompt(instruction), response=response,
                                   meta={**ex.meta, "history_shown": 1})
    return best


def _item_examples(task: str, text: _Text, rng: np.random.Generator) -> list[Example]:
    out = []
    for item in range(len(text.index)):
        ex = _render(task, TEMPLATES[task], text.item_values(item), rng, -1, item)
        if ex is not None:
            out.append(ex)
    return out


def lcrec_task_examples(task: str, ds: Dataset, split: LeaveOneOut, index: Mapping[int | str, Sequence[str]],
                        config: LCRecTaskConfig = LCRecTaskConfig(), seed: int = 0,
                        preferences: Mapping[int, str] | None = None, fits: Fits | None = None) -> list[Example]:
    """The training examples of one task (empty, with a logged note, when its inputs are missing)."""
    return _task_examples(task, ds, split, _Text(ds, index), config, seed, preferences, fits)


def _task_examples(task: str, ds: Dataset, split: LeaveOneOut, text: _Text, config: LCRecTaskConfig,
                   seed: int, preferences: Mapping[int, str] | None, fits: Fits | None = None) -> list[Example]:
    rng = task_rng(seed, f"lcrec-{task}")
    h = config.max_history
    if task in ("seqrec", "fusionseqrec"):
        out = _row_examples(task, sliding_rows(split.train, h), text, h, rng, fits=fits)
    elif task in ("item2index", "index2item"):
        out = _item_examples(task, text, rng)
    elif task == "itemsearch":
        if config.itemsearch_query == "skip":
            log_skip(task, "itemsearch_query='skip'")
            return []
        out = _row_examples(task, last_item_rows(split.train), text, h, rng,
                            lambda user, target: {"query": text.derived_query(target)}, fits)
    elif task == "preferenceobtain":
        if not preferences:
            log_skip(task, f"dataset {ds.name!r} has no user preference text")
            return []
        rows = last_item_rows(split.train)
        out = _row_examples(task, rows, text, h, rng,
                            lambda user, target: {"preference": str(preferences.get(user, "")).strip()}, fits)
    else:
        raise ConfigError(f"unknown LC-Rec task {task!r}; expected one of {list(TASKS)}")
    if not out:
        log_skip(task, f"no example has the text its templates need in dataset {ds.name!r}")
    return out


def lcrec_train_examples(ds: Dataset, split: LeaveOneOut, index: Mapping[int | str, Sequence[str]],
                         config: LCRecTaskConfig = LCRecTaskConfig(), seed: int = 0,
                         preferences: Mapping[int, str] | None = None, fits: Fits | None = None) -> list[Example]:
    """All configured tasks' training examples, scaled by ``config.ratios`` and shuffled together.

    ``preferences`` maps user id → preference text (``preferenceobtain``; skipped without it).
    ``fits``: see :func:`_row_examples` (history tasks keep whole examples within a training row).
    """
    unknown = sorted((set(config.tasks) | set(config.ratios)) - set(TASKS))
    if unknown:
        raise ConfigError(f"unknown LC-Rec tasks {unknown} in tasks/ratios; expected a subset of {list(TASKS)}")
    if config.max_history < 1:
        raise ConfigError(f"LC-Rec max_history must be >= 1, got {config.max_history}")
    text = _Text(ds, index)
    per_task = {t: _task_examples(t, ds, split, text, config, seed, preferences, fits) for t in config.tasks}
    return mix_tasks(per_task, config.ratios, task_rng(seed, "lcrec-mix"))


def lcrec_eval_examples(ds: Dataset, split: LeaveOneOut, index: Mapping[int | str, Sequence[str]],
                        part: Literal["valid", "test"] = "test", template: int = 0,
                        max_history: int = 20) -> list[Example]:
    """seqrec evaluation prompts with one fixed template (one example per evaluated user).

    ``meta`` = ``{"template": k, "history": [item ids shown]}``.
    """
    t = check_template_index(SEQREC_TEMPLATES, template, "LC-Rec seqrec evaluation")
    text = _Text(ds, index)
    rows = leave_one_out_rows(split, part)
    if max_history < 1:
        raise DataError(f"LC-Rec max_history must be >= 1, got {max_history}")
    out = []
    for user, history, target in zip(rows.users.tolist(), rows.histories, rows.targets.tolist()):
        shown = history[-max_history:]
        instruction, response = t.render({"history": text.history(shown), "item": text.index[target]})
        out.append(Example("seqrec", alpaca_prompt(instruction), response, user, target,
                           {"template": template, "history": shown.tolist()}))
    return out


def lcrec_eval_all_templates(ds: Dataset, split: LeaveOneOut, index: Mapping[int | str, Sequence[str]],
                             part: Literal["valid", "test"] = "test", max_history: int = 20) -> list[list[Example]]:
    """Multi-template evaluation: one list of seqrec prompts per template (LC-Rec reports mean/min/max)."""
    return [lcrec_eval_examples(ds, split, index, part, k, max_history) for k in range(len(SEQREC_TEMPLATES))]
