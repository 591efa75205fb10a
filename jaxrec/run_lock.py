"""One writer per output: a lock file beside a run directory, dataset or index while a command writes it.

``with output_lock(path, "train"):`` creates ``<parent>/.<name>.lock`` (pid, host, command, start time)
with an exclusive create, so a second ``jaxrec train``/``eval``/``data prepare``/``index build`` on the
same output stops at once with one error naming the holder. A lock whose process is gone (same host,
pid no longer running) is stale and taken over; on another host it cannot be checked, so the error says
which file to delete. In a multi-process run only process 0 takes the lock (the others write nothing
of their own beside the run directory).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Iterator

from jaxrec.atomic import HOST, pid_alive
from jaxrec.errors import JaxrecError
from jaxrec.remote import bucket_shadow, is_remote

log = logging.getLogger("jaxrec.run_lock")


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file of output ``path``: a hidden sibling, so replacing ``path`` atomically keeps it (for a
    bucket URL, a sibling of its local shadow in the cache: it keeps out a second writer on this host only)."""
    path = bucket_shadow(str(path)) if is_remote(path) else Path(path).absolute()
    return path.with_name(f".{path.name}.lock")


@contextlib.contextmanager
def output_lock(path: str | os.PathLike, command: str) -> Iterator[None]:
    """Hold the lock of output ``path`` for ``command`` (e.g. "train") during the block."""
    import jax

    if jax.process_count() > 1 and jax.process_index() != 0:
        yield
        return
    lock = lock_path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    record = {"pid": os.getpid(), "host": HOST, "command": command,
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    for _ in range(2):  # a second try after removing a stale lock
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read(lock)
            if holder is not None and holder.get("host") == HOST and not pid_alive(int(holder.get("pid", 0))):
                log.warning("%s: taking over a stale lock of `jaxrec %s` (pid %s is gone)", lock,
                            holder.get("command"), holder.get("pid"))
                lock.unlink(missing_ok=True)
                continue
            who = (f"`jaxrec {holder.get('command')}` (pid {holder.get('pid')} on host {holder.get('host')}, since "
                   f"{holder.get('started')})" if holder else "another process")
            raise JaxrecError(f"{Path(path)} is in use by {who}; wait for it to finish, or if it is no longer "
                              f"running, delete {lock}") from None
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
        break
    else:
        raise JaxrecError(f"{lock}: could not take the lock (another process keeps re-creating it)")
    try:
        yield
    finally:
        if _read(lock) == record:
            lock.unlink(missing_ok=True)


def _read(lock: Path) -> dict | None:
    try:
        return json.loads(lock.read_text())
    except (OSError, ValueError):
        return None
