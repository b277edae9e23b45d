"""Detection metrics: threshold choice, the evaluation protocol's figures, and a text table.

Conventions everywhere: label 1 = fake, 0 = real; a score is P(fake); an image is called fake
when its score is >= the threshold. Figures that need both classes are None without them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

__all__ = [
    "choose_threshold",
    "binary_metrics",
    "reliability_curve",
    "expected_calibration_error",
    "equal_error_rate",
    "tpr_at_fpr",
    "oracle_accuracy",
    "bootstrap_intervals",
    "format_table",
]

# Rates at which binary_metrics reports the true-positive rate (1% and 5% of reals called fake).
FPR_POINTS = {"tpr_at_fpr_1pct": 0.01, "tpr_at_fpr_5pct": 0.05}
# The figures bootstrap_intervals gives 95% intervals for.
BOOTSTRAP_KEYS = ("ap", "roc_auc", "accuracy")


def _check_labels_scores(
    labels: Sequence[int], scores: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert to (int labels in {0, 1}, float64 finite scores) of equal length."""
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or s.ndim != 1 or len(y) != len(s):
        raise ValueError(
            f"labels and scores must be 1-D of equal length, got shapes {y.shape} and {s.shape}"
        )
    if len(y) == 0:
        raise ValueError("labels and scores are empty")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"labels must be 0 (real) or 1 (fake), got values {np.unique(y)[:10]}")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinite values")
    return y.astype(np.int64), s


def _has_both_classes(y: np.ndarray) -> bool:
    return 0 < int(y.sum()) < len(y)


