"""Perturbation grids for robustness runs: built-in grids, YAML/TOML grid files, families.

A grid is written as a mapping from a registered perturbation name (see
:data:`forensics.perturb.PERTURBATIONS`) to its ``levels`` and options. An option given as a list
makes one family per value, so this YAML

.. code-block:: yaml

    jpeg_pil: {levels: [100, 90, 70]}
    resize:
      levels: [1.0, 0.5]
      interpolation: [nearest, area]
      back: false
    social: {}

expands to ``jpeg_pil/q=100``, ``jpeg_pil/q=90``, ``jpeg_pil/q=70``, ``resize/scale=1.0``,
``resize/scale=0.5`` (bilinear is the default and is left out of ids), ... and ``social``.
TOML files use the same shape (one table per name). List levels from the mildest to the
strongest: reports read "falls below 0.8 at JPEG quality 70" along that order.

A *family* is a perturbation with its options fixed and its level free
(``resize/interpolation=area``); robustness reports draw one curve per family.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from forensics.perturb import PERTURBATIONS, Perturbation

__all__ = ["GRIDS", "GridError", "expand_grid", "families", "family_of", "load_grid"]

_INTERPOLATIONS = ["nearest", "bilinear", "bicubic", "area"]

# Built-in grids, in the file format. "default" follows the grids in use (UnivFD: JPEG 100..30,
# blur sigma 0..4; GANDCTAnalysis: noise sigma 5..20, crops); no reference defines downscaling.
GRIDS: dict[str, dict[str, dict[str, Any]]] = {
    "default": {
        "jpeg_pil": {"levels": list(range(100, 29, -5))},
        "blur": {"levels": [0.5 * k for k in range(9)]},
        "resize": {"levels": [1.0, 0.75, 0.5, 0.25], "interpolation": _INTERPOLATIONS,
                   "back": False},
        "noise": {"levels": [0, 5, 10, 20]},
        "crop": {"levels": [1.0, 0.9, 0.8]},
        "social": {},
    },
    # A minute-scale grid for the demo and smoke tests: one or two steps of each kind.
    "small": {
        "jpeg_pil": {"levels": [95, 75, 50]},
        "blur": {"levels": [0, 1, 2]},
        "resize": {"levels": [1.0, 0.5]},
        "noise": {"levels": [0, 10]},
        "crop": {"levels": [1.0, 0.8]},
        "social": {},
    },
}


class GridError(ValueError):
    """A grid that cannot be used: says which file or entry and why."""


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def expand_grid(spec: Mapping[str, Any], source: str = "grid") -> list[Perturbation]:
    """The perturbations a grid mapping describes, in its order, each id once.

    Raises GridError naming ``source`` and the entry for unknown names, options or levels.
    """
    if not isinstance(spec, Mapping) or not spec:
        raise GridError(f"{source}: expected a non-empty mapping of perturbation name -> "
                        f"{{levels: [...], option: value or [values]}}; got {spec!r}")
    out: dict[str, Perturbation] = {}
    for name, entry in spec.items():
        if not isinstance(entry, (Mapping, type(None))):
            raise GridError(f"{source}: {name!r} must map to {{levels: [...], ...}}, got {entry!r}")
        entry = dict(entry or {})
        if name not in PERTURBATIONS:
            raise GridError(f"{source}: unknown perturbation {name!r}; known: "
                            f"{', '.join(PERTURBATIONS)}")
        has_level = PERTURBATIONS[name].level_arg is not None
        if has_level and "levels" not in entry:
            raise GridError(f"{source}: {name!r} needs a 'levels' list")
        levels = _as_list(entry.pop("levels")) if has_level else [None]
        if not has_level and "levels" in entry:
            raise GridError(f"{source}: {name!r} takes no levels")
        options = [[(key, value) for value in _as_list(values)] for key, values in entry.items()]
        for combo in itertools.product(*options):
            for level in levels:
                try:
                    perturbation = Perturbation(name, level, dict(combo))
                except (TypeError, ValueError) as error:
                    raise GridError(f"{source}: {name!r}: {error}") from None
                out.setdefault(perturbation.id, perturbation)
    return list(out.values())


def _parse_toml(text: str) -> Any:
    import tomllib  # Python 3.11+; YAML and JSON grids work everywhere

    return tomllib.loads(text)


def load_grid(grid: str | os.PathLike) -> list[Perturbation]:
    """A built-in grid by name (see :data:`GRIDS`), or a .yaml, .yml, .toml or .json grid file."""
    if isinstance(grid, str) and grid in GRIDS:
        return expand_grid(GRIDS[grid], f"built-in grid {grid!r}")
    path = Path(grid)
    if not path.is_file():
        raise GridError(f"{path}: no such grid file (built-in grids: {', '.join(GRIDS)})")
    parsers = {".yaml": yaml.safe_load, ".yml": yaml.safe_load, ".json": json.loads,
               ".toml": _parse_toml}
    parse = parsers.get(path.suffix.lower())
    if parse is None:
        raise GridError(f"{path}: grid files must end in {', '.join(parsers)}")
    try:
        spec = parse(path.read_text(encoding="utf-8"))
    except (ValueError, yaml.YAMLError) as error:  # TOML and JSON errors are ValueErrors
        detail = " ".join(str(error).split())  # YAML errors span several lines
        raise GridError(f"{path}: cannot parse ({detail}); fix the file") from None
    return expand_grid(spec, str(path))


def family_of(perturbation: Perturbation) -> str:
    """The id without its level: ``resize/scale=0.5,interpolation=area`` ->
    ``resize/interpolation=area``."""
    name, _, fields = perturbation.id.partition("/")
    options = fields.split(",")[1:]  # ids list the level first, then non-default options
    return f"{name}/{','.join(options)}" if options else name


def families(perturbations: Sequence[Perturbation]) -> dict[str, list[Perturbation]]:
    """Perturbations grouped by :func:`family_of`, in first-seen order, levels in grid order."""
    groups: dict[str, list[Perturbation]] = {}
    for perturbation in perturbations:
        groups.setdefault(family_of(perturbation), []).append(perturbation)
    return groups
