"""One-class detector: a Gaussian mixture of real images' self-descriptions; unusual = fake.

After FSD (Forensic Self-Descriptions, CVPR 2025): users meet generators unlike any training
fake, and a model of real images alone can flag those. Each image is described by how it
predicts itself (``forensics.features.selfdescription``, or any registered feature family);
a Gaussian mixture fit to the standardised descriptions of the real training images scores an
image by its negative log-likelihood (NLL): the less it looks like those reals, the higher.

Fakes never shape the mixture. Where there are fakes (validation ones first, else those of
the training split), they and held-out reals (validation reals first, else a ``holdout``
share of the training reals kept out of the mixture) fit Platt scaling of the NLL into
P(fake). With no fake at all, the NLL is mapped so that 0.5 calls ``false_alarm_rate`` of the
held-out reals fake (``PlattCalibration.at_false_alarm``), and the card says so.

The default mixture (2 components, full covariance, 0.1 added to its diagonal) gave the
highest log-likelihood of held-out real photos among 1-5 components, full or diagonal, 0.001
to 1 on the diagonal, fit on the bundled corpus's training photos (435 patches of 13 photos)
and scored on its validation photos; FSD's 5 components suit larger real corpora
(``--set n_components=5``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from forensics.detectors.base import BundleError, Detector
from forensics.detectors.calibration import PlattCalibration
from forensics.detectors.registry import register_detector
from forensics.features import create_features, feature_parameters
from forensics.features.registry import FeatureExtractor

__all__ = ["OneClassDetector"]

WEIGHTS_FILE = "weights.npz"
COVARIANCES = ("full", "diag")
# Mixture arrays of each covariance type, by name: their shapes for K components, D features.
_MIXTURE_SHAPES = {
    "full": lambda k, d: {"weights": (k,), "means": (k, d), "covariances": (k, d, d),
                          "precisions_cholesky": (k, d, d)},
    "diag": lambda k, d: {"weights": (k,), "means": (k, d), "covariances": (k, d),
                          "precisions_cholesky": (k, d)},
}


def _check_fraction(value: object, name: str, high: float) -> float:
    """``value`` as a float in (0, high); ValueError naming the parameter otherwise."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < high:
        raise ValueError(f"{name} must be a number in (0, {high}), got {value!r}")
    return float(value)


