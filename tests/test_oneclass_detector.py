"""One-class detector: a mixture fit on real images alone ranks unseen fakes, round-trips
through a checked bundle, serves as an ensemble member and trains from the command line."""

import json
import shutil

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from bundle_support import flip_byte, rehash_bundle
from crashsafe.images import save_png
from forensics.cli import main
from forensics.detectors import BundleError, create_detector, load_detector
from forensics.detectors.card import format_model_card, model_card
from forensics.detectors.ensemble import parse_member_specs
from forensics.detectors.oneclass import OneClassDetector
from forensics.features import self_descriptions
from test_spectral_detector import corpus, real_image

# Small mixtures keep the test fast; the default recipe is the one measured in the README.
PARAMS = {"n_components": 2, "covariance": "diag"}


@pytest.fixture(scope="module")
def data():
    return {"train": corpus(30, 60, [(48, 48), (64, 40)]),
            "val": corpus(31, 20, [(48, 48)]),
            "test": corpus(32, 30, [(64, 64), (45, 57)])}  # sizes unseen in training


def reals_of(split):
    images, labels = split
    return [image for image, label in zip(images, labels) if label == 0]


@pytest.fixture(scope="module")
def real_only(data):
    reals = reals_of(data["train"])
    return OneClassDetector(**PARAMS).fit(reals, [0] * len(reals))


def test_registered_with_a_features_variant():
    assert isinstance(create_detector("oneclass"), OneClassDetector)
    specs = parse_member_specs("spectral:npr,oneclass,oneclass:selfdesc+fft")
    assert [(s.name, s.kind, s.params) for s in specs][1:] == [
        ("oneclass", "oneclass", {}),
        ("oneclass-selfdesc+fft", "oneclass", {"features": "selfdesc+fft"})]


def test_features_have_a_fixed_length_at_any_size_and_refuse_tiny_images():
    rng = np.random.default_rng(0)
    rows = self_descriptions([real_image(rng, 32, 32), real_image(rng, 97, 40)])
    assert rows.shape == (2, 54) and np.isfinite(rows).all()
    flat = np.full((40, 40, 3), 77, np.uint8)
    assert np.isfinite(self_descriptions([flat])).all()
    with pytest.raises(ValueError, match="at least 32x32.*images\\[0\\] is 31x64"):
        self_descriptions([np.zeros((31, 64, 3), np.uint8)])


def test_fit_on_reals_alone_ranks_unseen_fakes(real_only, data):
    x, y = data["test"]
    scores = real_only.predict_proba(x)
    assert scores.shape == (len(x),) and ((scores >= 0) & (scores <= 1)).all()
    assert roc_auc_score(y, scores) > 0.95
    # No fakes: 0.5 is the false-alarm cut on held-out reals, and the calibration says so.
    assert real_only.threshold_ == 0.5 and real_only.calibration_["method"] == "false-alarm"
    assert "no fake images" in real_only.calibration_["note"]
    assert np.mean(scores[np.array(y) == 0] >= 0.5) < 0.2
    assert real_only.training_info_["n_fake"] == 0


def test_fakes_and_validation_only_calibrate(data):
    (x, y), (xv, yv) = data["train"], data["val"]
    with_fakes = OneClassDetector(**PARAMS).fit(x, y, val_images=xv, val_labels=yv)
    reals = reals_of(data["train"])
    reals_only = OneClassDetector(**PARAMS).fit(reals, [0] * len(reals), val_images=xv,
                                                val_labels=yv)
    # The same reals give the same mixture whatever fakes came along.
    np.testing.assert_array_equal(with_fakes.mixture_.means_, reals_only.mixture_.means_)
    assert with_fakes.calibration_["method"] == "platt"
    assert with_fakes.validation_metrics_["roc_auc"] > 0.95


def test_needs_real_training_images(data):
    x, y = data["train"]
    fakes = [image for image, label in zip(x, y) if label == 1]
    with pytest.raises(ValueError, match="only class 1 \\(fake\\).*needs real"):
        OneClassDetector(**PARAMS).fit(fakes, [1] * len(fakes))
    with pytest.raises(ValueError, match="n_components=2"):
        OneClassDetector(n_components=20).fit(x[:10], [0] * 10)
    with pytest.raises(ValueError, match="covariance must be one of"):
        OneClassDetector(covariance="tied").fit(x, y)


