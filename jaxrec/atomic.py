"""Write outputs so that a failure never leaves a half-written file or directory behind.

Every helper writes to a temporary sibling path and renames it into place only on success, and a
directory output never replaces something that is not an output of the same kind (see
:func:`check_output_dir`). A bucket URL (``gs://...``) is written locally and uploaded on success, its
marker files last (:mod:`jaxrec.remote`).
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from jaxrec.errors import JaxrecError
from jaxrec.remote import LAST, file_system, is_remote, upload_when_done

log = logging.getLogger("jaxrec.atomic")


def check_output_dir(path: str | os.PathLike, replaces: Callable[[Path], bool], what: str,
                     overwrite: bool = False) -> None:
    """Refuse (one :class:`JaxrecError`) to replace an existing ``path`` unless it is an empty directory,
    ``replaces(path)`` says it is a ``what`` (an output of the same kind), or ``overwrite``."""
    if is_remote(path):
        _check_bucket_output(str(path), replaces, what, overwrite)
        return
    final = Path(path)
    if overwrite or not (final.exists() or final.is_symlink()):
        return
    if final.is_dir() and not final.is_symlink() and (not any(final.iterdir()) or replaces(final)):
        return
    kind = "a file" if final.is_file() else "a link" if final.is_symlink() else "a directory with other content"
    raise JaxrecError(f"{final} exists and is {kind}, not a {what}; refusing to replace it: choose another output "
                      f"path, or pass --overwrite to replace it")


def _check_bucket_output(url: str, replaces: Callable, what: str, overwrite: bool) -> None:
    """:func:`check_output_dir` for a bucket URL (``replaces`` gets an ``etils.epath.Path``)."""
    from etils import epath

    fs, root = file_system(url)
    if overwrite or not fs.exists(root):
        return
    if not fs.isfile(root) and replaces(epath.Path(url)):
        return
    kind = "an object" if fs.isfile(root) else "a prefix with other content"
    raise JaxrecError(f"{url} exists and is {kind}, not a {what}; refusing to replace it: choose another output "
                      f"path, or pass --overwrite to replace it")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, replaces: Callable[[Path], bool] = lambda p: False, what: str = "output",
               overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``path`` when the block exits without error. An
    existing ``path`` is replaced only as :func:`check_output_dir` allows (checked before and after).
    Temporary siblings left by a killed run on this host are removed first."""
    if is_remote(path):
        check_output_dir(path, replaces, what, overwrite)
        with upload_when_done(str(path)) as tmp:
            yield tmp
            check_output_dir(path, replaces, what, overwrite)
            _clear_bucket_output(str(path), tmp)
        return
    final = Path(path)
    check_output_dir(final, replaces, what, overwrite)
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(final)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_temp_prefix(final)}{HOST}-{os.getpid()}-", dir=final.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes 0700; use the usual directory permissions
    try:
        yield tmp
        check_output_dir(final, replaces, what, overwrite)  # it may have appeared meanwhile
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists() or final.is_symlink():
        backup = final.with_name(f"{_temp_prefix(final)}{HOST}-{os.getpid()}-old")
        final.rename(backup)
        tmp.rename(final)
        _remove(backup)
    else:
        tmp.rename(final)


def _clear_bucket_output(url: str, new: Path) -> None:
    """Before ``new`` is uploaded over an output in a bucket: its markers go first (so a half-done upload
    never looks whole), and the objects ``new`` does not have."""
    fs, root = file_system(url)
    keep = {f.relative_to(new).as_posix() for f in new.rglob("*") if f.is_file()}
    old = fs.find(root, withdirs=False)
    markers = [n for n in old if n.rsplit("/", 1)[-1] in LAST]
    stale = [n for n in old if n not in markers and n[len(root.rstrip("/")) + 1:] not in keep]
    for name in markers + stale:
        fs.rm_file(name)


HOST = socket.gethostname().replace("-", "_")


def _temp_prefix(final: Path) -> str:
    return f".{final.name}.tmp-"


def _remove_leftovers(final: Path) -> None:
    """Delete ``final``'s temporary siblings made on this host by processes that no longer run."""
    prefix = _temp_prefix(final)
    for leftover in final.parent.glob(f"{glob.escape(prefix)}*"):
        host, _, rest = leftover.name[len(prefix):].partition("-")
        pid = rest.partition("-")[0]
        if host != HOST or not pid.isdigit() or pid_alive(int(pid)):
            continue
        if leftover.name.endswith("-old") and not (final.exists() or final.is_symlink()):
            log.warning("restoring %s from %s: a run was killed while replacing it", final, leftover)
            leftover.rename(final)
            continue
        log.info("removing %s, left by a killed run (pid %s)", leftover, pid)
        _remove(leftover)


def _remove(path: Path) -> None:
    """Delete a file, link or directory tree (never following a link)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w", **open_kwargs) -> Iterator:
    """Open a temporary file that replaces ``path`` when the block exits without error (temporary
    siblings left by a killed run on this host are removed first)."""
    if is_remote(path):
        with upload_when_done(str(path), directory=False) as tmp:
            with open(tmp, mode, **open_kwargs) as f:
                yield f
        return
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(final)
    fd, tmp = tempfile.mkstemp(prefix=f"{_temp_prefix(final)}{HOST}-{os.getpid()}-", dir=final.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        with open(tmp, mode, **open_kwargs) as f:
            yield f
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | os.PathLike, obj, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON to ``path`` atomically."""
    with atomic_file(path) as f:
        json.dump(obj, f, indent=indent)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
