"""RSLLM prompts: item titles each followed by a placeholder token whose input embedding the model
replaces with the item's projected ID embedding (stage 2), or titles only (stage 1).

Alpaca format with input; the response is the next item's plain title (for grounding or
constrained title decoding). ``meta["placeholder_items"]`` lists the item id of every placeholder
in prompt order, so ``prompt.count(ITEM_PLACEHOLDER) == len(meta["placeholder_items"])``.

Also LLaRA's candidate protocol: the prompt lists ``num_candidates`` (20) shuffled candidates, the
target plus seeded negatives the user never interacted with; labelled as sampled in ``meta``.
"""

from __future__ import annotations

from typing import Literal

from jaxrec.data.dataset import Dataset
from jaxrec.data.splits import LeaveOneOut
from jaxrec.data.tasks import item_text
from jaxrec.data.tasks.alpaca import alpaca_prompt
from jaxrec.data.tasks.domains import DomainName, get_domain
from jaxrec.data.tasks.example import Example
from jaxrec.data.tasks.rows import Rows, leave_one_out_rows, sliding_rows
from jaxrec.data.tasks.sampling import exclusion_sets, sample_negatives, task_rng, with_item
from jaxrec.errors import DataError

ITEM_PLACEHOLDER = "<item_emb>"
TASK = "seqrec"
CANDIDATE_TASK = "seqrec_candidates"
INSTRUCTION = "Given the {plural} a user has {verb}, in order, name the {noun} the user will choose next."
CANDIDATE_INSTRUCTION = ("Given the {plural} a user has {verb}, in order, pick from the candidates the {noun} "
                         "the user will choose next. Answer with its title.")
HISTORY_LINE = "History: {items}"
CANDIDATE_LINE = "Candidates: {items}"


class _Writer:
    def __init__(self, ds: Dataset, with_placeholders: bool):
        self.titles = item_text.titles(ds)
        bad = [i for i, t in enumerate(self.titles) if ITEM_PLACEHOLDER in t]
        if bad:
            raise DataError(f"item {bad[0]}'s title contains the placeholder token {ITEM_PLACEHOLDER!r}")
        self.with_placeholders = with_placeholders

    def listing(self, items: list[int]) -> str:
        suffix = f" {ITEM_PLACEHOLDER}" if self.with_placeholders else ""
        return ", ".join(item_text.quoted(self.titles[i]) + suffix for i in items)


def _check(max_history: int) -> None:
    if max_history < 1:
        raise DataError(f"RSLLM max_history must be >= 1, got {max_history}")


def rsllm_examples(ds: Dataset, rows: Rows, domain: DomainName = "movies", max_history: int = 10,
                   with_placeholders: bool = True) -> list[Example]:
    """One next-title example per row; stage 1 uses ``with_placeholders=False``.

    ``meta`` = ``{"history": [ids shown], "placeholder_items": [ids]}`` (the latter empty in stage 1).
    """
    _check(max_history)
    words = get_domain(domain)
    w = _Writer(ds, with_placeholders)
    instruction = INSTRUCTION.format(noun=words.noun, plural=words.plural, verb=words.verb)
    out = []
    for user, history, target in zip(rows.users.tolist(), rows.histories, rows.targets.tolist()):
        shown = history[-max_history:].tolist()
        prompt = alpaca_prompt(instruction, HISTORY_LINE.format(items=w.listing(shown)))
        meta = {"history": shown, "placeholder_items": shown if with_placeholders else []}
        out.append(Example(TASK, prompt, w.titles[target], user, target, meta))
    return out


def rsllm_candidate_examples(ds: Dataset, rows: Rows, domain: DomainName = "movies", max_history: int = 10,
                             num_candidates: int = 20, seed: int = 0,
                             with_placeholders: bool = True) -> list[Example]:
    """LLaRA's protocol: history + ``num_candidates`` shuffled candidates → the target's title.

    Negatives are distinct, never the target and never an item of the user's whole sequence.
    ``meta`` = ``{"history", "candidates", "placeholder_items" (history then candidates), "protocol"}``.
    """
    _check(max_history)
    if num_candidates < 2:
        raise DataError(f"num_candidates must be >= 2, got {num_candidates}")
    words = get_domain(domain)
    w = _Writer(ds, with_placeholders)
    rng = task_rng(seed, "rsllm-candidates")
    instruction = CANDIDATE_INSTRUCTION.format(noun=words.noun, plural=words.plural, verb=words.verb)
    protocol = f"sampled: LLaRA, {num_candidates} candidates incl. the target"
    exclude_of = exclusion_sets(ds.sequence)
    out = []
    for user, history, target in zip(rows.users.tolist(), rows.histories, rows.targets.tolist()):
        shown = history[-max_history:].tolist()
        negatives = sample_negatives(rng, ds.num_items, with_item(exclude_of(user), target), num_candidates - 1)
        candidates = rng.permutation([*negatives.tolist(), target]).tolist()
        text = HISTORY_LINE.format(items=w.listing(shown)) + "\n" + CANDIDATE_LINE.format(items=w.listing(candidates))
        meta = {"history": shown, "candidates": candidates,
                "placeholder_items": shown + candidates if with_placeholders else [], "protocol": protocol}
        out.append(Example(CANDIDATE_TASK, alpaca_prompt(instruction, text), w.titles[target], user, target, meta))
    return out


def rsllm_train_examples(ds: Dataset, split: LeaveOneOut, stage: Literal[1, 2] = 2, domain: DomainName = "movies",
                         max_history: int = 10) -> list[Example]:
    """Every position of every training sequence; stage 1 text only, stage 2 with placeholders."""
    if stage not in (1, 2):
        raise DataError(f"RSLLM stage must be 1 or 2, got {stage!r}")
    return rsllm_examples(ds, sliding_rows(split.train, max_history), domain, max_history, stage == 2)


def rsllm_eval_examples(ds: Dataset, split: LeaveOneOut, part: Literal["valid", "test"] = "test",
                        stage: Literal[1, 2] = 2, domain: DomainName = "movies", max_history: int = 10,
                        candidates: int | None = None, seed: int = 0) -> list[Example]:
    """One prompt per evaluated user: full-catalog (``candidates=None``) or LLaRA's candidate protocol."""
    if stage not in (1, 2):
        raise DataError(f"RSLLM stage must be 1 or 2, got {stage!r}")
    rows = leave_one_out_rows(split, part)
    if candidates is None:
        return rsllm_examples(ds, rows, domain, max_history, stage == 2)
    return rsllm_candidate_examples(ds, rows, domain, max_history, candidates, seed, stage == 2)
