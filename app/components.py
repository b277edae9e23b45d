"""App logic as plain functions: configuration, safe folder browsing, scoring, exports.

The verdict policy (fake, real, uncertain, unsure) is ``forensics.verdict``, shared with
`forensics scan`; the batch table here lays out its words.

Nothing here imports streamlit, so every function is unit-tested without a browser. The pages
(``Home.py``, ``pages/``) only lay out what these functions return.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import pandas as pd
from PIL import ExifTags, Image

from crashsafe.files import sha256_hex
from crashsafe.images import (DEFAULT_LIMITS, IMAGE_EXTENSIONS, ImageError, ImageLimits,
                             format_bytes, load_image)
from forensics.scan_results import results_csv
from forensics.verdict import (STABILITY_COPIES, flipped_copies, members_agree, score_images,
                               verdict)

if TYPE_CHECKING:  # the detectors import sklearn and torch: loaded under the page's spinner
    from forensics.detectors import Detector


UPLOAD_TYPES = sorted(ext.lstrip(".") for ext in IMAGE_EXTENSIONS)
TABLE_COLUMNS = ["file", "verdict", "p_fake", *(c.label for c in STABILITY_COPIES), "stability",
                 "members_agree", "width", "height", "sha256", "error"]


# --- safe folders -------------------------------------------------------------

def resolve_under(root: str | os.PathLike, relative: str | os.PathLike) -> Path:
    """``root / relative`` resolved, refusing anything that ends up outside ``root``.

    Absolute paths, ``..`` and symlinks that leave the root all raise ValueError.
    """
    base = Path(root).resolve()
    if Path(relative).is_absolute():
        raise ValueError(f"{relative}: only folders under the app root {base} can be opened")
    target = (base / relative).resolve()
    if not target.is_relative_to(base):
        raise ValueError(f"{relative}: outside the app root {base}; refused")
    return target


def find_folders(root: str | os.PathLike, accept: Callable[[Path], bool],
                 max_depth: int = 4) -> list[str]:
    """POSIX paths, relative to ``root``, of folders under it (itself included) that ``accept``.

    Symlinked folders are not followed, so the walk never leaves the root.
    """
    base = Path(root).resolve()
    if not base.is_dir():
        return []
    found = []
    for dirpath, dirnames, _ in os.walk(base):
        here = Path(dirpath)
        depth = len(here.relative_to(base).parts)
        dirnames[:] = sorted(d for d in dirnames
                             if not d.startswith(".") and depth < max_depth)
        if accept(here):
            found.append(here.relative_to(base).as_posix())
    return found


# --- scoring and verdicts -------------------------------------------------------------------------

@dataclass
class ImageResult:
    """One uploaded file after scoring (a ``forensics.verdict.Scored``): ``p_fake`` is None
    when ``error`` says why it failed."""

    name: str
    sha256: str
    p_fake: float | None = None
    copies: dict[str, float] = field(default_factory=dict)
    members: dict[str, float] = field(default_factory=dict)
    width: int = 0
    height: int = 0
    error: str = ""
    advice: str = ""  # what to do about ``error``


# Evidence sent to the browser: pictures at most DISPLAY_SIDE px a side (panels show them 420 px
# wide), and pixel-level maps (noise residual, error levels) of larger images on their central
# NATIVE_CROP px at native resolution, so a 40 MP upload's panels hold megabytes, not gigabytes.
DISPLAY_SIDE = 1024
NATIVE_CROP = 1024
THUMBNAIL_SIDE = 256  # the cards' thumbnails (a 40 MP upload had been sent whole, as PNG)


def display_copy(image: np.ndarray, side: int = DISPLAY_SIDE) -> np.ndarray:
    """``image`` (H, W[, C]) shrunk by area averaging until neither side passes ``side``; the
    array itself when it fits. For display only: scores and maps use the native pixels."""
    height, width = image.shape[:2]
    scale = side / max(height, width)
    if scale >= 1:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def native_crop(image: np.ndarray, side: int = NATIVE_CROP) -> np.ndarray:
    """The central ``side`` x ``side`` px of ``image`` (all of it when smaller), unresampled."""
    height, width = image.shape[:2]
    top, left = max(0, (height - side) // 2), max(0, (width - side) // 2)
    return image[top:top + side, left:left + side]


def decode_upload(name: str, data: bytes, limits: ImageLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Decode uploaded bytes through the toolkit's safe decoder; raises ImageError."""
    return load_image(data, limits=limits, name=name)


def score_upload(detector: Detector, name: str, data: bytes,
                 limits: ImageLimits = DEFAULT_LIMITS) -> ImageResult:
    """Decode and score an upload and its stability copies; a bad file sets ``error``."""
    result = ImageResult(name=name, sha256=sha256_hex(data))
    try:
        image = decode_upload(name, data, limits)
    except ImageError as exc:
        result.error, result.advice = exc.reason, exc.advice
        return result
    result.height, result.width = image.shape[:2]
    (scores,) = score_images(detector, [image], stability=True)
    result.p_fake, result.copies, result.members = scores.p_fake, scores.copies, scores.members
    return result


def refusal_message(result: ImageResult) -> str:
    """Markdown for an upload that could not be scored: its name, why, and what to do."""
    return (f"**{result.name}** could not be scored: {result.error.rstrip('.')}; "
            f"{result.advice}.")


