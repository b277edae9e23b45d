"""Spectral detector: logistic regression on azimuthally averaged log power spectra.

After Durall et al. (CVPR 2020): GAN upsampling distorts the high-frequency end of the power
spectrum, which a linear model on the 1-D azimuthal spectrum picks up from few examples. The
features work at any image size without resizing (see ``forensics.features.spectrum``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from forensics.detectors.base import BundleError, Detector, register_detector
from forensics.features.spectrum import azimuthal_spectra

__all__ = ["SpectralDetector"]

WEIGHTS_FILE = "weights.npz"
_REFERENCE_KEYS = ("real_mean", "real_std", "fake_mean", "fake_std")


@register_detector("spectral")
class SpectralDetector(Detector):
    """StandardScaler + class-balanced LogisticRegression on ``azimuthal_spectra`` features.

    Learned: ``model_`` (the sklearn Pipeline), ``reference_`` (mean and std of the training
    spectra of real and of fake images, float64 (n_bins,) each, for plots and explanations),
    plus the ``threshold_``, ``training_info_`` and ``validation_metrics_`` of every Detector.
    """

    def __init__(
        self, n_bins: int = 64, window: bool = True, C: float = 1.0, max_iter: int = 1000
    ):
        self.n_bins = n_bins
        self.window = window
        self.C = C
        self.max_iter = max_iter

    def get_params(self) -> dict[str, Any]:
        """Constructor parameters as a JSON-ready dict."""
        return {
            "n_bins": self.n_bins,
            "window": self.window,
            "C": self.C,
            "max_iter": self.max_iter,
        }

    @property
    def preprocessing(self) -> dict[str, Any]:
        """Feature recipe: grey luma, Hann window, log power, azimuthal average; no resizing."""
        return {
            "features": "azimuthal_spectrum",
            "grey": "ITU-R 601 luma in [0, 1]",
            "window": "hann" if self.window else None,
            "n_bins": self.n_bins,
            "radius": "per-axis frequency / Nyquist, corners beyond 1 left out",
            "resize": None,
        }

    def features(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """The detector's input features: azimuthal spectra, float64 (N, n_bins)."""
        spectra = azimuthal_spectra(images, n_bins=self.n_bins, window=self.window)
        return spectra.astype(np.float64)

    def _new_model(self) -> Pipeline:
        """The unfitted pipeline this detector's parameters describe."""
        return Pipeline(
            [
                ("scaler", StandardScaler()),
                (
                    "classifier",
                    LogisticRegression(C=self.C, max_iter=self.max_iter, class_weight="balanced"),
                ),
            ]
        )

    def _fit(self, images: Sequence[np.ndarray], labels: np.ndarray) -> None:
        """Fit the pipeline and keep per-class reference curves."""
        x = self.features(images)
        self.model_ = self._new_model().fit(x, labels)
        real, fake = x[labels == 0], x[labels == 1]
        self.reference_ = {
            "real_mean": real.mean(axis=0),
            "real_std": real.std(axis=0),
            "fake_mean": fake.mean(axis=0),
            "fake_std": fake.std(axis=0),
        }

    def _proba_of_features(self, x: np.ndarray) -> np.ndarray:
        """P(fake) from feature rows; classes_ are [0, 1], so column 1 is fake."""
        return self.model_.predict_proba(x)[:, 1]

    def _predict_proba(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """P(fake) float64 (N,) for validated images."""
        return self._proba_of_features(self.features(images))

    def _probe(self) -> np.ndarray:
        """Scores of the two reference mean curves, saved to verify a reload reproduces them."""
        means = np.stack([self.reference_["real_mean"], self.reference_["fake_mean"]])
        return self._proba_of_features(means)

    def _arrays(self) -> dict[str, dict[str, np.ndarray]]:
        """The fitted scaler and classifier, reference curves and probe scores."""
        scaler = self.model_.named_steps["scaler"]
        classifier = self.model_.named_steps["classifier"]
        weights = {
            "scaler_mean": scaler.mean_,
            "scaler_scale": scaler.scale_,
            "scaler_var": scaler.var_,
            "scaler_n_samples_seen": np.asarray(scaler.n_samples_seen_, dtype=np.int64),
            "coef": classifier.coef_,
            "intercept": classifier.intercept_,
            "classes": classifier.classes_.astype(np.int64),
            "n_iter": np.asarray(classifier.n_iter_, dtype=np.int64),
            "probe_proba": self._probe(),
        }
        weights.update({f"reference_{key}": self.reference_[key] for key in _REFERENCE_KEYS})
        return {WEIGHTS_FILE: weights}

    def _restore(self, folder: Path, arrays: dict[str, dict[str, np.ndarray]]) -> None:
        """Rebuild the fitted pipeline by setting sklearn's fitted attributes (no pickle)."""
        if WEIGHTS_FILE not in arrays:
            raise BundleError(folder, f"detector.json does not list {WEIGHTS_FILE}")
        w = arrays[WEIGHTS_FILE]
        n = self.n_bins
        expected = {
            "scaler_mean": (n,),
            "scaler_scale": (n,),
            "scaler_var": (n,),
            "scaler_n_samples_seen": (),
            "coef": (1, n),
            "intercept": (1,),
            "classes": (2,),
            "n_iter": (1,),
            "probe_proba": (2,),
            **{f"reference_{key}": (n,) for key in _REFERENCE_KEYS},
        }
        for key, shape in expected.items():
            if key not in w:
                raise BundleError(folder, f"{WEIGHTS_FILE} lacks array {key!r}")
            if w[key].shape != shape or not np.issubdtype(w[key].dtype, np.number):
                raise BundleError(
                    folder,
                    f"{WEIGHTS_FILE}[{key!r}] is {w[key].dtype} {w[key].shape}, "
                    f"expected numbers of shape {shape}",
                )
        if list(w["classes"]) != [0, 1]:
            raise BundleError(folder, f"classes must be [0, 1], got {list(w['classes'])}")

        model = self._new_model()
        scaler = model.named_steps["scaler"]
        scaler.mean_ = w["scaler_mean"].astype(np.float64)
        scaler.scale_ = w["scaler_scale"].astype(np.float64)
        scaler.var_ = w["scaler_var"].astype(np.float64)
        scaler.n_samples_seen_ = int(w["scaler_n_samples_seen"])
        scaler.n_features_in_ = n
        classifier = model.named_steps["classifier"]
        classifier.coef_ = w["coef"].astype(np.float64)
        classifier.intercept_ = w["intercept"].astype(np.float64)
        classifier.classes_ = w["classes"].astype(np.int64)
        classifier.n_iter_ = w["n_iter"].astype(np.int32)
        classifier.n_features_in_ = n
        self.model_ = model
        self.reference_ = {key: w[f"reference_{key}"].astype(np.float64) for key in _REFERENCE_KEYS}

        if not np.allclose(self._probe(), w["probe_proba"], rtol=1e-9, atol=1e-12):
            raise BundleError(
                folder,
                "the rebuilt model does not reproduce the scores saved with it "
                "(corrupt weights or an incompatible scikit-learn version)",
            )
