"""Bucket paths (``gs://bucket/key``, and any other fsspec URL such as ``s3://``) wherever jaxrec takes a path.

A URL stays a URL in configs and in what jaxrec records; jaxrec's readers and writers work on local
files, so a bucket is met at the edges:

- **inputs** (a prepared dataset, a pretrained checkpoint, an index file): :func:`local_input` fetches
  the object or prefix once into the cache (``$JAXREC_CACHE/remote/...``) and refetches it when the
  bucket's listing (names, sizes, generations) changes;
- **one-shot outputs** (``data prepare --out``, ``index build --out``, any :func:`jaxrec.atomic.atomic_file`
  or :func:`~jaxrec.atomic.atomic_dir` of a URL): written locally, uploaded only when complete, the
  marker files (a dataset's ``meta.json``, a run's ``run.json``: :data:`LAST`) last, so an output that has
  them is whole;
- **run directories** (``out_dir`` of ``jaxrec train``/``eval``): :func:`staged_output` pulls what the
  bucket holds (skipping orbax checkpoints, which jaxrec reads and writes in the bucket directly),
  runs on the local copy and uploads what changed when the command ends, whether it finished, was
  preempted or failed. Paths of the staging copy inside uploaded JSON/YAML name the URL instead.

Checkpoints (``train.checkpoint.dir``) go to the bucket directly through orbax and tensorstore, so
every host of a pod writes its own shards to the same place.

Google Cloud Storage needs ``gcsfs`` (``pip install "jaxrec[gcs]"``); ``STORAGE_EMULATOR_HOST`` (gcsfs)
and ``TENSORSTORE_GCS_HTTP_URL`` (orbax's tensorstore) point both at an emulator.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator

from jaxrec.errors import JaxrecError

log = logging.getLogger("jaxrec.remote")

LAST = ("meta.json", "run.json", "results.json")  # uploaded after everything else: their presence means "whole"
_TEXT = (".json", ".jsonl", ".yaml", ".yml")
_MANIFEST = ".remote-manifest.json"


def is_remote(path: str | os.PathLike | None) -> bool:
    """Whether ``path`` is a bucket URL (``scheme://...`` other than ``file://``)."""
    text = str(path) if path is not None else ""
    scheme, sep, _ = text.partition("://")
    return bool(sep) and scheme.isidentifier() and scheme != "file"


def file_system(url: str):
    """(fsspec file system, path inside it) of a bucket URL, with fresh listings; one clear error when its driver
    is missing."""
    import fsspec

    if os.environ.get("STORAGE_EMULATOR_HOST"):  # an emulator has no control plane for gcsfs's bucket-layout probe
        os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    try:
        fs, path = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as e:
        extra = ' (pip install "jaxrec[gcs]")' if url.startswith("gs://") else ""
        raise JaxrecError(f"{url}: no file system for this URL{extra}: {e}") from None
    fs.invalidate_cache()  # fsspec caches listings per instance, and other processes write the bucket too
    return fs, path


def bucket_shadow(url: str, kind: str = "staging") -> Path:
    """The local directory that stands for ``url`` in the cache (``kind``: "staging" or "remote")."""
    from jaxrec.cache import cache_dir

    scheme, _, rest = url.partition("://")
    digest = hashlib.sha1(url.rstrip("/").encode()).hexdigest()[:10]
    return cache_dir() / kind / scheme / f"{rest.strip('/').replace('/', '__')}-{digest}"


def _listing(fs, root: str) -> dict[str, list]:
    """{relative name: [size, version]} of every object under ``root`` (or of ``root`` itself, as "")."""
    def version(info):
        return str(info.get("generation") or info.get("md5Hash") or info.get("ETag") or info.get("mtime")
                   or info.get("updated") or "")

    if fs.isfile(root):
        info = fs.info(root)
        return {"": [int(info.get("size") or 0), version(info)]}
    found = fs.find(root, detail=True, withdirs=False)
    prefix = root.rstrip("/") + "/"
    return {name[len(prefix):]: [int(info.get("size") or 0), version(info)] for name, info in found.items()
            if name.startswith(prefix) and not name.endswith("/")}


def local_input(path: str | os.PathLike) -> Path:
    """A local path to read ``path`` from: itself, or the cached copy of a bucket object or prefix."""
    if not is_remote(path):
        return Path(path)
    from jaxrec.atomic import atomic_dir

    url = str(path).rstrip("/")
    fs, root = file_system(url)
    try:
        listing = _listing(fs, root)
    except OSError as e:
        raise JaxrecError(f"{url}: cannot list it: {e}") from None
    if not listing:
        raise JaxrecError(f"{url}: no such object or prefix in the bucket")
    cached = bucket_shadow(url, "remote")
    name = url.rsplit("/", 1)[-1]
    target = cached / name if "" in listing else cached
    manifest = cached.with_name(cached.name + _MANIFEST)
    if manifest.is_file() and json.loads(manifest.read_text()) == listing and target.exists():
        return target
    log.info("fetching %s into %s", url, cached)
    try:
        with atomic_dir(cached, lambda p: True, overwrite=True) as tmp:  # the cache is ours
            for rel in listing:
                local = tmp / name if rel == "" else tmp / rel
                local.parent.mkdir(parents=True, exist_ok=True)
                fs.get_file(root if rel == "" else f"{root}/{rel}", str(local))
    except OSError as e:
        raise JaxrecError(f"{url}: cannot fetch it: {e}") from None
    manifest.write_text(json.dumps(listing))
    return target


def _ordered(files: list[Path], root: Path) -> list[Path]:
    """Marker files (:data:`LAST`) after everything else, deepest first among them."""
    def key(f: Path):
        last = f.name in LAST
        return (last, -len(f.relative_to(root).parts) if last else 0, str(f))

    return sorted(files, key=key)


def _upload_file(fs, local: Path, remote: str, staging: Path | None, url: str | None) -> None:
    if staging is not None and local.suffix in _TEXT:
        text = local.read_text(encoding="utf-8", errors="surrogateescape")
        if str(staging) in text:
            with fs.open(remote, "wb") as f:
                f.write(text.replace(str(staging), url).encode("utf-8", errors="surrogateescape"))
            return
    fs.put_file(str(local), remote)


def upload_tree(local: Path, url: str, *, staging: Path | None = None) -> None:
    """Upload the file or directory ``local`` to ``url`` (markers last; see :data:`LAST`)."""
    fs, root = file_system(url)
    try:
        if local.is_file():
            _upload_file(fs, local, root, staging, url)
            return
        files = [f for f in local.rglob("*") if f.is_file() and not f.is_symlink()]
        for f in _ordered(files, local):
            _upload_file(fs, f, f"{root}/{f.relative_to(local).as_posix()}", staging, url)
    except OSError as e:
        raise JaxrecError(f"{url}: upload failed: {e}") from None


@contextlib.contextmanager
def upload_when_done(url: str, suffix: str = "", directory: bool = True) -> Iterator[Path]:
    """A local temporary file or directory that is uploaded to ``url`` when the block succeeds."""
    with tempfile.TemporaryDirectory(prefix="jaxrec-upload-") as tmp:
        local = Path(tmp) / (url.rstrip("/").rsplit("/", 1)[-1] + suffix)
        if directory:
            local.mkdir()
        yield local
        upload_tree(local, url)


class StagedOutput:
    """The local copy of a run directory in a bucket; see the module docstring."""

    def __init__(self, url: str):
        import jax

        self.url = url.rstrip("/")
        self.local = bucket_shadow(self.url)
        if jax.process_count() > 1:  # processes of one run on one host (a simulated pod) keep separate copies
            self.local = self.local.with_name(f"{self.local.name}.p{jax.process_index()}")
        self.fs, self.root = file_system(self.url)
        self._sent: dict[str, tuple[int, int]] = {}  # relative name -> (size, mtime_ns) as uploaded or pulled
        self._unpushed = self.local.with_name(f".{self.local.name}.unpushed")  # from pull until a complete push
        self._uploads = jax.process_index() == 0  # only process 0 uploads (see staged_output)

    def pull(self) -> None:
        """Replace the local copy with what the bucket holds (orbax checkpoint steps left out). A copy whose
        upload never completed (a failed upload, a killed command) is moved aside, not deleted."""
        if self.local.exists():
            if self._unpushed.exists():
                aside = self.local.with_name(f"{self.local.name}.not-uploaded-{time.strftime('%Y%m%d-%H%M%S')}")
                self.local.rename(aside)
                log.warning("%s: the last command's upload did not complete; its local copy is kept in %s",
                            self.url, aside)
            else:
                shutil.rmtree(self.local)
        self.local.mkdir(parents=True)
        if self._uploads:
            self._unpushed.touch()
        listing = _listing(self.fs, self.root) if self.fs.exists(self.root) else {}
        steps = {rel.rsplit("/", 1)[0] for rel in listing if rel.endswith("_CHECKPOINT_METADATA")}
        for rel in listing:
            if any(rel == s or rel.startswith(s + "/") for s in steps):
                continue
            local = self.local / rel
            local.parent.mkdir(parents=True, exist_ok=True)
            self.fs.get_file(f"{self.root}/{rel}", str(local))
            self._sent[rel] = self._stamp(local)

    @staticmethod
    def _stamp(path: Path) -> tuple[int, int]:
        st = path.stat()
        return st.st_size, st.st_mtime_ns

    def push(self) -> None:
        """Upload new and changed files (markers last); delete from the bucket what jaxrec deleted locally."""
        files = {f.relative_to(self.local).as_posix(): f for f in self.local.rglob("*")
                 if f.is_file() and not f.is_symlink() and not f.name.endswith(".lock")}
        changed = [f for rel, f in files.items() if self._sent.get(rel) != self._stamp(f)]
        try:
            for f in _ordered(changed, self.local):
                rel = f.relative_to(self.local).as_posix()
                _upload_file(self.fs, f, f"{self.root}/{rel}", self.local, self.url)
                self._sent[rel] = self._stamp(f)
            for rel in [r for r in self._sent if r not in files]:
                self.fs.rm_file(f"{self.root}/{rel}")
                del self._sent[rel]
        except OSError as e:
            raise JaxrecError(f"{self.url}: upload of the run directory failed: {e}; the local copy {self.local} "
                              f"is kept") from None
        self._unpushed.unlink(missing_ok=True)


@contextlib.contextmanager
def staged_output(out_dir: str, command: str) -> Iterator[tuple[str, StagedOutput | None]]:
    """Hold ``out_dir``'s lock for ``command`` (:func:`jaxrec.run_lock.output_lock`) and yield (the directory
    the command writes to, its :class:`StagedOutput` or None): ``out_dir`` itself, or for a bucket URL its
    local copy, uploaded when the block ends (also on failure or preemption). The lock of a bucket run is
    its local copy's: it keeps out a second command on this host, not on another one."""

    from jaxrec.run_lock import output_lock

    with output_lock(out_dir, command):
        if not is_remote(out_dir):
            yield out_dir, None
            return
        staged = StagedOutput(out_dir)
        staged.pull()
        try:
            yield str(staged.local), staged
        finally:
            if staged._uploads:
                staged.push()
