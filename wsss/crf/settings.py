"""The dense CRF's settings, one object each: `CRFSettings` for the model every call runs (Gaussian and
bilateral Potts kernels, mean-field iterations: DeepLab's `deeplab.crf`), `SeedCRFSettings` adding the seed
CRF's unary and threshold (the config's `crf` section). Their fields are the config keys."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from wsss.core.errors import ConfigError

__all__ = ["CRFSettings", "SeedCRFSettings"]


@dataclasses.dataclass(frozen=True)
class CRFSettings:
    """Gaussian (position) and bilateral (position + colour) Potts kernels, as DenseCRF2D's
    addPairwiseGaussian / addPairwiseBilateral take them, and the number of mean-field updates."""

    gaussian_sxy: float
    gaussian_compat: float
    bilateral_sxy: float
    bilateral_srgb: float
    bilateral_compat: float
    iterations: int

    @classmethod
    def from_config(cls, section: Mapping, where: str | None = None) -> CRFSettings:
        """The settings of a config section (or keyword dict) holding exactly the fields' names.

        An unknown or missing key raises ConfigError naming it (`where`: the section, for the message)."""
        names = [field.name for field in dataclasses.fields(cls)]
        unknown = sorted(set(section) - set(names))
        missing = [name for name in names if name not in section]
        if unknown or missing:
            problems = [
                f"unknown {', '.join(unknown)}" if unknown else "",
                f"missing {', '.join(missing)}" if missing else "",
            ]
            raise ConfigError(
                f"{where or 'CRF settings'}: {'; '.join(filter(None, problems))} "
                f"({cls.__name__} takes exactly {', '.join(names)})"
            )
        return cls(**{name: section[name] for name in names})

    @classmethod
    def resolve(cls, settings: CRFSettings | None, keywords: Mapping) -> CRFSettings:
        """A call's settings: the object, or else the keyword arguments (`f(x, settings)` or `f(x, **section)`)."""
        if settings is None:
            return cls.from_config(keywords)
        if keywords:
            raise TypeError(f"pass CRF settings as one {cls.__name__} or as keywords, not both ({', '.join(keywords)})")
        if not isinstance(settings, cls):
            raise TypeError(f"expected {cls.__name__}, got {type(settings).__name__}")
        return settings


@dataclasses.dataclass(frozen=True)
class SeedCRFSettings(CRFSettings):
    """The seed CRF (official ICD `_generate_seed`): the unary gives a seed label `confidence` (the other
    classes share the rest), and pixels whose largest marginal is below `min_probability` become 255."""

    confidence: float
    min_probability: float
