"""Detection metrics: threshold choice, per-class accuracies, AP/ROC-AUC and a text table.

Conventions everywhere: label 1 = fake, 0 = real; a score is P(fake); an image is called fake
when its score is >= the threshold.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

__all__ = ["choose_threshold", "binary_metrics", "format_table"]


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


def choose_threshold(labels: Sequence[int], scores: Sequence[float]) -> float:
    """Threshold that maximises balanced accuracy on (validation) data.

    Candidates sit at midpoints between adjacent distinct scores, plus one below and one above
    all scores, so the threshold never coincides with an observed score. Among equally good
    candidates the one closest to 0.5 wins (the natural cut for a probability). With only one
    class present there is nothing to balance and 0.5 is returned.
    """
    y, s = _check_labels_scores(labels, scores)
    n_fake = int(y.sum())
    n_real = len(y) - n_fake
    if n_fake == 0 or n_real == 0:
        return 0.5

    values, inverse = np.unique(s, return_inverse=True)
    fakes_at = np.bincount(inverse, weights=y, minlength=len(values))
    reals_at = np.bincount(inverse, weights=1 - y, minlength=len(values))
    # Candidate k calls fake every score above values[k - 1]; k = 0 calls everything fake.
    reals_below = np.concatenate([[0.0], np.cumsum(reals_at)])
    fakes_above = n_fake - np.concatenate([[0.0], np.cumsum(fakes_at)])
    balanced = 0.5 * (reals_below / n_real + fakes_above / n_fake)

    gap = np.diff(values).min() if len(values) > 1 else 1.0
    candidates = np.concatenate(
        [[values[0] - gap / 2], (values[:-1] + values[1:]) / 2, [values[-1] + gap / 2]]
    )
    best = np.flatnonzero(balanced == balanced.max())
    return float(candidates[best[np.argmin(np.abs(candidates[best] - 0.5))]])


def binary_metrics(labels: Sequence[int], scores: Sequence[float], threshold: float) -> dict:
    """Metrics of P(fake) scores against labels at a threshold, as a JSON-ready dict.

    Keys: n, n_real, n_fake, ap, roc_auc (None unless both classes are present), accuracy,
    real_accuracy (reals scored < threshold; None without reals), fake_accuracy (fakes scored
    >= threshold; None without fakes), balanced_accuracy (mean of the class accuracies that
    exist) and threshold.
    """
    y, s = _check_labels_scores(labels, scores)
    predicted = (s >= threshold).astype(np.int64)
    is_fake = y == 1
    n_fake = int(is_fake.sum())
    n_real = len(y) - n_fake
    both = n_fake > 0 and n_real > 0

    real_accuracy = float(np.mean(predicted[~is_fake] == 0)) if n_real else None
    fake_accuracy = float(np.mean(predicted[is_fake] == 1)) if n_fake else None
    class_accuracies = [a for a in (real_accuracy, fake_accuracy) if a is not None]
    return {
        "n": len(y),
        "n_real": n_real,
        "n_fake": n_fake,
        "ap": float(average_precision_score(y, s)) if both else None,
        "roc_auc": float(roc_auc_score(y, s)) if both else None,
        "accuracy": float(np.mean(predicted == y)),
        "real_accuracy": real_accuracy,
        "fake_accuracy": fake_accuracy,
        "balanced_accuracy": float(np.mean(class_accuracies)),
        "threshold": float(threshold),
    }


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
