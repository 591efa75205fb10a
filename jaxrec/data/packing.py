"""Pack several short tokenized examples into fixed-length rows (grain's first-fit packer).

Input elements: dicts of 1-D arrays of equal length (``input_ids``, ``targets``, ``loss_mask``).
Output rows [seq_len] add ``segment_ids`` (1, 2, ... per example, 0 on padding) and ``positions``
(restarting at 0 in each example), so the model keeps examples from attending to each other and
each example sees the same positions as when unpacked.
"""

from __future__ import annotations

from typing import Sequence

import grain
import numpy as np
from grain.experimental import FirstFitPackIterDataset


def pack(ds: grain.IterDataset, seq_len: int, features: Sequence[str], num_bins: int, seed: int) -> grain.IterDataset:
    """First-fit pack ``features`` of ``ds`` into rows of ``seq_len`` tokens (examples never split)."""
    packed = FirstFitPackIterDataset(ds, length_struct={f: seq_len for f in features},
                                     num_packing_bins=num_bins, seed=seed, shuffle_bins=False)
    first = features[0]

    def rename(row: dict) -> dict:
        out = {f: row[f] for f in features}
        out["segment_ids"] = row[f"{first}_segment_ids"].astype(np.int32)
        out["positions"] = row[f"{first}_positions"].astype(np.int32)
        return out

    return packed.map(rename)
