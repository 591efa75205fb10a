"""Canonical datasets, raw-format readers, processing, splits, prompts and input pipelines."""

from jaxrec.data.dataset import Dataset
from jaxrec.data.splits import LeaveOneOut, TemporalExamples, TemporalSplit, leave_one_out, temporal_split
from jaxrec.data.synthetic import make_preset, make_synthetic

__all__ = ["Dataset", "LeaveOneOut", "TemporalExamples", "TemporalSplit", "leave_one_out", "make_preset",
           "make_synthetic", "temporal_split"]
