"""Classifiers on feature rows: scikit-learn pipelines to fit, then a ``Scorer`` to keep and score.

Each classifier is fit as a scikit-learn ``Pipeline`` (StandardScaler + estimator) and kept as
a ``Scorer`` whose ``decision`` is the pipeline's ``decision_function``; a reloaded detector
gives bit-identical scores.

* ``logreg``: class-balanced logistic regression (raw score = logit);
* ``svm``: class-balanced linear SVM, ``LinearSVC`` (raw score = margin). Linear models are
  kept as their public ``mean_``/``scale_``/``coef_``/``intercept_`` in ``.npz`` arrays;
* ``gbm``: ``HistGradientBoostingClassifier`` (raw score = summed leaf values), kept as the
  fitted pipeline itself, which a bundle saves as a ``.skops`` file: skops rebuilds it
  without unpickling, and loading refuses any type beyond its defaults and
  ``TRUSTED_TYPES``. It is not class-weighted: sample weights make scikit-learn 1.9 bin each
  feature with weighted percentiles, 100x slower; the threshold chosen on validation
  balances the classes instead.

The StandardScaler's mean and variance are the running (Chan/Welford) estimate scikit-learn
computes; for DCT features this is Frank et al.'s per-coefficient standardisation.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

__all__ = ["CLASSIFIERS", "ESTIMATOR_CLASSIFIERS", "TRUSTED_TYPES", "Scorer", "LinearScorer",
           "BoostedTreesScorer", "fit_scorer", "scorer_from_arrays", "scorer_from_estimator"]

# The scikit-learn estimator ("module:class") and default parameters of each classifier name.
# Named, not imported: scoring a linear model needs only its arrays, so a scan imports no
# estimator module (scikit-learn's base, under every Detector, is imported anyway).
CLASSIFIERS: dict[str, tuple[str, dict[str, Any]]] = {
    "logreg": ("sklearn.linear_model:LogisticRegression",
               {"C": 1.0, "max_iter": 1000, "class_weight": "balanced"}),
    "svm": ("sklearn.svm:LinearSVC", {"C": 0.1, "max_iter": 10000, "class_weight": "balanced"}),
    "gbm": ("sklearn.ensemble:HistGradientBoostingClassifier",
            {"max_iter": 100, "learning_rate": 0.1, "max_leaf_nodes": 15,
             "l2_regularization": 1.0, "early_stopping": False}),
}


# Classifiers kept as a fitted scikit-learn pipeline (a .skops file), not as arrays.
ESTIMATOR_CLASSIFIERS = ("gbm",)
# The types of a fitted gbm pipeline that skops does not trust by default: a .skops file
# naming any other is refused before anything is built.
TRUSTED_TYPES = ("sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",)


class Scorer(Protocol):
    """A fitted classifier: raw decision scores (higher = more likely fake)."""

    def decision(self, x: np.ndarray) -> np.ndarray: ...


def _standardise(x: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return (np.asarray(x, dtype=np.float64) - mean) / scale


@dataclass(frozen=True)
class LinearScorer:
    """decision = ((x - mean) / scale) @ coef + intercept."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float

    def decision(self, x: np.ndarray) -> np.ndarray:
        # Row by row, not BLAS: a matrix-vector product sums in an order that depends on the
        # number of rows, and an image's score must not depend on what it is scored with.
        return np.sum(_standardise(x, self.mean, self.scale) * self.coef, axis=1) + self.intercept

    def arrays(self) -> dict[str, np.ndarray]:
        return {"scaler_mean": self.mean, "scaler_scale": self.scale, "coef": self.coef,
                "intercept": np.asarray(self.intercept)}


@dataclass(frozen=True)
class BoostedTreesScorer:
    """The fitted scikit-learn pipeline itself: decision = its ``decision_function``.

    Each row's score is its trees' leaf values summed in tree order, so it does not depend on
    the rows scored with it. Saved as a ``.skops`` file (``Detector._estimators``).
    """

    pipeline: Pipeline

    def decision(self, x: np.ndarray) -> np.ndarray:
        return self.pipeline.decision_function(np.asarray(x, dtype=np.float64))


