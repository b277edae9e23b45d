"""An evaluation's result as a file, written and read here only (standard library only, so the
app lists and reads results without loading the detectors).

``forensics evaluate --out FILE`` writes one wherever it is told; the demo writes
``evaluation.json`` at the top of its folder, the name the app looks for.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from crashsafe.files import atomic_write_text

__all__ = ["EVALUATION_FILE", "write_evaluation", "has_evaluation", "read_evaluation"]

EVALUATION_FILE = "evaluation.json"


def write_evaluation(path: str | os.PathLike, result: dict[str, Any]) -> Path:
    """Write ``result`` (``forensics.evaluation.evaluate_corpora``'s, with anything added) as
    indented JSON atomically, creating parent folders."""
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    return Path(path)


def has_evaluation(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds an ``evaluation.json``."""
    return (Path(folder) / EVALUATION_FILE).is_file()


def read_evaluation(folder: str | os.PathLike) -> dict[str, Any]:
    """The evaluation result in ``folder``; ValueError, saying what to do, when it is missing,
    unreadable or not a result of ``forensics evaluate``."""
    path = Path(folder) / EVALUATION_FILE
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        result = None
    if not isinstance(result, dict) or "per_generator" not in result:
        raise ValueError(f"{path} is not a result of `forensics evaluate` (no per_generator "
                         "metrics); write one with `forensics evaluate --out`.")
    return result
