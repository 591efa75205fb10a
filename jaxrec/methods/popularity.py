"""Popularity baseline: rank every item by its interaction count in the training portion.

Convention (issue 2 contract): counts come from each user's sequence without its last two items
(:attr:`LeaveOneOut.train`); the target is the leave-one-out valid or test item; all items of the
catalog are ranked (history items are not removed); ties go to the lower item id, which for datasets
remapped in order of first appearance is the item seen first. This is exactly the canonical tie rule
of :mod:`jaxrec.eval.metrics` applied to the scores ``counts``. ``eval.exclude_history`` (default off)
removes each user's history items from the ranking instead, as S3-Rec's protocol does; the result's
``protocol`` says which.
"""

from __future__ import annotations

import dataclasses
from typing import Literal


from jaxrec.data.source import DataConfig, SyntheticData, load_dataset
from jaxrec.data.splits import LeaveOneOut, leave_one_out
from jaxrec.eval import evaluators
from jaxrec.eval.metrics import DEFAULT_KS
from jaxrec.eval.ranking import item_counts


@dataclasses.dataclass
class EvalConfig:
    split: Literal["valid", "test"] = "test"
    ks: list[int] = dataclasses.field(default_factory=lambda: list(DEFAULT_KS))
    exclude_history: bool = False  # rank without the user's history items (S3-Rec's protocol)


@dataclasses.dataclass
class Config:
    method: str = "popularity"
    data: DataConfig = dataclasses.field(default_factory=lambda: DataConfig(synthetic=SyntheticData()))
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)


def evaluate_split(split: LeaveOneOut, num_items: int, which: str = "test", ks=DEFAULT_KS,
                   exclude_history: bool = False) -> dict:
    """Full-catalog HR/NDCG@K and MRR of popularity on the ``valid`` or ``test`` targets."""
    targets = split.test_target if which == "test" else split.valid_target
    histories = (split.test_history if which == "test" else split.valid_history) if exclude_history else None
    return evaluators.popularity(item_counts(split.train, num_items), targets, ks, histories)


def evaluate(config: Config) -> dict:
    e = config.eval
    ds = load_dataset(config.data)
    out = evaluate_split(leave_one_out(ds), ds.num_items, e.split, e.ks, e.exclude_history)
    return {"method": "popularity", "split": e.split, **out,
            "protocol": evaluators.protocol("scores", ds.num_items, exclude_history=e.exclude_history)}


def train(config: Config) -> dict:
    """Popularity has nothing to fit beyond the counts, which evaluation computes: same as evaluate."""
    return evaluate(config)