def fit_scorer(name: str, x: np.ndarray, y: np.ndarray, params: dict[str, Any] | None = None,
               seed: int = 0) -> Scorer:
    """Fit classifier ``name`` (with ``params`` over its defaults) and keep it as a Scorer.

    Raises ValueError for an unknown name or parameter, RuntimeError if a linear model's
    arrays do not reproduce the pipeline's decision function (an incompatible scikit-learn).
    """
    if name not in CLASSIFIERS:
        raise ValueError(f"unknown classifier {name!r}; known: {', '.join(CLASSIFIERS)}")
    import sklearn
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    where, defaults = CLASSIFIERS[name]
    module, class_name = where.split(":")
    estimator = getattr(importlib.import_module(module), class_name)
    try:
        model = estimator(**{**defaults, **(params or {}), "random_state": seed})
    except TypeError as error:
        raise ValueError(f"bad parameters for classifier {name!r}: {error}") from None
    # One OpenMP thread: on small feature tables the boosting threads mostly wait for each
    # other, and on a busy 2-core machine they made a 0.3 s fit take 20 s.
    with threadpool_limits(limits=1, user_api="openmp"):
        pipeline = Pipeline([("scaler", StandardScaler()), ("classifier", model)]).fit(x, y)
        expected = pipeline.decision_function(x)
    if name in ESTIMATOR_CLASSIFIERS:
        return BoostedTreesScorer(pipeline)
    scaler = pipeline.named_steps["scaler"]
    scorer = LinearScorer(scaler.mean_.copy(), scaler.scale_.copy(),
                          model.coef_[0].astype(np.float64), float(model.intercept_[0]))
    if not np.allclose(scorer.decision(x), expected, rtol=1e-7, atol=1e-7):
        raise RuntimeError(f"exporting the fitted {name} did not reproduce its scores "
                           f"(scikit-learn {sklearn.__version__} may have changed its internals)")
    return scorer


_LINEAR_KEYS = ("scaler_mean", "scaler_scale", "coef", "intercept")


def _require(arrays: dict[str, np.ndarray], keys: tuple[str, ...]) -> None:
    for key in keys:
        if key not in arrays:
            raise ValueError(f"lacks array {key!r}")
        if not (np.issubdtype(arrays[key].dtype, np.number) or arrays[key].dtype == bool):
            raise ValueError(f"array {key!r} holds {arrays[key].dtype}, not numbers")


def _vector(arrays: dict[str, np.ndarray], key: str, length: int | None = None) -> np.ndarray:
    value = arrays[key]
    if value.ndim != 1 or (length is not None and len(value) != length):
        want = "a 1-D array" if length is None else f"shape ({length},)"
        raise ValueError(f"array {key!r} has shape {value.shape}, expected {want}")
    return value


def scorer_from_arrays(name: str, arrays: dict[str, np.ndarray], n_features: int) -> Scorer:
    """Rebuild the LinearScorer of linear classifier ``name`` from ``LinearScorer.arrays()``.

    Checks names, dtypes and shapes; raises ValueError saying what is wrong.
    """
    if name not in CLASSIFIERS or name in ESTIMATOR_CLASSIFIERS:
        raise ValueError(f"{name!r} is not a linear classifier")
    _require(arrays, _LINEAR_KEYS)
    mean = _vector(arrays, "scaler_mean", n_features).astype(np.float64)
    scale = _vector(arrays, "scaler_scale", n_features).astype(np.float64)
    if not (np.isfinite(mean).all() and np.isfinite(scale).all() and (scale > 0).all()):
        raise ValueError("scaler mean and scale must be finite with a positive scale")
    if arrays["intercept"].shape != ():
        raise ValueError(f"array 'intercept' has shape {arrays['intercept'].shape}, expected ()")
    return LinearScorer(mean, scale, _vector(arrays, "coef", n_features).astype(np.float64),
                        float(arrays["intercept"]))


def scorer_from_estimator(name: str, estimator: object, n_features: int) -> Scorer:
    """The Scorer of classifier ``name`` from its fitted pipeline, loaded from a ``.skops``
    file; ValueError unless it is the scaler and classifier ``fit_scorer`` builds, fit on
    ``n_features`` features."""
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    if name not in ESTIMATOR_CLASSIFIERS:
        raise ValueError(f"{name!r} is kept as arrays, not as an estimator")
    module, class_name = CLASSIFIERS[name][0].split(":")
    expected = getattr(importlib.import_module(module), class_name)
    steps = estimator.steps if isinstance(estimator, Pipeline) else []
    if ([step for step, _ in steps] != ["scaler", "classifier"]
            or type(steps[0][1]) is not StandardScaler or type(steps[1][1]) is not expected):
        raise ValueError(f"holds {type(estimator).__name__}, not a fitted StandardScaler + "
                         f"{class_name} pipeline")
    if getattr(estimator, "n_features_in_", None) != n_features:
        raise ValueError(f"the pipeline takes {getattr(estimator, 'n_features_in_', None)} "
                         f"features, these parameters give {n_features}")
    return BoostedTreesScorer(estimator)
