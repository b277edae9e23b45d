"""Platt scaling: raw classifier scores -> calibrated P(fake) with two numbers fit on validation.

A classifier's raw score (a logistic regression's logit, a linear SVM's margin, boosted trees'
summed leaf values) ranks images well but is no probability; users of published detectors
complain that accuracy at 0.5 is far below AP (CNNDetection #2). Platt (1999) fits
P(fake) = sigmoid(a * raw + b) on held-out data, with his smoothed targets so that separable
validation data still gives finite a and b.

Without any fake image there is nothing to fit Platt's sigmoid to; ``at_false_alarm`` then
places the same sigmoid by held-out real scores alone, so that 0.5 marks a chosen false-alarm
rate on reals (a ranking score with a known cut, not a probability).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import expit, log_expit

__all__ = ["METHODS", "PlattCalibration"]

METHODS = ("platt", "false-alarm", "none")


@dataclass(frozen=True)
class PlattCalibration:
    """P(fake) = sigmoid(a * raw + b). ``method`` is "platt" when fit on both classes,
    "false-alarm" when placed by real scores alone, "none" for a=1, b=0."""

    a: float = 1.0
    b: float = 0.0
    method: str = "none"
    n: int = 0

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        """Calibrated P(fake), float64, for raw scores of any shape."""
        return expit(self.a * np.asarray(raw, dtype=np.float64) + self.b)

    @classmethod
    def fit(cls, raw: np.ndarray, labels: np.ndarray) -> PlattCalibration:
        """Fit a and b by minimising the log loss against Platt's smoothed 0/1 targets."""
        from scipy.optimize import minimize  # fitting only: loading and scoring skip it

        raw = np.asarray(raw, dtype=np.float64)
        labels = np.asarray(labels)
        n_fake = int(labels.sum())
        n_real = len(labels) - n_fake
        if n_fake == 0 or n_real == 0:
            raise ValueError("calibration needs real and fake validation images")
        target = np.where(labels == 1, (n_fake + 1) / (n_fake + 2), 1 / (n_real + 2))
        # Standardise the raw scores so the optimiser works at unit scale whatever the model.
        centre, spread = raw.mean(), raw.std() or 1.0
        z = (raw - centre) / spread

        def loss(ab: np.ndarray) -> tuple[float, np.ndarray]:
            logit = ab[0] * z + ab[1]
            value = -np.sum(target * log_expit(logit) + (1 - target) * log_expit(-logit))
            residual = expit(logit) - target
            return float(value), np.array([residual @ z, residual.sum()])

        a, b = minimize(loss, np.zeros(2), jac=True, method="BFGS").x
        return cls(a=float(a / spread), b=float(b - a * centre / spread), method="platt",
                   n=len(labels))

    @classmethod
    def at_false_alarm(cls, raw_reals: np.ndarray, rate: float) -> PlattCalibration:
        """From raw scores of held-out real images only: P(fake) = 0.5 at the score that a
        fraction ``rate`` of them exceed, and 0.1 at their median.

        So a threshold of 0.5 calls about ``rate`` of such reals fake; above it the values
        rank how unusual an image is, but they are not probabilities (no fake was seen).
        """
        raw = np.asarray(raw_reals, dtype=np.float64)
        if not 0 < rate < 0.5:
            raise ValueError(f"false-alarm rate must lie in (0, 0.5), got {rate!r}")
        if len(raw) < 2:
            raise ValueError(f"placing the cut at a false-alarm rate needs at least 2 held-out "
                             f"real images, got {len(raw)}")
        cut, median = np.quantile(raw, [1 - rate, 0.5])
        spread = cut - median if cut > median else (raw.std() or 1.0)
        a = np.log(9.0) / spread  # sigmoid(log 9) = 0.9: the median real sits at 0.1
        return cls(a=float(a), b=float(-a * cut), method="false-alarm", n=len(raw))

    def to_dict(self) -> dict[str, Any]:
        """The calibration as JSON-ready data for detector.json."""
        return {"method": self.method, "a": self.a, "b": self.b, "n_val": self.n,
                "formula": "P(fake) = 1 / (1 + exp(-(a * raw + b)))"}

    @classmethod
    def from_dict(cls, data: object) -> PlattCalibration:
        """Rebuild from ``to_dict`` output; ValueError if it is not one."""
        if not isinstance(data, Mapping) or data.get("method") not in METHODS:
            raise ValueError(f"calibration must name a method of {METHODS}, got {data!r}")
        a, b, n = data.get("a"), data.get("b"), data.get("n_val", 0)
        numbers = [v for v in (a, b) if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if len(numbers) != 2 or not np.isfinite(numbers).all():
            raise ValueError(f"calibration a and b must be finite numbers, got {a!r}, {b!r}")
        if not isinstance(n, int) or isinstance(n, bool):
            raise ValueError(f"calibration n_val must be an integer, got {n!r}")
        return cls(a=float(a), b=float(b), method=data["method"], n=n)