@register_detector("oneclass")
class OneClassDetector(Detector):
    """Features -> standardisation -> Gaussian mixture NLL (fit on reals) -> P(fake).

    Learned: ``scaler_`` (StandardScaler of the reals' features), ``mixture_`` (the
    GaussianMixture), ``calibrator_`` (a ``PlattCalibration`` of the NLL, "platt" or
    "false-alarm", also described by ``calibration_``), ``probe_features_`` (two training
    rows whose scores the bundle keeps), plus the ``threshold_``, ``training_info_`` and
    ``validation_metrics_`` of every Detector.
    """

    known_failure_modes = (
        "It models the real images it was trained on, with their cameras, processing and "
        "compression; real photos from another pipeline, or strongly JPEG-compressed, "
        "resized or denoised, move away from that model and are called fake.",
        "It flags anything unusual, not only generated images: renders, screenshots, scans, "
        "drawings and heavy edits score high as well.",
        "Trained without fakes, its P(fake) is no probability: 0.5 is the cut that calls the "
        "chosen false-alarm rate (default 5%) of held-out reals fake; see its calibration.",
        "Images under 32 px a side (3 scales) cannot be described; of large ones only the "
        "central 512 x 512 pixels are.",
    )
    variant_param = "features"
    needs_fakes = False

    def __init__(
        self,
        features: str = "selfdesc",
        scales: int = 3,
        n_components: int = 2,
        covariance: str = "full",
        reg_covar: float = 0.1,
        holdout: float = 0.2,
        false_alarm_rate: float = 0.05,
        seed: int = 0,
    ):
        self.features = features
        self.scales = scales
        self.n_components = n_components
        self.covariance = covariance
        self.reg_covar = reg_covar
        self.holdout = holdout
        self.false_alarm_rate = false_alarm_rate
        self.seed = seed

    def feature_extractor(self) -> FeatureExtractor:
        """The feature recipe these parameters describe; ValueError if they are invalid."""
        shared = {"scales": self.scales} if "scales" in feature_parameters(self.features) else {}
        return create_features(self.features, **shared)

    @property
    def preprocessing(self) -> dict[str, Any]:
        """Feature recipe, standardisation and the mixture; images are never resized."""
        return {
            **self.feature_extractor().describe(),
            "standardisation": "per-feature mean and variance of the real training images",
            "model": f"Gaussian mixture, {self.n_components} components, {self.covariance} "
                     f"covariance (+{self.reg_covar} on the diagonal), fit on real images only",
            "raw_score": "negative log-likelihood under the mixture",
        }

    def extract_features(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """The mixture's input rows before standardisation, float64 (N, n_features)."""
        return self.feature_extractor()(images)

    def _check_params(self) -> None:
        """Validate the parameters that are not the feature recipe's (checked when built)."""
        if (not isinstance(self.n_components, int) or isinstance(self.n_components, bool)
                or self.n_components < 1):
            raise ValueError(f"n_components must be a positive integer, got {self.n_components!r}")
        if self.covariance not in COVARIANCES:
            raise ValueError(f"covariance must be one of {COVARIANCES}, got {self.covariance!r}")
        _check_fraction(self.reg_covar, "reg_covar", float("inf"))
        _check_fraction(self.holdout, "holdout", 1.0)
        _check_fraction(self.false_alarm_rate, "false_alarm_rate", 0.5)

    def _split_holdout(self, reals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows for the mixture, held-out rows): a seeded ``holdout`` share is held out."""
        order = np.random.default_rng(self.seed).permutation(len(reals))
        n_held = max(2, int(round(self.holdout * len(reals))))
        return reals[order[n_held:]], reals[order[:n_held]]

    def _fit_mixture(self, reals: np.ndarray) -> None:
        """Standardise the real rows and fit the mixture to them."""
        from sklearn.mixture import GaussianMixture  # imported by this kind's use only
        from sklearn.preprocessing import StandardScaler

        needed = 2 * self.n_components
        if len(reals) < needed:
            raise ValueError(
                f"the mixture of {self.n_components} components needs at least {needed} real "
                f"images to fit, got {len(reals)} (after holding some out to set the "
                "threshold); add real images or lower n_components (--set n_components=2)")
        self.scaler_ = StandardScaler().fit(reals)
        self.mixture_ = GaussianMixture(
            n_components=self.n_components, covariance_type=self.covariance,
            reg_covar=self.reg_covar, n_init=2, random_state=self.seed,
        ).fit(self.scaler_.transform(reals))

    def _nll(self, x: np.ndarray) -> np.ndarray:
        """Negative log-likelihood (N,) of feature rows under the mixture."""
        return -self.mixture_.score_samples(self.scaler_.transform(x))

    def _fit(
        self,
        images: Sequence[np.ndarray],
        labels: np.ndarray,
        validation: tuple[Sequence[np.ndarray], np.ndarray] | None,
    ) -> None:
        """Fit the mixture on real training rows; calibrate its NLL on held-out data."""
        self._check_params()
        x = self.extract_features(images)
        reals, fakes = x[labels == 0], x[labels == 1]
        if validation is not None:
            x_val = self.extract_features(validation[0])
            val_reals, val_fakes = x_val[validation[1] == 0], x_val[validation[1] == 1]
        else:
            val_reals = val_fakes = x[:0]
        if len(val_reals):
            held_reals, held_from = val_reals, "validation"
        else:
            reals, held_reals = self._split_holdout(reals)
            held_from = f"a {self.holdout:.0%} hold-out of the training reals"
        held_fakes = val_fakes if len(val_fakes) else fakes
        self._fit_mixture(reals)
        raw_reals = self._nll(held_reals)
        if len(held_fakes):
            raw = np.concatenate([raw_reals, self._nll(held_fakes)])
            labels_held = np.r_[np.zeros(len(raw_reals)), np.ones(len(held_fakes))]
            self.calibrator_ = PlattCalibration.fit(raw, labels_held)
            note = (f"Platt scaling of the NLL on {len(held_reals)} held-out reals (from "
                    f"{held_from}) and {len(held_fakes)} fakes the mixture never saw")
        else:
            self.calibrator_ = PlattCalibration.at_false_alarm(raw_reals, self.false_alarm_rate)
            note = (f"no fake images: P(fake) is no probability; 0.5 is the NLL that "
                    f"{self.false_alarm_rate:.0%} of {len(held_reals)} held-out reals (from "
                    f"{held_from}) exceed, so the threshold 0.5 is a "
                    f"{self.false_alarm_rate:.0%} false-alarm rate on reals like them")
        self.calibration_ = {**self.calibrator_.to_dict(), "mixture_reals": len(reals),
                             "note": note}
        # Two training rows whose scores are saved, so a reload can prove it reproduces them.
        self.probe_features_ = x[[0, -1]]

    def _proba_of_features(self, x: np.ndarray) -> np.ndarray:
        return self.calibrator_(self._nll(x))

    def _predict_proba(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """P(fake) float64 (N,) for validated images."""
        return self._proba_of_features(self.extract_features(images))

    def _arrays(self) -> dict[str, dict[str, np.ndarray]]:
        """Scaler, mixture and the probe rows with their scores."""
        m = self.mixture_
        return {WEIGHTS_FILE: {
            "scaler_mean": self.scaler_.mean_, "scaler_scale": self.scaler_.scale_,
            "weights": m.weights_, "means": m.means_, "covariances": m.covariances_,
            "precisions_cholesky": m.precisions_cholesky_,
            "probe_features": self.probe_features_,
            "probe_proba": self._proba_of_features(self.probe_features_),
        }}

    def _restore(self, folder: Path, arrays: dict[str, dict[str, np.ndarray]]) -> None:
        """Rebuild scaler, mixture and calibration from arrays and detector.json."""
        from sklearn.mixture import GaussianMixture
        from sklearn.preprocessing import StandardScaler

        if WEIGHTS_FILE not in arrays:
            raise BundleError(folder, f"detector.json does not list {WEIGHTS_FILE}")
        w = arrays[WEIGHTS_FILE]
        try:
            self._check_params()
            d = self.feature_extractor().n_features
            self.calibrator_ = PlattCalibration.from_dict(self.calibration_)
        except ValueError as error:
            raise BundleError(folder, f"{WEIGHTS_FILE}: {error}") from None
        expected = {"scaler_mean": (d,), "scaler_scale": (d,), "probe_features": (2, d),
                    "probe_proba": (2,), **_MIXTURE_SHAPES[self.covariance](self.n_components, d)}
        for key, shape in expected.items():
            if (key not in w or w[key].shape != shape or not np.issubdtype(w[key].dtype, np.number)
                    or not np.isfinite(w[key]).all()):
                found = f"{w[key].dtype} {w[key].shape}" if key in w else "nothing"
                raise BundleError(folder, f"{WEIGHTS_FILE}[{key!r}] holds {found}, "
                                          f"expected finite numbers of shape {shape}")
        if (w["scaler_scale"] <= 0).any() or (w["weights"] < 0).any():
            raise BundleError(folder, f"{WEIGHTS_FILE} holds a non-positive scale or a "
                                      "negative mixture weight")
        self.scaler_ = StandardScaler()
        self.scaler_.mean_ = w["scaler_mean"].astype(np.float64)
        self.scaler_.scale_ = w["scaler_scale"].astype(np.float64)
        self.scaler_.var_ = self.scaler_.scale_ ** 2
        self.scaler_.n_features_in_ = d
        self.mixture_ = GaussianMixture(n_components=self.n_components,
                                        covariance_type=self.covariance)
        for key in ("weights", "means", "covariances", "precisions_cholesky"):
            setattr(self.mixture_, f"{key}_", w[key].astype(np.float64))
        self.mixture_.n_features_in_ = d
        self.probe_features_ = w["probe_features"].astype(np.float64)
        if not np.allclose(self._proba_of_features(self.probe_features_), w["probe_proba"],
                           rtol=1e-9, atol=1e-12):
            raise self.incompatible(folder, "the rebuilt model does not reproduce the scores "
                                            "saved with its probe rows")