def result_row(result: ImageResult, threshold: float, band: float) -> dict[str, Any]:
    """One row of the batch table (keys: ``TABLE_COLUMNS``)."""
    scored = result.p_fake is not None
    row: dict[str, Any] = {
        "file": result.name,
        "verdict": verdict(result, threshold, band) or "error",
        "p_fake": round(result.p_fake, 4) if scored else None,
    }
    row.update({c.label: round(result.copies[c.label], 4) if scored else None
                for c in STABILITY_COPIES})
    row["stability"] = (("flips" if flipped_copies(result, threshold) else "stable")
                        if scored else "")
    row["members_agree"] = members_agree(result, threshold)
    row.update(width=result.width or None, height=result.height or None, sha256=result.sha256,
               error=result.error)
    return row


def rows_to_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """The batch table as CSV text (header ``TABLE_COLUMNS``), by the scan's writer."""
    return results_csv(rows, TABLE_COLUMNS)


def rows_to_json(rows: Sequence[Mapping[str, Any]], threshold: float, band: float,
                 detector: str) -> str:
    """The batch table as a JSON document with the settings it was made under."""
    return json.dumps({"detector": detector, "threshold": threshold, "uncertain_band": band,
                       "results": list(rows)}, indent=2)


# --- evidence --------------------------------------------------------------------------------

def image_metadata(name: str, data: bytes) -> dict[str, Any]:
    """Format, size, colour mode, EXIF tags and SHA-256 of an upload that decoded without error.

    Only the header is read here; the pixels went through the safe decoder already.
    """
    with Image.open(io.BytesIO(data)) as img:
        exif = {ExifTags.TAGS.get(tag, str(tag)): _exif_text(value)
                for tag, value in img.getexif().items()}
        meta = {"file": name, "format": img.format, "width": img.width, "height": img.height,
                "mode": img.mode, "frames": getattr(img, "n_frames", 1), "bytes": len(data),
                "sha256": sha256_hex(data), "exif": exif}
    return meta


def _exif_text(value: Any) -> str:
    """An EXIF value as short text (bytes shown by length)."""
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    return str(value)[:200]


def spectrum_chart_rows(comparison: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Long-form rows (radius, series, mean, low, high) for the azimuthal spectrum chart.

    ``comparison`` is what ``forensics.explain.azimuthal_vs_reference`` returns: ``radius``,
    the ``image`` curve and the bundle's ``reference`` curves (or None). Reference series get
    a band of +-1 std; the image's band is the curve itself.
    """
    series = {"this image": (comparison["image"], np.zeros(len(comparison["image"])))}
    reference = comparison.get("reference")
    if reference:
        for label in ("real", "fake"):
            series[f"training {label} (mean ± std)"] = (reference[f"{label}_mean"],
                                                         reference[f"{label}_std"])
    return band_rows(comparison["radius"], series)


def band_rows(radius: Sequence[float], series: Mapping[str, tuple[Sequence[float],
                                                                  Sequence[float]]]
              ) -> list[dict[str, Any]]:
    """Long-form chart rows (radius, series, mean, low, high) of curves with a +-std band."""
    return [{"radius": float(r), "series": name, "mean": float(m), "low": float(m - s),
             "high": float(m + s)}
            for name, (mean, std) in series.items()
            for r, m, s in zip(radius, mean, std)]


def generator_spectrum_rows(spectra: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    """Chart rows of each group's mean azimuthal spectrum +-1 std, named "<group> (n=N)", from
    ``forensics.spectra.spectra_by_generator``."""
    from forensics.features import spectrum_radius

    if not spectra:
        return []
    radius = spectrum_radius(next(iter(spectra.values())).shape[1])
    return band_rows(radius, {f"{name} (n={len(rows)})": (rows.mean(axis=0), rows.std(axis=0))
                              for name, rows in spectra.items()})


def has_cnn(detector: Detector) -> bool:
    """Whether the detector is a CNN or an ensemble with a CNN member (Grad-CAM needs one)."""
    members = getattr(detector, "members_", {}).values()
    return any(d.kind == "cnn" for d in (detector, *members))  # by kind: no torch import here


# --- corpora and runs ------------------------------------------------------------------------

def sample_paths(paths: Sequence[Path], n: int, seed: int = 0) -> list[Path]:
    """Up to ``n`` of ``paths`` drawn without replacement, the same ones for the same seed."""
    if len(paths) <= n:
        return list(paths)
    picks = np.random.default_rng(seed).choice(len(paths), size=n, replace=False)
    return [paths[i] for i in sorted(picks)]


# --- robustness results ------------------------------------------------------------------------

ROBUSTNESS_DIMENSIONS = ("detector", "generator", "family", "level")
_NOT_METRICS = {"level", "n", "n_real", "n_fake", "n_errors", "n_images", "n_scored", "seed",
                "threshold"}


def metric_columns(table: pd.DataFrame) -> list[str]:
    """Numeric columns that hold metrics (not dimensions or counts)."""
    return [c for c in table.columns
            if c not in _NOT_METRICS and c not in ROBUSTNESS_DIMENSIONS
            and pd.api.types.is_numeric_dtype(table[c])]


def metric_records(table: pd.DataFrame) -> list[dict[str, Any]]:
    """Table rows as dicts, None (not NaN) where a value is missing, as the report has them."""
    return [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
            for row in table.to_dict("records")]


def select_rows(table: pd.DataFrame, **choices: str | None) -> pd.DataFrame:
    """Rows matching every non-None ``column=value`` choice; absent columns are ignored."""
    mask = pd.Series(True, index=table.index)
    for column, value in choices.items():
        if value is not None and column in table:
            mask &= table[column].astype(str) == value
    return table[mask]
