"""Classifiers on feature rows: scikit-learn pipelines to fit, plain arrays to keep and score.

Each classifier is fit as a scikit-learn ``Pipeline`` (StandardScaler + estimator), then
exported to a ``Scorer``: numpy arrays and a vectorised ``decision`` that reproduces the
pipeline's ``decision_function``. Only the scorer is kept and saved, so a bundle holds plain
``.npz`` arrays (no pickle, no skops) and a reloaded detector gives bit-identical scores.

* ``logreg``: class-balanced logistic regression (raw score = logit);
* ``svm``: class-balanced linear SVM, ``LinearSVC`` (raw score = margin);
* ``gbm``: ``HistGradientBoostingClassifier`` (raw score = summed leaf values), exported from
  its fitted trees' node arrays and evaluated tree-parallel. It is not class-weighted: sample
  weights make scikit-learn 1.9 bin each feature with weighted percentiles, 100x slower; the
  threshold chosen on validation balances the classes instead.

The StandardScaler's mean and variance are the running (Chan/Welford) estimate scikit-learn
computes; for DCT features this is Frank et al.'s per-coefficient standardisation.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from sklearn.ensemble import HistGradientBoostingClassifier

__all__ = ["CLASSIFIERS", "Scorer", "LinearScorer", "TreeScorer", "fit_scorer",
           "scorer_from_arrays"]

# The scikit-learn estimator ("module:class") and default parameters of each classifier name.
# Named, not imported: scoring needs only the exported arrays, and importing scikit-learn
# would add over a second to every scan's start-up.
CLASSIFIERS: dict[str, tuple[str, dict[str, Any]]] = {
    "logreg": ("sklearn.linear_model:LogisticRegression",
               {"C": 1.0, "max_iter": 1000, "class_weight": "balanced"}),
    "svm": ("sklearn.svm:LinearSVC", {"C": 0.1, "max_iter": 10000, "class_weight": "balanced"}),
    "gbm": ("sklearn.ensemble:HistGradientBoostingClassifier",
            {"max_iter": 100, "learning_rate": 0.1, "max_leaf_nodes": 15,
             "l2_regularization": 1.0, "early_stopping": False}),
}


class Scorer(Protocol):
    """A fitted classifier as arrays: raw decision scores (higher = more likely fake)."""

    def decision(self, x: np.ndarray) -> np.ndarray: ...

    def arrays(self) -> dict[str, np.ndarray]: ...


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
class TreeScorer:
    """Boosted trees as flat node arrays: decision = baseline + sum of each tree's leaf value.

    Node ``i`` (of all trees, concatenated) splits on ``feature[i]``: values <= ``threshold[i]``
    go to ``left[i]``, larger ones to ``right[i]``, NaN to the side ``missing_left[i]`` says;
    ``roots`` holds each tree's first node. Children always follow their parent, so a walk
    ends within ``max_steps`` moves.
    """

    mean: np.ndarray
    scale: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    missing_left: np.ndarray
    left: np.ndarray
    right: np.ndarray
    is_leaf: np.ndarray
    value: np.ndarray
    roots: np.ndarray
    baseline: float

    def decision(self, x: np.ndarray) -> np.ndarray:
        z = _standardise(x, self.mean, self.scale)
        rows = np.arange(len(z))[:, None]
        node = np.broadcast_to(self.roots, (len(z), len(self.roots))).copy()
        while True:
            inner = ~self.is_leaf[node]
            if not inner.any():
                break
            values = z[rows, self.feature[node]]
            go_left = np.where(np.isnan(values), self.missing_left[node],
                               values <= self.threshold[node])
            node = np.where(inner, np.where(go_left, self.left[node], self.right[node]), node)
        return self.baseline + self.value[node].sum(axis=1)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"scaler_mean": self.mean, "scaler_scale": self.scale,
                "tree_feature": self.feature, "tree_threshold": self.threshold,
                "tree_missing_left": self.missing_left, "tree_left": self.left,
                "tree_right": self.right, "tree_is_leaf": self.is_leaf,
                "tree_value": self.value, "tree_roots": self.roots,
                "baseline": np.asarray(self.baseline)}


def _export_trees(model: HistGradientBoostingClassifier, mean: np.ndarray,
                  scale: np.ndarray) -> TreeScorer:
    """Flatten the fitted trees' node arrays (numeric splits only; we have no categoricals)."""
    nodes = [tree.nodes for iteration in model._predictors for tree in iteration]
    if any(n["is_categorical"].any() for n in nodes):
        raise RuntimeError("categorical splits cannot be exported")
    sizes = np.array([len(n) for n in nodes])
    roots = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    offsets = np.repeat(roots, sizes)
    flat = np.concatenate(nodes)
    leaf = flat["is_leaf"].astype(bool)
    return TreeScorer(
        mean=mean, scale=scale,
        feature=np.where(leaf, 0, flat["feature_idx"]).astype(np.int64),
        threshold=flat["num_threshold"].astype(np.float64),
        missing_left=flat["missing_go_to_left"].astype(bool),
        left=np.where(leaf, 0, flat["left"].astype(np.int64) + offsets),
        right=np.where(leaf, 0, flat["right"].astype(np.int64) + offsets),
        is_leaf=leaf, value=flat["value"].astype(np.float64), roots=roots,
        baseline=float(np.ravel(model._baseline_prediction)[0]),
    )


