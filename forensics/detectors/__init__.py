"""Detectors behind one registry: create them by kind, list them, load saved bundles.

>>> detector = create_detector("spectral", features="fft+npr", classifier="gbm")
>>> detector.fit(images, labels, val_images=val_images, val_labels=val_labels)
>>> detector.save("runs/spectral"); load_detector("runs/spectral").predict_proba(images)
>>> create_detector("ensemble", members="spectral:fft,spectral:npr,cnn")
>>> create_detector("oneclass").fit(images, labels)  # labels may all be 0: reals alone
>>> sklearn.base.clone(detector)  # every detector is a scikit-learn estimator
"""

from __future__ import annotations

import os

from forensics.detectors.base import BundleError, Detector, read_bundle_config
from forensics.detectors.card import model_card
from forensics.detectors.registry import (DETECTOR_KINDS, DetectorKind, create_detector,
                                          detector_class, list_detectors, register_detector)

__all__ = [
    "BundleError",
    "DETECTOR_KINDS",
    "Detector",
    "DetectorKind",
    "create_detector",
    "detector_class",
    "list_detectors",
    "load_detector",
    "model_card",
    "register_detector",
]


def load_detector(folder: str | os.PathLike) -> Detector:
    """Load a bundle folder written by ``Detector.save``, whatever its kind.

    Validates detector.json (format, format_version, kind, listed files) and dispatches to the
    kind's ``load``; raises BundleError saying which folder and why otherwise. Only JSON,
    pickle-free ``.npz``/``.safetensors`` arrays and allow-listed ``.skops`` estimators are
    read, so no code from the folder is executed.
    """
    manifest = read_bundle_config(folder)
    try:
        kind_class = detector_class(manifest["kind"])
    except ValueError as error:
        raise BundleError(folder, str(error)) from None
    return kind_class.load(folder)
