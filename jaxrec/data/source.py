"""The ``data:`` config section of every recipe: a prepared dataset dir or synthetic data."""

from __future__ import annotations

import dataclasses

from jaxrec.data.dataset import Dataset


@dataclasses.dataclass
class SyntheticData:
    """Generate the embedded synthetic dataset on the fly (deterministic by ``seed``).

    ``preset`` names a size in :data:`jaxrec.data.synthetic.PRESETS` (``tiny``, ``demo``);
    ``num_users``/``num_items`` override it when set.
    """

    preset: str = "demo"
    seed: int = 0
    num_users: int | None = None
    num_items: int | None = None


@dataclasses.dataclass
class DataConfig:
    """Exactly one of ``path`` (a dir written by ``jaxrec data prepare``) or ``synthetic``."""

    path: str | None = None
    synthetic: SyntheticData | None = None

    def __post_init__(self):
        if (self.path is None) == (self.synthetic is None):
            raise ValueError("data: set exactly one of 'path' (a prepared dataset dir) or 'synthetic'")

    def describe(self) -> str:
        if self.path is not None:
            return self.path
        s = self.synthetic
        sizes = "".join(f", {k}={getattr(s, k)}" for k in ("num_users", "num_items") if getattr(s, k) is not None)
        return f"synthetic({s.preset}, seed={s.seed}{sizes})"


def load_dataset(cfg: DataConfig) -> Dataset:
    """Read the prepared directory, or generate the synthetic dataset."""
    if cfg.path is not None:
        return Dataset.load(cfg.path)
    from jaxrec.data.synthetic import PRESETS, make_synthetic
    from jaxrec.errors import ConfigError

    s = cfg.synthetic
    if s.preset not in PRESETS:
        raise ConfigError(f"data.synthetic.preset: unknown preset {s.preset!r}; expected one of {sorted(PRESETS)}")
    sizes = {k: getattr(s, k) for k in ("num_users", "num_items") if getattr(s, k) is not None}
    return make_synthetic(seed=s.seed, **{**PRESETS[s.preset], **sizes})
