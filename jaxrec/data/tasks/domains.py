"""Domain wording presets for instruction prompts (what the items are called, what users did)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from jaxrec.errors import DataError

DomainName = Literal["movies", "games", "items"]


@dataclasses.dataclass(frozen=True)
class Domain:
    """``noun``/``plural`` name the items; ``verb`` is the past participle of what users did."""

    noun: str
    plural: str
    verb: str


DOMAINS: dict[str, Domain] = {
    "movies": Domain("movie", "movies", "watched"),
    "games": Domain("game", "games", "played"),
    "items": Domain("item", "items", "interacted with"),
}


def get_domain(name: str) -> Domain:
    """The preset called ``name``; one clear error for an unknown one."""
    if name not in DOMAINS:
        raise DataError(f"prompt domain must be one of {sorted(DOMAINS)}, got {name!r}")
    return DOMAINS[name]
