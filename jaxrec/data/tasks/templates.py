"""Prompt templates: an instruction and a response pattern with ``{field}`` slots.

A template applies to an example only when every field it names has a non-empty value, so items
without a description simply never draw a description template.
"""

from __future__ import annotations

import dataclasses
import functools
import string
from typing import Mapping, Sequence

import numpy as np

from jaxrec.errors import DataError


@dataclasses.dataclass(frozen=True)
class Template:
    """``instruction`` and ``response`` are ``str.format`` patterns over the example's fields."""

    instruction: str
    response: str = "{item}"

    @functools.cached_property
    def fields(self) -> frozenset[str]:
        names = (name for text in (self.instruction, self.response)
                 for _, name, _, _ in string.Formatter().parse(text) if name)
        return frozenset(names)

    def render(self, values: Mapping[str, str]) -> tuple[str, str]:
        """(instruction, response) with the fields filled in."""
        return self.instruction.format(**values), self.response.format(**values)


def usable(templates: Sequence[Template], values: Mapping[str, str]) -> list[int]:
    """Indices of the templates whose every field has a non-empty value."""
    return [k for k, t in enumerate(templates) if all(values.get(f) for f in t.fields)]


def pick(templates: Sequence[Template], values: Mapping[str, str], rng: np.random.Generator) -> int | None:
    """A seeded choice among the usable templates, or None when none applies."""
    ok = usable(templates, values)
    return ok[int(rng.integers(len(ok)))] if ok else None


def check_template_index(templates: Sequence[Template], k: int, what: str) -> Template:
    if not 0 <= k < len(templates):
        raise DataError(f"{what}: template {k} does not exist (there are {len(templates)})")
    return templates[k]