def _cut_counts(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every distinct way to cut the sorted scores: (distinct scores, reals below, fakes above).

    Cut k calls fake every score above values[k - 1] (cut 0 calls everything fake), so the two
    count arrays have one entry more than ``values``.
    """
    values, inverse = np.unique(s, return_inverse=True)
    fakes_at = np.bincount(inverse, weights=y, minlength=len(values))
    reals_at = np.bincount(inverse, weights=1 - y, minlength=len(values))
    reals_below = np.concatenate([[0.0], np.cumsum(reals_at)])
    fakes_above = y.sum() - np.concatenate([[0.0], np.cumsum(fakes_at)])
    return values, reals_below, fakes_above


def choose_threshold(labels: Sequence[int], scores: Sequence[float]) -> float:
    """Threshold that maximises balanced accuracy on (validation) data.

    Candidates sit at midpoints between adjacent distinct scores, plus one below and one above
    all scores, so the threshold never coincides with an observed score. Among equally good
    candidates the one closest to 0.5 wins (the natural cut for a probability). With only one
    class present there is nothing to balance and 0.5 is returned.
    """
    y, s = _check_labels_scores(labels, scores)
    if not _has_both_classes(y):
        return 0.5
    values, reals_below, fakes_above = _cut_counts(y, s)
    n_fake = y.sum()
    balanced = 0.5 * (reals_below / (len(y) - n_fake) + fakes_above / n_fake)

    gap = np.diff(values).min() if len(values) > 1 else 1.0
    candidates = np.concatenate(
        [[values[0] - gap / 2], (values[:-1] + values[1:]) / 2, [values[-1] + gap / 2]]
    )
    best = np.flatnonzero(balanced == balanced.max())
    return float(candidates[best[np.argmin(np.abs(candidates[best] - 0.5))]])


def oracle_accuracy(labels: Sequence[int], scores: Sequence[float]) -> float:
    """Best plain accuracy over all thresholds, chosen on these very labels.

    An "oracle" figure (UnivFD): it tells how separable the scores are, not how a deployed
    detector with a fixed threshold performs. Report it only under that name.
    """
    y, s = _check_labels_scores(labels, scores)
    _, reals_below, fakes_above = _cut_counts(y, s)
    return float(np.max(reals_below + fakes_above) / len(y))


def reliability_curve(
    labels: Sequence[int], scores: Sequence[float], n_bins: int = 15
) -> dict[str, np.ndarray]:
    """Scores binned into ``n_bins`` equal-width bins of [0, 1] (a score of 1 joins the last bin).

    Returns arrays of length n_bins: ``edges`` (n_bins + 1), ``count``, ``mean_score`` (the
    mean P(fake) in the bin) and ``fraction_fake`` (the share of fakes); the last two are NaN
    in empty bins. A calibrated detector has mean_score ~ fraction_fake in every bin.
    """
    y, s = _check_labels_scores(labels, scores)
    if not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    if s.min() < 0 or s.max() > 1:
        raise ValueError("reliability needs probabilities in [0, 1]")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.minimum((s * n_bins).astype(np.int64), n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_score = np.bincount(bins, weights=s, minlength=n_bins) / count
        fraction_fake = np.bincount(bins, weights=y, minlength=n_bins) / count
    return {"edges": edges, "count": count, "mean_score": mean_score,
            "fraction_fake": fraction_fake}


def expected_calibration_error(
    labels: Sequence[int], scores: Sequence[float], n_bins: int = 15
) -> float:
    """ECE: the count-weighted mean of |fraction of fakes - mean P(fake)| over equal-width bins.

    0 for perfectly calibrated scores; an overconfident detector (scores near 0 and 1 that are
    often wrong) scores high. Scores must be probabilities in [0, 1].
    """
    curve = reliability_curve(labels, scores, n_bins)
    filled = curve["count"] > 0
    gaps = np.abs(curve["fraction_fake"][filled] - curve["mean_score"][filled])
    return float(np.sum(curve["count"][filled] * gaps) / curve["count"].sum())


def _full_roc(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) at every distinct threshold (no points dropped, so minima are exact)."""
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    return fpr, tpr


def equal_error_rate(labels: Sequence[int], scores: Sequence[float]) -> float:
    """EER: the FPR at the ROC point where |FNR - FPR| is smallest (DeepfakeBench's convention).

    Raises ValueError unless both classes are present.
    """
    y, s = _check_labels_scores(labels, scores)
    if not _has_both_classes(y):
        raise ValueError("the equal error rate needs both real and fake labels")
    fpr, tpr = _full_roc(y, s)
    return float(fpr[np.argmin(np.abs((1 - tpr) - fpr))])


def tpr_at_fpr(labels: Sequence[int], scores: Sequence[float], max_fpr: float) -> float:
    """Highest TPR (share of fakes caught) at a threshold whose FPR is at most ``max_fpr``."""
    y, s = _check_labels_scores(labels, scores)
    if not _has_both_classes(y):
        raise ValueError("the TPR at a given FPR needs both real and fake labels")
    if not 0 <= max_fpr <= 1:
        raise ValueError(f"max_fpr must lie in [0, 1], got {max_fpr}")
    fpr, tpr = _full_roc(y, s)
    return float(tpr[fpr <= max_fpr].max())


def binary_metrics(labels: Sequence[int], scores: Sequence[float], threshold: float) -> dict:
    """Metrics of P(fake) scores against labels at a threshold, as a JSON-ready dict.

    Keys: n, n_real, n_fake; ap, roc_auc, eer, tpr_at_fpr_1pct, tpr_at_fpr_5pct (None unless
    both classes are present); accuracy, real_accuracy (reals scored < threshold; None without
    reals), fake_accuracy (fakes scored >= threshold; None without fakes), balanced_accuracy
    (mean of the class accuracies that exist), threshold; oracle_accuracy (the best accuracy
    of any threshold chosen on these labels: not a deployable figure); ece (None unless the
    scores lie in [0, 1]).
    """
    y, s = _check_labels_scores(labels, scores)
    predicted = (s >= threshold).astype(np.int64)
    is_fake = y == 1
    n_fake = int(is_fake.sum())
    n_real = len(y) - n_fake
    both = _has_both_classes(y)

    real_accuracy = float(np.mean(predicted[~is_fake] == 0)) if n_real else None
    fake_accuracy = float(np.mean(predicted[is_fake] == 1)) if n_fake else None
    class_accuracies = [a for a in (real_accuracy, fake_accuracy) if a is not None]
    probabilities = s.min() >= 0 and s.max() <= 1
    return {
        "n": len(y),
        "n_real": n_real,
        "n_fake": n_fake,
        "ap": float(average_precision_score(y, s)) if both else None,
        "roc_auc": float(roc_auc_score(y, s)) if both else None,
        "eer": equal_error_rate(y, s) if both else None,
        **{key: tpr_at_fpr(y, s, rate) if both else None for key, rate in FPR_POINTS.items()},
        "accuracy": float(np.mean(predicted == y)),
        "real_accuracy": real_accuracy,
        "fake_accuracy": fake_accuracy,
        "balanced_accuracy": float(np.mean(class_accuracies)),
        "threshold": float(threshold),
        "oracle_accuracy": oracle_accuracy(y, s),
        "ece": expected_calibration_error(y, s) if probabilities else None,
    }


def _resampled_ranking_metrics(
    counts: np.ndarray, y: np.ndarray, group_starts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """AP and ROC-AUC (B,) of B resamples given as per-sample multiplicities ``counts`` (B, N).

    Samples are sorted by descending score and ``group_starts`` marks the first sample of each
    run of equal scores, so tied scores act as one threshold exactly as in scikit-learn.
    Resamples that lack a class get NaN.
    """
    fakes = np.add.reduceat(counts * y, group_starts, axis=1)
    reals = np.add.reduceat(counts * (1 - y), group_starts, axis=1)
    n_fake = fakes.sum(axis=1, keepdims=True)
    n_real = reals.sum(axis=1, keepdims=True)
    tp, fp = np.cumsum(fakes, axis=1), np.cumsum(reals, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
        ap = (fakes * precision).sum(axis=1) / n_fake[:, 0]
        # A fake beats every real below its score and ties count half.
        wins = (fakes * (n_real - fp) + 0.5 * fakes * reals).sum(axis=1)
        auc = wins / (n_fake[:, 0] * n_real[:, 0])
    valid = (n_fake[:, 0] > 0) & (n_real[:, 0] > 0)
    return np.where(valid, ap, np.nan), np.where(valid, auc, np.nan)


def bootstrap_intervals(
    labels: Sequence[int],
    scores: Sequence[float],
    threshold: float,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    chunk: int = 100,
) -> dict[str, list[float] | None]:
    """Percentile bootstrap intervals [low, high] of AP, ROC-AUC and accuracy at ``threshold``.

    Each resample draws len(labels) images with replacement (seeded, so reruns agree); the
    resamples are evaluated together as multiplicity matrices, ``chunk`` at a time. Resamples
    missing a class are left out of the AP and AUC intervals; a figure with no valid resample
    gets None.
    """
    y, s = _check_labels_scores(labels, scores)
    if n_resamples < 1 or not 0 < level < 1:
        raise ValueError(f"need n_resamples >= 1 and 0 < level < 1, got {n_resamples}, {level}")
    order = np.argsort(-s, kind="stable")
    y_sorted, s_sorted = y[order], s[order]
    group_starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])
    correct = ((s_sorted >= threshold).astype(np.int64) == y_sorted).astype(np.float64)

    rng = np.random.default_rng(seed)
    n = len(y)
    figures: dict[str, list[np.ndarray]] = {key: [] for key in BOOTSTRAP_KEYS}
    for start in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - start)
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=size).astype(np.float64)
        ap, auc = _resampled_ranking_metrics(counts, y_sorted, group_starts)
        figures["ap"].append(ap)
        figures["roc_auc"].append(auc)
        figures["accuracy"].append(counts @ correct / n)

    tail = 100 * (1 - level) / 2
    out: dict[str, list[float] | None] = {}
    for key, parts in figures.items():
        values = np.concatenate(parts)
        values = values[np.isfinite(values)]
        bounds = np.percentile(values, [tail, 100 - tail]) if len(values) else None
        out[key] = None if bounds is None else [float(v) for v in bounds]
    return out


def _cell(value: object) -> str:
    """Table text of one value: floats with 3 decimals, None (or missing) as '-'."""
    if value is None:
        return "-"
    if isinstance(value, (float, np.floating)):
        return f"{value:.3f}"
    return str(value)


def format_table(rows: list[dict], columns: list[str]) -> str:
    """Plain aligned text table of ``rows`` restricted to ``columns``, with a header line.

    Columns of numbers (or None) are right-aligned, others left-aligned; a key missing from a
    row shows as '-'.
    """
    cells = [[_cell(row.get(column)) for column in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    numeric = [
        all(isinstance(row.get(c), (int, float, np.number, type(None))) for row in rows)
        for c in columns
    ]

    def line(values: list[str]) -> str:
        return "  ".join(
            v.rjust(w) if right else v.ljust(w) for v, w, right in zip(values, widths, numeric)
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(columns), rule] + [line(r) for r in cells])
