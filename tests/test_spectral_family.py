"""Spectral detectors of every feature family and classifier: they separate held-out fakes,
calibrate on validation, and reload from plain arrays (or gradient boosting's skops file) to
the very same scores."""

import json
import os

import numpy as np
import pytest
import skops.io
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from forensics.detectors import BundleError, create_detector, load_detector
from forensics.detectors.calibration import PlattCalibration
from forensics.detectors.classifiers import (ESTIMATOR_CLASSIFIERS, TRUSTED_TYPES, fit_scorer,
                                             scorer_from_arrays, scorer_from_estimator)
from bundle_support import rehash_bundle
from test_spectral_detector import corpus

FEATURES = ["fft", "dct", "residual", "npr", "fft+npr"]
CLASSIFIERS = ["logreg", "svm", "gbm"]
SMALL = {"n_bins": 16, "tile": 16}
GBM = {"max_iter": 30, "max_leaf_nodes": 7}


@pytest.fixture(scope="module")
def data():
    return {
        "train": corpus(10, 40, [(32, 32)]),
        "val": corpus(11, 20, [(32, 32), (40, 24)]),
        "test": corpus(12, 20, [(48, 48), (37, 53), (32, 64)]),  # sizes unseen in training
    }


def make(features: str, classifier: str, data, **params):
    (x, y), (xv, yv) = data["train"], data["val"]
    return create_detector("spectral", features=features, classifier=classifier,
                           classifier_params=GBM if classifier == "gbm" else None,
                           **SMALL, **params).fit(x, y, val_images=xv, val_labels=yv)


@pytest.mark.parametrize("classifier", CLASSIFIERS)
@pytest.mark.parametrize("features", FEATURES)
def test_every_family_and_classifier_beats_chance_and_round_trips(features, classifier, data,
                                                                  tmp_path):
    detector = make(features, classifier, data)
    x, y = data["test"]
    scores = detector.predict_proba(x)
    assert ((scores >= 0) & (scores <= 1)).all()
    assert average_precision_score(y, scores) > 0.8
    assert (detector.predict(x) == np.array(y)).mean() > 0.7
    assert detector.calibration_["method"] == "platt" and detector.calibration_["n_val"] == 40

    loaded = load_detector(detector.save(tmp_path / "bundle"))
    assert np.array_equal(loaded.predict_proba(x), scores)
    assert loaded.calibration_ == detector.calibration_
    assert loaded.get_params() == detector.get_params()


def test_rgb_channels_and_preprocessing_record(data):
    detector = make("fft+npr", "logreg", data, channels="rgb")
    assert detector.extract_features(data["test"][0][:2]).shape == (2, 2 * 3 * 16)
    recipe = detector.preprocessing
    assert recipe["features"] == "fft+npr" and recipe["resize"] is None
    assert [f["name"] for f in recipe["families"]] == ["fft", "npr"]
    # Reference curves for explanations are the grey FFT curves whatever the features.
    assert all(curve.shape == (16,) for curve in detector.reference_.values())


def test_without_validation_there_is_no_calibration(data):
    x, y = data["train"]
    detector = create_detector("spectral", n_bins=16).fit(x, y)
    assert detector.calibration_["method"] == "none" and detector.threshold_ == 0.5


@pytest.mark.parametrize("params, message", [
    ({"classifier": "forest"}, "classifier must be one of"),
    ({"features": "wavelet"}, "unknown feature family"),
    ({"classifier_params": {"no_such": 1}}, "bad parameters"),
    ({"calibration": "isotonic"}, "calibration must be"),
])
def test_bad_parameters_fail_at_fit(params, message, data):
    with pytest.raises(ValueError, match=message):
        create_detector("spectral", **params).fit(*data["train"])


