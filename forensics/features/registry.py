"""One factory over the feature families: ``create_features("fft+npr", n_bins=32)``.

A family is a batched function ``images -> float32 (N, D)``; a name joins families with "+"
and their features are concatenated in that order. Parameters are shared by name: each
family takes those of its keyword arguments that are given and keeps its defaults for the
rest; a parameter that no family of the name accepts is an error.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from forensics.features.dct import dct_spectra
from forensics.features.residual import npr_spectra, residual_spectra
from forensics.features.selfdescription import self_description_size, self_descriptions
from forensics.features.spectrum import (
    CHANNELS,
    azimuthal_spectra,
    check_channels,
    check_positive_int,
)

__all__ = ["FeatureFamily", "FeatureExtractor", "FEATURE_FAMILIES", "create_features",
           "list_features", "feature_parameters"]


@dataclass(frozen=True)
class FeatureFamily:
    """A batched feature function, its feature count for given parameters, and a summary."""

    extract: Callable[..., np.ndarray]
    size: Callable[[dict[str, Any]], int]
    summary: str

    @cached_property
    def defaults(self) -> dict[str, Any]:
        """The keyword parameters of ``extract`` and their defaults (read once: every
        ``predict_proba`` call builds its extractor from them)."""
        signature = inspect.signature(self.extract)
        return {n: p.default for n, p in signature.parameters.items()
                if p.default is not inspect.Parameter.empty}


def _curve_size(params: dict[str, Any]) -> int:
    return CHANNELS[params["channels"]] * params["n_bins"]


FEATURE_FAMILIES: dict[str, FeatureFamily] = {
    "fft": FeatureFamily(azimuthal_spectra, _curve_size,
                         "azimuthal average of the Hann-windowed log power spectrum"),
    "dct": FeatureFamily(dct_spectra,
                         lambda p: CHANNELS[p["channels"]] * p["tile"] ** 2,
                         "2-D DCT-II (ortho) log magnitude, averaged over tile x tile squares"),
    "residual": FeatureFamily(residual_spectra, _curve_size,
                              "azimuthal spectrum of the SRM high-pass noise residual"),
    "npr": FeatureFamily(npr_spectra, _curve_size,
                         "azimuthal spectrum of the NPR residual x - up(down(x))"),
    "selfdesc": FeatureFamily(self_descriptions, lambda p: self_description_size(p["scales"]),
                              "least-squares 5x5 self-prediction weights and residual "
                              "statistics at native and 2x, 4x, ... area-downscaled scales"),
}


def _check_window(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"window must be true or false, got {value!r}")
    return value


# Validation of each shared parameter, run once when an extractor is created.
_CHECKS: dict[str, Callable[[Any], Any]] = {
    "n_bins": lambda v: check_positive_int(v, "n_bins"),
    "tile": lambda v: check_positive_int(v, "tile"),
    "scales": lambda v: check_positive_int(v, "scales"),
    "channels": check_channels,
    "window": _check_window,
}


def list_features() -> list[str]:
    """The feature family names, sorted; join them with "+" to combine."""
    return sorted(FEATURE_FAMILIES)


def _families(name: str) -> list[str]:
    """The family names of a (combined) feature name; ValueError for unknown or repeated ones."""
    parts = name.split("+") if isinstance(name, str) else [repr(name)]
    for part in parts:
        if part not in FEATURE_FAMILIES:
            raise ValueError(f"unknown feature family {part!r} in {name!r}; known: "
                             f"{', '.join(list_features())} (combine with '+', e.g. 'fft+npr')")
    if len(set(parts)) != len(parts):
        raise ValueError(f"feature name {name!r} repeats a family")
    return parts


def feature_parameters(name: str) -> set[str]:
    """Names of the parameters the families of ``name`` accept."""
    return {key for part in _families(name) for key in FEATURE_FAMILIES[part].defaults}


@dataclass(frozen=True)
class FeatureExtractor:
    """Bound feature families: call it on images to get float64 (N, n_features) rows."""

    name: str
    parts: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]

    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray:
        blocks = [FEATURE_FAMILIES[part].extract(images, **dict(params))
                  for part, params in self.parts]
        return np.concatenate(blocks, axis=1).astype(np.float64)

    @property
    def blocks(self) -> list[tuple[str, int, int]]:
        """(family, start, stop) column ranges of each family in the feature rows."""
        out, start = [], 0
        for part, params in self.parts:
            stop = start + FEATURE_FAMILIES[part].size(dict(params))
            out.append((part, start, stop))
            start = stop
        return out

    @property
    def n_features(self) -> int:
        return self.blocks[-1][2]

    def describe(self) -> dict[str, Any]:
        """The recipe as plain data, for bundles and model cards."""
        return {"features": self.name, "resize": None,
                "families": [{"name": part, "summary": FEATURE_FAMILIES[part].summary,
                              **dict(params)} for part, params in self.parts]}


def create_features(name: str, **params: Any) -> FeatureExtractor:
    """The extractor for ``name`` ("fft", "dct", "residual", "npr", "selfdesc" or a "+" join).

    ``params`` (n_bins, window, channels, tile, scales) are validated here and passed to every
    family that accepts them; ValueError names any parameter none of them takes.
    """
    families = _families(name)
    unused = set(params) - feature_parameters(name)
    if unused:
        raise ValueError(f"feature {name!r} takes no parameter {', '.join(sorted(unused))}; "
                         f"it takes {', '.join(sorted(feature_parameters(name)))}")
    checked = {key: _CHECKS[key](value) for key, value in params.items()}
    parts = []
    for part in families:
        bound = {**FEATURE_FAMILIES[part].defaults,
                 **{k: v for k, v in checked.items() if k in FEATURE_FAMILIES[part].defaults}}
        parts.append((part, tuple(sorted(bound.items()))))
    return FeatureExtractor(name, tuple(parts))
