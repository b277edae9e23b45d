"""The app's settings: what ``forensics app`` hands the Streamlit app, through environment
variables written and read here only (the CLI writes them with :meth:`AppConfig.to_env`, the
app reads them with :meth:`AppConfig.from_env`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from crashsafe.images import DEFAULT_LIMITS, ImageLimits

__all__ = ["DEFAULT_ROOT", "ENV_DETECTOR", "ENV_ROOT", "ENV_MAX_BYTES", "ENV_MAX_PIXELS",
           "ENV_SCORING_SLOTS", "AppConfig", "folder_stamp"]

DEFAULT_ROOT = "runs"
ENV_DETECTOR, ENV_ROOT = "FORENSICS_APP_DETECTOR", "FORENSICS_APP_ROOT"
ENV_MAX_BYTES, ENV_MAX_PIXELS = "FORENSICS_APP_MAX_BYTES", "FORENSICS_APP_MAX_PIXELS"
ENV_SCORING_SLOTS = "FORENSICS_APP_SCORING_SLOTS"


@dataclass(frozen=True)
class AppConfig:
    """The app's detector bundle, the folder it may browse, its upload limits and the uploads
    scored at once, server-wide (``app/scoring_queue.py``)."""

    detector: Path
    root: Path
    limits: ImageLimits = DEFAULT_LIMITS
    scoring_slots: int = 1

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> AppConfig:
        """Read the ``FORENSICS_APP_*`` variables; defaults: the shipped general detector and
        ``runs``."""
        from forensics.detectors.general import GENERAL_DIR  # the detectors import sklearn

        limits = ImageLimits(
            max_pixels=int(env.get(ENV_MAX_PIXELS, DEFAULT_LIMITS.max_pixels)),
            max_bytes=int(env.get(ENV_MAX_BYTES, DEFAULT_LIMITS.max_bytes)),
        )
        return cls(detector=Path(env.get(ENV_DETECTOR) or GENERAL_DIR),
                   root=Path(env.get(ENV_ROOT, DEFAULT_ROOT)), limits=limits,
                   scoring_slots=max(1, int(env.get(ENV_SCORING_SLOTS, 1))))

    def to_env(self) -> dict[str, str]:
        """The variables that make :meth:`from_env` read back this configuration."""
        return {ENV_DETECTOR: str(self.detector), ENV_ROOT: str(self.root),
                ENV_MAX_BYTES: str(self.limits.max_bytes),
                ENV_MAX_PIXELS: str(self.limits.max_pixels),
                ENV_SCORING_SLOTS: str(self.scoring_slots)}


def folder_stamp(folder: str | os.PathLike) -> int:
    """The latest modification time (ns) of any file under ``folder``: a cache key that
    changes whenever a set of files replaced as one unit (a detector bundle) is rewritten."""
    return max((path.stat().st_mtime_ns for path in Path(folder).rglob("*") if path.is_file()),
               default=0)
