"""Grounding and full-catalog ranking: tiled exact top-k, exact target ranks, BIGRec score fusion,
item embedding tables on disk (tensorstore zarr) and embedding extraction.

Scores are "higher is better" for every metric (see :mod:`jaxrec.ground.scores`); ties go to the
lower item id; ranks are 1-based.
"""

from jaxrec.ground.fusion import (CF_GAMMAS, POPULARITY_GAMMAS, choose_gamma, fused_target_ranks,
                                  fused_topk, minmax)
from jaxrec.ground.item_table import ItemTable, host_rows, multihost_topk, stream_topk, write_item_table
from jaxrec.ground.rank import target_ranks
from jaxrec.ground.scores import METRICS
from jaxrec.ground.topk import topk

__all__ = [
    "CF_GAMMAS", "METRICS", "POPULARITY_GAMMAS", "ItemTable", "choose_gamma", "fused_target_ranks",
    "fused_topk", "host_rows", "minmax", "multihost_topk", "stream_topk", "target_ranks", "topk", "write_item_table",
]
