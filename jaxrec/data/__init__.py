"""Canonical datasets, raw-format readers, processing, splits, prompts and input pipelines."""

from jaxrec.data.dataset import Dataset

__all__ = ["Dataset"]