def test_platt_calibration_recovers_a_known_sigmoid():
    rng = np.random.default_rng(0)
    raw = rng.normal(0, 3, 20000)
    labels = (rng.random(20000) < 1 / (1 + np.exp(-(0.5 * raw - 1)))).astype(int)
    fitted = PlattCalibration.fit(raw, labels)
    assert fitted.a == pytest.approx(0.5, abs=0.03) and fitted.b == pytest.approx(-1, abs=0.05)
    assert PlattCalibration.from_dict(fitted.to_dict()) == fitted
    with pytest.raises(ValueError, match="finite"):
        PlattCalibration.from_dict({"method": "platt", "a": "1", "b": 0.0})


@pytest.mark.parametrize("classifier", CLASSIFIERS)
def test_exported_scorer_matches_sklearn_decisions(classifier):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 6))
    x[::7, 2] = np.nan if classifier == "gbm" else 0.0  # trees route missing values too
    y = (np.nan_to_num(x[:, 0]) + x[:, 1] ** 2 > 0.8).astype(int)
    scorer = fit_scorer(classifier, x, y, GBM if classifier == "gbm" else None)
    rebuilt = as_saved(classifier, scorer, 6)
    assert np.array_equal(rebuilt.decision(x), scorer.decision(x))
    # a row's score does not depend on the rows it is scored with (scan groups files freely)
    alone = np.concatenate([rebuilt.decision(x[i:i + 1]) for i in range(len(x))])
    assert np.array_equal(alone, rebuilt.decision(x))


def as_saved(classifier, scorer, n_features):
    """The scorer rebuilt as a bundle keeps it: linear arrays, or gbm's pipeline via skops."""
    if classifier in ESTIMATOR_CLASSIFIERS:
        pipeline = skops.io.loads(skops.io.dumps(scorer.pipeline), trusted=list(TRUSTED_TYPES))
        return scorer_from_estimator(classifier, pipeline, n_features)
    return scorer_from_arrays(classifier, scorer.arrays(), n_features)


@pytest.fixture(scope="module")
def gbm_detector(data):
    return make("fft", "gbm", data)


def test_gbm_bundle_keeps_its_pipeline_as_a_listed_skops_file(gbm_detector, tmp_path):
    bundle = gbm_detector.save(tmp_path / "gbm")
    manifest = json.loads((bundle / "detector.json").read_text())
    assert manifest["estimators"] == ["classifier.skops"]
    assert set(manifest["sha256"]) == {"weights.npz", "classifier.skops"}
    with np.load(bundle / "weights.npz") as npz:
        assert not any(key.startswith("tree_") for key in npz.files)


@pytest.mark.parametrize("swapped, message", [
    # a type outside the allow-list: refused before anything is built
    (Pipeline([("scaler", StandardScaler()), ("classifier", FunctionTransformer(os.system))]),
     "outside the allow-list"),
    # trusted types, but not the classifier the parameters name
    (Pipeline([("scaler", StandardScaler()), ("classifier", LogisticRegression())]),
     "not a fitted StandardScaler"),
])
def test_tampered_skops_file_is_refused(gbm_detector, tmp_path, swapped, message):
    bundle = gbm_detector.save(tmp_path / "gbm")
    (bundle / "classifier.skops").write_bytes(skops.io.dumps(swapped))
    rehash_bundle(bundle)  # past the checksum: the allow-list and the type checks must refuse it
    with pytest.raises(BundleError, match=message):
        load_detector(bundle)


def test_gbm_bundle_of_the_old_tree_array_layout_asks_for_retraining(gbm_detector, tmp_path):
    bundle = gbm_detector.save(tmp_path / "gbm")
    (bundle / "classifier.skops").unlink()
    manifest = json.loads((bundle / "detector.json").read_text())
    del manifest["estimators"]
    (bundle / "detector.json").write_text(json.dumps(manifest))
    rehash_bundle(bundle)
    with pytest.raises(BundleError, match="tree arrays are no longer read.*re-train"):
        load_detector(bundle)


def test_changed_calibration_is_caught_by_the_probe(data, tmp_path):
    bundle = make("npr", "svm", data).save(tmp_path / "svm")
    manifest = json.loads((bundle / "detector.json").read_text())
    manifest["calibration"]["a"] *= 2
    (bundle / "detector.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="does not reproduce"):
        load_detector(bundle)
