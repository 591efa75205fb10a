"""Method recipes. Each module composes the shared kernels into one published system.

A method module exposes:
  ``Config``                 a dataclass schema (loaded from ``configs/<method>/*.yaml``; field
                             ``method`` names the module),
  ``train(config) -> dict``  trains and returns final metrics,
  ``evaluate(config) -> dict`` evaluates a trained run over the full catalog.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from jaxrec.errors import ConfigError

METHODS = {
    "popularity": "jaxrec.methods.popularity",
    "sasrec": "jaxrec.methods.sasrec",
    "bigrec": "jaxrec.methods.bigrec",
    "lcrec": "jaxrec.methods.lcrec",
    "tiger": "jaxrec.methods.tiger",
    "aligned_t5": "jaxrec.methods.aligned_t5",
    "rsllm": "jaxrec.methods.rsllm",
}


def get_method(name: str) -> ModuleType:
    """Import the method module called ``name`` (a key of :data:`METHODS`)."""
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; expected one of {sorted(METHODS)}")
    try:
        return importlib.import_module(METHODS[name])
    except ModuleNotFoundError as e:
        if e.name is not None and (METHODS[name] == e.name or METHODS[name].startswith(e.name + ".")):
            raise ConfigError(f"method {name!r} is not implemented yet") from None
        raise
