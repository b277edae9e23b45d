"""Spectral detectors: a classifier on frequency-spectrum features, calibrated on validation.

After Durall et al. (CVPR 2020) and Frank et al. (ICML 2020): GAN upsampling distorts the
high-frequency end of the spectrum, which a simple classifier on spectral features picks up
from few examples. The features (``forensics.features``: ``fft``, ``dct``, ``residual``,
``npr`` or "+" joins) work at any image size without resizing; the classifier (``logreg``,
``svm``, ``gbm``, see ``forensics.detectors.classifiers``) gives a raw score that Platt
scaling, fit on the validation split, turns into P(fake).

A bundle keeps a linear classifier in ``weights.npz`` and gradient boosting as its fitted
pipeline in ``classifier.skops``; older bundles that kept gradient boosting as tree arrays in
``weights.npz`` are refused with advice to retrain.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sklearn.base import BaseEstimator

from forensics.detectors.base import BUNDLE_CONFIG_NAME, BundleError, Detector
from forensics.detectors.calibration import PlattCalibration
from forensics.detectors.classifiers import (CLASSIFIERS, ESTIMATOR_CLASSIFIERS, TRUSTED_TYPES,
                                             BoostedTreesScorer, LinearScorer, Scorer,
                                             fit_scorer, scorer_from_arrays,
                                             scorer_from_estimator)
from forensics.detectors.registry import register_detector
from forensics.features import azimuthal_spectra, create_features, feature_parameters
from forensics.features.registry import FeatureExtractor

__all__ = ["SpectralDetector"]

WEIGHTS_FILE = "weights.npz"
CLASSIFIER_FILE = "classifier.skops"  # gradient boosting's fitted pipeline
_REFERENCE_KEYS = ("real_mean", "real_std", "fake_mean", "fake_std")
CALIBRATIONS = ("platt", "none")


@register_detector("spectral")
class SpectralDetector(Detector):
    """Spectral features -> StandardScaler + classifier -> Platt scaling -> P(fake).

    Learned: ``scorer_`` (the fitted classifier), ``calibrator_`` (a
    ``PlattCalibration``, also described by ``calibration_``), ``reference_`` (mean and std
    of the grey azimuthal FFT spectra, ``n_bins`` long, of the real and of the fake training
    images, for plots and explanations whatever the features), plus the ``threshold_``,
    ``training_info_`` and ``validation_metrics_`` of every Detector.
    """

    known_failure_modes = (
        "Resizing and JPEG re-compression shift the spectrum the features read; evaluate with "
        "`forensics robustness` before trusting verdicts on processed images.",
        "It knows the upsampling traces of the generators it was trained on; check unseen "
        "architectures with `forensics evaluate --leave-one-out`.",
        "Strongly periodic content (fabric, grids, halftone prints) can mimic upsampling peaks.",
        "Tiny images give coarse spectra; DCT features need images at least one tile large.",
    )
    variant_param = "features"
    trusted_estimator_types = TRUSTED_TYPES

    def __init__(
        self,
        features: str = "fft",
        classifier: str = "logreg",
        n_bins: int = 64,
        window: bool = True,
        channels: str = "grey",
        tile: int = 32,
        classifier_params: dict[str, Any] | None = None,
        calibration: str = "platt",
        seed: int = 0,
    ):
        self.features = features
        self.classifier = classifier
        self.n_bins = n_bins
        self.window = window
        self.channels = channels
        self.tile = tile
        self.classifier_params = classifier_params
        self.calibration = calibration
        self.seed = seed

    def feature_extractor(self) -> FeatureExtractor:
        """The feature recipe these parameters describe; ValueError if they are invalid."""
        shared = {"n_bins": self.n_bins, "window": self.window, "channels": self.channels,
                  "tile": self.tile}
        accepted = feature_parameters(self.features)
        return create_features(self.features, **{k: v for k, v in shared.items() if k in accepted})

    @property
    def preprocessing(self) -> dict[str, Any]:
        """Feature recipe, classifier and standardisation; images are never resized."""
        return {
            **self.feature_extractor().describe(),
            "grey": "ITU-R 601 luma in [0, 1]" if self.channels == "grey" else None,
            "window": "hann" if self.window else None,
            "n_bins": self.n_bins,
            "classifier": self.classifier,
            "standardisation": "per-feature mean and variance of the training set",
        }

    def extract_features(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """The classifier's input rows, float64 (N, n_features)."""
        return self.feature_extractor()(images)

    def _check_params(self) -> None:
        """Validate the parameters that are not the feature recipe's (checked when built)."""
        if self.classifier not in CLASSIFIERS:
            raise ValueError(f"classifier must be one of {', '.join(CLASSIFIERS)}, "
                             f"got {self.classifier!r}")
        if self.calibration not in CALIBRATIONS:
            raise ValueError(f"calibration must be one of {CALIBRATIONS}, got {self.calibration!r}")
        if self.classifier_params is not None and not isinstance(self.classifier_params, dict):
            raise ValueError(f"classifier_params must be a dict, got {self.classifier_params!r}")

    def _fit(
        self,
        images: Sequence[np.ndarray],
        labels: np.ndarray,
        validation: tuple[Sequence[np.ndarray], np.ndarray] | None,
    ) -> None:
        """Fit the classifier on train; Platt-calibrate it on validation when there is one."""
        self._check_params()
        x = self.extract_features(images)
        self.scorer_ = fit_scorer(self.classifier, x, labels, self.classifier_params, self.seed)
        self.calibrator_ = PlattCalibration()
        if validation is not None and self.calibration == "platt":
            val_images, val_labels = validation
            raw = self.scorer_.decision(self.extract_features(val_images))
            self.calibrator_ = PlattCalibration.fit(raw, val_labels)
        self.calibration_ = self.calibrator_.to_dict()
        curves = azimuthal_spectra(images, n_bins=self.n_bins, window=self.window)
        real, fake = curves[labels == 0].astype(np.float64), curves[labels == 1].astype(np.float64)
        self.reference_ = {"real_mean": real.mean(axis=0), "real_std": real.std(axis=0),
                           "fake_mean": fake.mean(axis=0), "fake_std": fake.std(axis=0)}
        # Two training rows whose scores are saved, so a reload can prove it reproduces them.
        self.probe_features_ = np.stack([x[labels == 0][0], x[labels == 1][0]])

    def _proba_of_features(self, x: np.ndarray) -> np.ndarray:
        return self.calibrator_(self.scorer_.decision(x))

    def _predict_proba(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """P(fake) float64 (N,) for validated images."""
        return self._proba_of_features(self.extract_features(images))

    def _arrays(self) -> dict[str, dict[str, np.ndarray]]:
        """A linear classifier's arrays, reference curves and the probe rows with their scores."""
        weights = dict(self.scorer_.arrays()) if isinstance(self.scorer_, LinearScorer) else {}
        weights.update({f"reference_{key}": self.reference_[key] for key in _REFERENCE_KEYS})
        weights["probe_features"] = self.probe_features_
        weights["probe_proba"] = self._proba_of_features(self.probe_features_)
        return {WEIGHTS_FILE: weights}

    def _estimators(self) -> dict[str, BaseEstimator]:
        """Gradient boosting's fitted pipeline; linear classifiers live in the arrays."""
        if isinstance(self.scorer_, BoostedTreesScorer):
            return {CLASSIFIER_FILE: self.scorer_.pipeline}
        return {}

    def _restore_estimators(self, folder: Path, estimators: dict[str, BaseEstimator]) -> None:
        """Gradient boosting's scorer from its pipeline, loaded from ``classifier.skops``."""
        if self.classifier not in ESTIMATOR_CLASSIFIERS:
            super()._restore_estimators(folder, estimators)
            return
        if set(estimators) != {CLASSIFIER_FILE}:
            raise BundleError(folder, f"{BUNDLE_CONFIG_NAME} lists no {CLASSIFIER_FILE} for its "
                                      f"{self.classifier} classifier: a bundle saved before "
                                      "gradient boosting was kept as a skops file (its tree "
                                      "arrays are no longer read)",
                              "re-train it with `forensics detector train --classifier gbm` "
                              "and save it again")
        try:
            self._check_params()
            n_features = self.feature_extractor().n_features
            self.scorer_ = scorer_from_estimator(self.classifier, estimators[CLASSIFIER_FILE],
                                                 n_features)
        except ValueError as error:
            raise BundleError(folder, f"{CLASSIFIER_FILE}: {error}") from None

    def _restore(self, folder: Path, arrays: dict[str, dict[str, np.ndarray]]) -> None:
        """Rebuild scorer, calibration and references from arrays and detector.json."""
        if WEIGHTS_FILE not in arrays:
            raise BundleError(folder, f"detector.json does not list {WEIGHTS_FILE}")
        w = arrays[WEIGHTS_FILE]
        try:
            self._check_params()
            n_features = self.feature_extractor().n_features
            scorer: Scorer = (self.scorer_ if self.classifier in ESTIMATOR_CLASSIFIERS
                              else scorer_from_arrays(self.classifier, w, n_features))
            self.calibrator_ = PlattCalibration.from_dict(self.calibration_)
        except ValueError as error:
            raise BundleError(folder, f"{WEIGHTS_FILE}: {error}") from None
        expected = {"probe_features": (2, n_features), "probe_proba": (2,),
                    **{f"reference_{key}": (self.n_bins,) for key in _REFERENCE_KEYS}}
        for key, shape in expected.items():
            if key not in w or w[key].shape != shape or not np.issubdtype(w[key].dtype, np.number):
                found = f"{w[key].dtype} {w[key].shape}" if key in w else "nothing"
                raise BundleError(folder, f"{WEIGHTS_FILE}[{key!r}] holds {found}, "
                                          f"expected numbers of shape {shape}")
        self.scorer_ = scorer
        self.reference_ = {key: w[f"reference_{key}"].astype(np.float64) for key in _REFERENCE_KEYS}
        self.probe_features_ = w["probe_features"].astype(np.float64)
        if not np.allclose(self._proba_of_features(self.probe_features_), w["probe_proba"],
                           rtol=1e-9, atol=1e-12):
            raise self.incompatible(folder, "the rebuilt model does not reproduce the scores "
                                            "saved with its probe rows")
