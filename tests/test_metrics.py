"""Metrics agree with scikit-learn, survive one-class input, pick sensible thresholds, and give
the evaluation protocol's figures (EER, TPR at FPR, ECE, bootstrap intervals)."""

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    roc_auc_score,
    roc_curve,
)

from forensics.metrics import (
    _resampled_ranking_metrics,
    binary_metrics,
    bootstrap_intervals,
    choose_threshold,
    equal_error_rate,
    expected_calibration_error,
    format_table,
    oracle_accuracy,
    reliability_curve,
    tpr_at_fpr,
)

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


# ----------------------------------------------------------------------------- protocol figures


def test_eer_on_known_inputs():
    # Reals 0.1..0.4 and one at 0.8; fakes 0.3, 0.6, 0.7, 0.9, 0.95: one error on each side at
    # a cut between 0.7 and 0.8 gives FPR = FNR = 1/5.
    labels = [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]
    scores = [0.1, 0.2, 0.35, 0.4, 0.8, 0.3, 0.6, 0.7, 0.9, 0.95]
    assert equal_error_rate(labels, scores) == pytest.approx(0.2)
    assert equal_error_rate([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 0.0
    assert equal_error_rate([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 1.0


def test_eer_follows_the_deepfakebench_formula():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    scores = rng.random(300) + 0.3 * labels
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    assert equal_error_rate(labels, scores) == fpr[np.nanargmin(np.abs(1 - tpr - fpr))]


def test_tpr_at_fpr_on_known_inputs():
    labels = [0] * 100 + [1] * 4
    scores = list(np.linspace(0, 0.9, 100)) + [0.95, 0.91, 0.895, 0.5]
    assert tpr_at_fpr(labels, scores, 0.0) == 0.5  # 0.95 and 0.91 beat every real
    assert tpr_at_fpr(labels, scores, 0.01) == 0.75  # one real above 0.895 is allowed
    assert tpr_at_fpr(labels, scores, 1.0) == 1.0


def test_binary_metrics_protocol_keys():
    m = binary_metrics(LABELS, SCORES, threshold=0.5)
    assert m["eer"] == equal_error_rate(LABELS, SCORES)
    assert m["tpr_at_fpr_5pct"] == tpr_at_fpr(LABELS, SCORES, 0.05)
    assert m["oracle_accuracy"] >= m["accuracy"] and "oracle_accuracy" in m
    assert m["ece"] == expected_calibration_error(LABELS, SCORES)
    assert binary_metrics([0, 1], [-1.0, 2.0], 0.5)["ece"] is None  # not probabilities


def test_oracle_accuracy_is_the_best_threshold():
    brute = max(np.mean((np.array(SCORES) >= t) == np.array(LABELS)) for t in SCORES + [2.0])
    assert oracle_accuracy(LABELS, SCORES) == pytest.approx(brute)


def test_ece_of_calibrated_scores_is_near_zero_and_of_overconfident_ones_high():
    rng = np.random.default_rng(1)
    p = rng.random(20000)
    calibrated_labels = (rng.random(20000) < p).astype(int)
    assert expected_calibration_error(calibrated_labels, p) < 0.02
    # Always 0.02 or 0.98, but right only 70% of the time.
    truth = rng.integers(0, 2, 20000)
    right = rng.random(20000) < 0.7
    overconfident = np.where(right == truth.astype(bool), 0.98, 0.02)
    assert expected_calibration_error(truth, overconfident) > 0.1


def test_reliability_curve_bins():
    curve = reliability_curve([0, 1, 1, 0], [0.05, 0.05, 0.95, 1.0], n_bins=10)
    assert curve["count"].tolist() == [2, 0, 0, 0, 0, 0, 0, 0, 0, 2]
    assert curve["fraction_fake"][0] == 0.5 and np.isnan(curve["mean_score"][1])
    with pytest.raises(ValueError, match="probabilities"):
        reliability_curve([0, 1], [0.2, 1.5])


def test_bootstrap_agrees_with_sklearn_and_contains_the_estimate():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 400)
    scores = np.round(rng.random(400) * 0.6 + 0.3 * labels, 2)  # rounded: many ties
    intervals = bootstrap_intervals(labels, scores, 0.5, n_resamples=300, seed=3)
    point = binary_metrics(labels, scores, 0.5)
    for key in ("ap", "roc_auc", "accuracy"):
        low, high = intervals[key]
        assert low < point[key] < high and high - low < 0.2
    assert bootstrap_intervals(labels, scores, 0.5, n_resamples=300, seed=3) == intervals

    # The vectorised resamples equal scikit-learn on the same resampled images.
    order = np.argsort(-scores, kind="stable")
    y, s = labels[order], scores[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    counts = rng.multinomial(len(y), np.full(len(y), 1 / len(y)), size=3).astype(float)
    ap, auc = _resampled_ranking_metrics(counts, y, starts)
    for b in range(3):
        index = np.repeat(np.arange(len(y)), counts[b].astype(int))
        assert ap[b] == pytest.approx(average_precision_score(y[index], s[index]))
        assert auc[b] == pytest.approx(roc_auc_score(y[index], s[index]))


def test_bootstrap_of_one_class_has_no_ranking_interval():
    intervals = bootstrap_intervals([1, 1, 1], [0.2, 0.7, 0.9], 0.5, n_resamples=50)
    assert intervals["ap"] is None and intervals["roc_auc"] is None
    assert intervals["accuracy"][0] <= 2 / 3 <= intervals["accuracy"][1]
