"""Readers for published raw formats; each returns :class:`RawInteractions` for processing.

Every reader module exposes ``read(path, meta=None, **options) -> RawInteractions``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from jaxrec.data.readers.common import RawInteractions, raw_from_dataset
from jaxrec.errors import DataError

FORMATS = ("amazon", "amazon2023", "movielens", "s3rec", "lcrec", "bigrec")


def get_reader(name: str) -> ModuleType:
    """The reader module for a format name."""
    if name not in FORMATS:
        raise DataError(f"unknown data format {name!r}; expected one of {', '.join(FORMATS)}")
    return importlib.import_module(f"jaxrec.data.readers.{name}")


__all__ = ["FORMATS", "RawInteractions", "get_reader", "raw_from_dataset"]
