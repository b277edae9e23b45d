"""Metrics agree with scikit-learn, survive one-class input, and pick sensible thresholds."""

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    roc_auc_score,
)

from forensics.metrics import binary_metrics, choose_threshold, format_table

LABELS = [0, 0, 0, 0, 1, 1, 1, 0, 1, 1]
SCORES = [0.1, 0.4, 0.35, 0.8, 0.7, 0.2, 0.9, 0.6, 0.65, 0.3]


def test_binary_metrics_agree_with_sklearn():
    m = binary_metrics(LABELS, SCORES, threshold=0.5)
    predicted = (np.array(SCORES) >= 0.5).astype(int)
    assert m["n"] == 10 and m["n_real"] == 5 and m["n_fake"] == 5
    assert m["ap"] == pytest.approx(average_precision_score(LABELS, SCORES))
    assert m["roc_auc"] == pytest.approx(roc_auc_score(LABELS, SCORES))
    assert m["accuracy"] == pytest.approx(accuracy_score(LABELS, predicted))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(LABELS, predicted))
    assert m["real_accuracy"] == pytest.approx(3 / 5)  # reals below 0.5: 0.1, 0.4, 0.35
    assert m["fake_accuracy"] == pytest.approx(3 / 5)  # fakes at or above 0.5: 0.7, 0.9, 0.65
    assert m["threshold"] == 0.5


def test_score_equal_to_threshold_counts_as_fake():
    m = binary_metrics([0, 1], [0.5, 0.5], threshold=0.5)
    assert m["real_accuracy"] == 0.0 and m["fake_accuracy"] == 1.0


@pytest.mark.parametrize("label, absent", [(0, "fake_accuracy"), (1, "real_accuracy")])
def test_single_class_does_not_crash(label, absent):
    m = binary_metrics([label] * 3, [0.2, 0.6, 0.9], threshold=0.5)
    assert m["roc_auc"] is None and m["ap"] is None and m[absent] is None
    assert m["accuracy"] == pytest.approx(1 / 3 if label == 0 else 2 / 3)
    assert m["balanced_accuracy"] == m["accuracy"]


def test_metrics_are_plain_python_for_json():
    m = binary_metrics(LABELS, SCORES, 0.5)
    assert all(v is None or type(v) in (int, float) for v in m.values())


@pytest.mark.parametrize(
    "labels, scores",
    [([0, 1], [0.1]), ([], []), ([0, 2], [0.1, 0.2]), ([0, 1], [0.1, np.nan])],
)
def test_bad_input_is_rejected(labels, scores):
    with pytest.raises(ValueError):
        binary_metrics(labels, scores, 0.5)


def test_choose_threshold_separates_separable_data():
    labels = [0, 0, 0, 1, 1, 1]
    scores = [0.05, 0.3, 0.35, 0.62, 0.7, 0.99]
    threshold = choose_threshold(labels, scores)
    assert threshold == pytest.approx((0.35 + 0.62) / 2)  # midpoint of the adjacent scores
    assert binary_metrics(labels, scores, threshold)["balanced_accuracy"] == 1.0


def test_choose_threshold_off_centre_scores():
    """A badly calibrated model whose scores all sit below 0.5 still gets a working cut."""
    labels = [0, 0, 1, 1]
    scores = [0.01, 0.02, 0.1, 0.2]
    threshold = choose_threshold(labels, scores)
    assert threshold == pytest.approx(0.06)
    assert binary_metrics(labels, scores, threshold)["balanced_accuracy"] == 1.0


def test_choose_threshold_balances_classes():
    """With 1 real and 9 fakes, plain accuracy would call everything fake."""
    labels = [0] + [1] * 9
    scores = [0.3, 0.1, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97, 0.99]
    threshold = choose_threshold(labels, scores)
    m = binary_metrics(labels, scores, threshold)
    assert m["real_accuracy"] == 1.0 and m["balanced_accuracy"] > 0.9


def test_choose_threshold_single_class_is_half():
    assert choose_threshold([1, 1, 1], [0.2, 0.3, 0.9]) == 0.5


def test_format_table_aligns_and_formats():
    rows = [
        {"generator": "stylegan", "ap": 0.98765, "n": 120, "roc_auc": None},
        {"generator": "dcgan", "ap": 1.0, "n": 8},
    ]
    table = format_table(rows, ["generator", "ap", "n", "roc_auc"])
    assert table.splitlines() == [
        "generator     ap    n  roc_auc",
        "---------  -----  ---  -------",
        "stylegan   0.988  120        -",
        "dcgan      1.000    8        -",
    ]
