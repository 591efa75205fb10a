"""Wall time of a recipe's phases, reported in its result (``"seconds": {"index": 1.2, ..., "total": 9.8}``)."""

from __future__ import annotations

import time


class Clock:
    """Wall seconds of consecutive phases: ``lap(name)`` records the time since the previous lap."""

    def __init__(self):
        self.laps: dict[str, float] = {}
        self.start = self.last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self.last, 2)
        self.laps["total"] = round(now - self.start, 2)
        self.last = now
