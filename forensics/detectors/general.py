"""Where the shipped general detector lives: the bundle `scan`, `evaluate` and the app use
when no ``--detector`` is given.

It ships inside the package (``forensics/shipped/general/``: detector.json + safetensors/npz,
each file checked against its SHA-256 on load like any bundle) and is rebuilt from the
package's own data by ``forensics detector train --recipe general`` (``forensics.general_recipe``).
"""

from __future__ import annotations

from pathlib import Path

from forensics.detectors.base import BUNDLE_CONFIG_NAME, BundleError

GENERAL_DIR = Path(__file__).resolve().parents[1] / "shipped" / "general"


def general_detector_path() -> Path:
    """The shipped general detector's bundle folder; BundleError when the install lacks it."""
    if not (GENERAL_DIR / BUNDLE_CONFIG_NAME).is_file():
        raise BundleError(GENERAL_DIR, "the shipped general detector is missing from this "
                                       "installation",
                          "reinstall gan-forensics, rebuild it with `forensics detector train "
                          "--recipe general --out DIR`, or pass --detector BUNDLE")
    return GENERAL_DIR
