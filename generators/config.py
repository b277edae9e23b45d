"""Run files: a training run described in YAML or TOML, which command-line flags override.

A run file has up to three top-level keys::

    name = "dcgan"            # the family (optional when the command line names it)
    [config]                  # model config overrides (see `forensics zoo list`)
    resolution = 32
    loss = "hinge"
    [train]                   # training options: the flags of `forensics zoo train`
    steps = 2000              # (underscores for dashes)
    checkpoint_every = 500

YAML takes the same structure (``config:`` and ``train:`` mappings). Reading parses data only
(``yaml.safe_load``, ``tomllib``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

TRAIN_OPTIONS = frozenset({
    "steps", "seed", "device", "sample_every", "checkpoint_every", "diagnostics_every",
    "max_minutes", "data", "data_b", "class_key", "split",
})


@dataclass(frozen=True)
class RunFile:
    """The parsed content of a run file."""

    name: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)


def read_run_file(path: str | Path) -> RunFile:
    """Parse a ``.yaml`` / ``.yml`` / ``.toml`` run file; ValueError says what is wrong where."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ValueError(f"--config {path}: cannot read the run file ({reason}); pass an "
                         "existing .yaml, .yml or .toml file") from None
    try:
        if suffix == ".toml":
            document = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            document = yaml.safe_load(text) or {}
        else:
            raise ValueError(f"{path}: run files are .yaml, .yml or .toml, not {suffix!r}")
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        detail = " ".join(str(exc).split())  # YAML errors span several lines
        raise ValueError(f"{path} is not valid {suffix[1:].upper()} ({detail}); fix the file "
                         "(see README, `zoo train --config`)") from exc
    if not isinstance(document, Mapping):
        raise ValueError(f"{path}: expected a mapping with name / config / train at the top")
    unknown = sorted(set(document) - {"name", "config", "train"})
    if unknown:
        raise ValueError(f"{path}: unknown top-level key(s) {unknown}; use name, config "
                         "(model settings) and train (training options)")
    name = document.get("name")
    config, train = document.get("config") or {}, document.get("train") or {}
    if name is not None and not isinstance(name, str):
        raise ValueError(f"{path}: name must be a string, got {name!r}")
    if not isinstance(config, Mapping) or not isinstance(train, Mapping):
        raise ValueError(f"{path}: config and train must be mappings")
    bad = sorted(set(train) - TRAIN_OPTIONS)
    if bad:
        raise ValueError(f"{path}: unknown training option(s) {bad}; valid: "
                         f"{sorted(TRAIN_OPTIONS)}")
    return RunFile(name, dict(config), dict(train))


def merge_options(defaults: Mapping[str, Any], from_file: Mapping[str, Any],
                  from_flags: Mapping[str, Any]) -> dict[str, Any]:
    """defaults < run file < flags; a flag left at None does not override."""
    merged = {**defaults, **from_file}
    merged.update({key: value for key, value in from_flags.items() if value is not None})
    return merged
