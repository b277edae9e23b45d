"""Detectors behind one registry: create them by kind, list them, load saved bundles.

>>> detector = create_detector("spectral", features="fft+npr", classifier="gbm")
>>> detector.fit(images, labels, val_images=val_images, val_labels=val_labels)
>>> detector.save("runs/spectral"); load_detector("runs/spectral").predict_proba(images)
>>> create_detector("ensemble", members="spectral:fft,spectral:npr,cnn")
>>> create_detector("oneclass").fit(images, labels)  # labels may all be 0: reals alone
"""

from __future__ import annotations

import os

from forensics.detectors.base import (
    BundleError,
    Detector,
    read_manifest,
    register_detector,
    registered_detectors,
)

# Built-in detectors register themselves on import.
from forensics.detectors import spectral as _spectral  # noqa: F401  (isort: skip)
from forensics.detectors import ensemble as _ensemble  # noqa: F401  (isort: skip)
from forensics.detectors import oneclass as _oneclass  # noqa: F401  (isort: skip)

__all__ = [
    "BundleError",
    "Detector",
    "register_detector",
    "create_detector",
    "list_detectors",
    "load_detector",
]


def list_detectors() -> list[str]:
    """Registered detector kinds, sorted."""
    return sorted(registered_detectors())


def _known() -> str:
    """Registered kinds for error messages, without importing the lazy ones (torch, timm)."""
    from forensics.detectors.base import _LAZY_KINDS, _REGISTRY

    return ", ".join(sorted(set(_REGISTRY) | set(_LAZY_KINDS)))


def create_detector(kind: str, **params) -> Detector:
    """A new, unfitted detector of ``kind`` built with constructor ``params``."""
    registry = registered_detectors(kind)
    if kind not in registry:
        raise ValueError(f"unknown detector kind {kind!r}; known kinds: {_known()}")
    return registry[kind](**params)


def load_detector(folder: str | os.PathLike) -> Detector:
    """Load a bundle folder written by ``Detector.save``, whatever its kind.

    Validates detector.json (format, format_version, kind, listed array files) and dispatches
    to the kind's ``load``; raises BundleError saying which folder and why otherwise. Only
    JSON and pickle-free ``.npz``/``.safetensors`` arrays are read, so no code from the folder
    is executed.
    """
    manifest = read_manifest(folder)
    registry = registered_detectors(manifest["kind"])
    if manifest["kind"] not in registry:
        raise BundleError(
            folder,
            f"unknown detector kind {manifest['kind']!r}; known kinds: {_known()}",
        )
    return registry[manifest["kind"]].load(folder)
