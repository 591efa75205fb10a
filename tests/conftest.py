"""Shared test setup: 8 fake CPU devices (sharding tests) and shared fixtures."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("JAXREC_COMPILATION_CACHE", "off")  # hermetic: nothing written under ~/.cache

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (benchmark data); tests using it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def gcs(tmp_path_factory):
    """A local GCS emulator (see gcs_emulator.py); gcsfs and orbax in this process and its children use it."""
    import logging

    from gcs_emulator import Emulator

    emulator = Emulator(tmp_path_factory.mktemp("jaxrec-cache"))
    saved = {k: os.environ.get(k) for k in emulator.env}
    os.environ.update(emulator.env)
    logging.getLogger("gcsfs").setLevel(logging.ERROR)  # "no default credentials": the emulator needs none
    yield emulator
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    emulator.stop()
