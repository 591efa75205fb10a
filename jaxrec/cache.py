"""jaxrec's local cache directory: ``$JAXREC_CACHE`` or ``~/.cache/jaxrec``.

It holds extracted named checkpoints (:mod:`jaxrec.models.checkpoints`), local copies of bucket inputs and
staged bucket outputs (:mod:`jaxrec.remote`) and the XLA compilation cache (:mod:`jaxrec.compile_cache`).
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$JAXREC_CACHE`` or ``~/.cache/jaxrec`` (read at each call, so a test or a process may redirect it)."""
    return Path(os.environ.get("JAXREC_CACHE") or Path.home() / ".cache" / "jaxrec")