def fit_scorer(name: str, x: np.ndarray, y: np.ndarray, params: dict[str, Any] | None = None,
               seed: int = 0) -> Scorer:
    """Fit classifier ``name`` (with ``params`` over its defaults) and export it to a Scorer.

    Raises ValueError for an unknown name or parameter, RuntimeError if the export does not
    reproduce the pipeline's decision function (an incompatible scikit-learn).
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
    scaler = pipeline.named_steps["scaler"]
    mean, scale = scaler.mean_.copy(), scaler.scale_.copy()
    if name == "gbm":
        scorer: Scorer = _export_trees(model, mean, scale)
    else:
        scorer = LinearScorer(mean, scale, model.coef_[0].astype(np.float64),
                              float(model.intercept_[0]))
    if not np.allclose(scorer.decision(x), expected, rtol=1e-7, atol=1e-7):
        raise RuntimeError(f"exporting the fitted {name} did not reproduce its scores "
                           f"(scikit-learn {sklearn.__version__} may have changed its internals)")
    return scorer


_LINEAR_KEYS = ("scaler_mean", "scaler_scale", "coef", "intercept")
_TREE_KEYS = ("scaler_mean", "scaler_scale", "tree_feature", "tree_threshold",
              "tree_missing_left", "tree_left", "tree_right", "tree_is_leaf", "tree_value",
              "tree_roots", "baseline")


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
    """Rebuild the Scorer of classifier ``name`` from ``Scorer.arrays()`` output.

    Checks names, dtypes, shapes and that tree walks stay in bounds and always move forward;
    raises ValueError saying what is wrong.
    """
    if name not in CLASSIFIERS:
        raise ValueError(f"unknown classifier {name!r}")
    keys = _TREE_KEYS if name == "gbm" else _LINEAR_KEYS
    _require(arrays, keys)
    mean = _vector(arrays, "scaler_mean", n_features).astype(np.float64)
    scale = _vector(arrays, "scaler_scale", n_features).astype(np.float64)
    if not (np.isfinite(mean).all() and np.isfinite(scale).all() and (scale > 0).all()):
        raise ValueError("scaler mean and scale must be finite with a positive scale")
    if name != "gbm":
        if arrays["intercept"].shape != ():
            raise ValueError(f"array 'intercept' has shape {arrays['intercept'].shape}, "
                             "expected ()")
        return LinearScorer(mean, scale, _vector(arrays, "coef", n_features).astype(np.float64),
                            float(arrays["intercept"]))

    n_nodes = len(_vector(arrays, "tree_value"))
    columns = {key: _vector(arrays, key, n_nodes) for key in _TREE_KEYS[2:-2]}
    roots = _vector(arrays, "tree_roots").astype(np.int64)
    is_leaf = columns["tree_is_leaf"].astype(bool)
    feature = columns["tree_feature"].astype(np.int64)
    left, right = columns["tree_left"].astype(np.int64), columns["tree_right"].astype(np.int64)
    inner = np.flatnonzero(~is_leaf)
    if (len(roots) == 0 or roots.min() < 0 or roots.max() >= n_nodes
            or (feature[inner] < 0).any() or (feature[inner] >= n_features).any()
            or (left[inner] <= inner).any() or (right[inner] <= inner).any()
            or (left[inner] >= n_nodes).any() or (right[inner] >= n_nodes).any()):
        raise ValueError("tree node arrays point outside the trees or backwards")
    if arrays["baseline"].shape != ():
        raise ValueError(f"array 'baseline' has shape {arrays['baseline'].shape}, expected ()")
    return TreeScorer(mean, scale, feature, columns["tree_threshold"].astype(np.float64),
                      columns["tree_missing_left"].astype(bool), left, right, is_leaf,
                      columns["tree_value"].astype(np.float64), roots,
                      float(arrays["baseline"]))