@pytest.fixture
def bundle(real_only, tmp_path):
    return real_only.save(tmp_path / "oneclass")


def test_bundle_round_trip_gives_identical_scores(real_only, bundle, data):
    loaded = load_detector(bundle)
    assert isinstance(loaded, OneClassDetector)
    x = data["test"][0]
    assert np.array_equal(loaded.predict_proba(x), real_only.predict_proba(x))
    assert loaded.threshold_ == real_only.threshold_
    text = format_model_card(model_card(bundle))
    assert "no fake images" in text and "flags anything unusual" in text


def test_a_flipped_byte_in_its_weights_is_refused(bundle):
    flip_byte(bundle / "weights.npz")
    with pytest.raises(BundleError, match="weights.npz does not match the SHA-256"):
        load_detector(bundle)


def test_an_altered_mixture_is_caught_by_the_probe(bundle):
    with np.load(bundle / "weights.npz") as npz:
        arrays = dict(npz)
    arrays["means"] = arrays["means"] + 0.01
    np.savez(bundle / "weights.npz", **arrays)
    rehash_bundle(bundle)  # intact files that compute other numbers
    with pytest.raises(BundleError, match="does not reproduce.*probe"):
        load_detector(bundle)
    arrays["covariances"] = arrays["covariances"][:1]
    np.savez(bundle / "weights.npz", **arrays)
    rehash_bundle(bundle)
    with pytest.raises(BundleError, match="covariances.*expected finite numbers of shape"):
        load_detector(bundle)


def test_works_as_an_ensemble_member(data, tmp_path):
    (x, y), (xv, yv) = data["train"], data["val"]
    members = [{"name": "npr", "kind": "spectral", "params": {"features": "npr", "n_bins": 16}},
               {"name": "oneclass", "kind": "oneclass", "params": PARAMS}]
    ensemble = create_detector("ensemble", members=members).fit(x, y, val_images=xv,
                                                                val_labels=yv)
    loaded = load_detector(ensemble.save(tmp_path / "ensemble"))
    test_x, test_y = data["test"]
    scores, per_member = loaded.predict_proba_with_members(test_x)
    assert roc_auc_score(test_y, per_member["oneclass"]) > 0.95
    assert roc_auc_score(test_y, scores) > 0.95
    assert np.array_equal(scores, ensemble.predict_proba(test_x))


def test_trains_from_the_command_line_on_a_real_only_corpus(tmp_path, capsys):
    rng = np.random.default_rng(5)
    root = tmp_path / "reals"
    for i in range(40):
        save_png(real_image(rng, 48, 48), root / "real" / f"r{i:02d}.png")
    out = tmp_path / "bundle"
    assert main(["detector", "train", "--kind", "oneclass", "--corpus", str(root), "--out",
                 str(out), "--set", "n_components=2", "--set", "covariance=diag",
                 "-q"]) == 0
    assert "saved oneclass detector" in capsys.readouterr().out
    manifest = json.loads((out / "detector.json").read_text())
    assert manifest["kind"] == "oneclass" and manifest["training"]["n_fake"] == 0
    assert manifest["calibration"]["method"] == "false-alarm"
    # A supervised kind still refuses the same corpus, saying what to add.
    assert main(["detector", "train", "--kind", "spectral", "--corpus", str(root), "--out",
                 str(tmp_path / "spectral"), "-q"]) == 2
    assert "add fake images" in capsys.readouterr().err
    shutil.rmtree(root / "real")
    (root / "fake" / "g").mkdir(parents=True)
    save_png(real_image(rng, 48, 48), root / "fake" / "g" / "f.png")
    assert main(["detector", "train", "--kind", "oneclass", "--corpus", str(root), "--out",
                 str(out), "-q"]) == 2
    assert "models real images" in capsys.readouterr().err
