"""CNN detector: fine-tunes the packaged Lite0, scores any size by tiles, bundles safely."""

import json
import pickle

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError
from sklearn.metrics import average_precision_score

from crashsafe.images import load_image
from forensics.backbones import BackboneError
from forensics.detectors import BundleError, create_detector, list_detectors, load_detector
from forensics.detectors.cnn import CNNDetector, npr_residual
from forensics.tiles import tile_boxes
from forensics.features import npr_residual as npr_residual_numpy
from bundle_support import rehash_bundle
from test_spectral_detector import _TouchOnUnpickle, corpus, data  # noqa: F401 (fixture)

# A tiny timm network for the tests that check plumbing, not accuracy.
TINY = {"backbone": "test_efficientnet", "pretrained": False}
QUICK = {"crop_size": 32, "batch_size": 16, "progress": False}


@pytest.fixture(scope="module")
def detector(data):
    """The default backbone with its packaged ImageNet weights, fine-tuned for a few epochs."""
    (x, y), (xv, yv) = data["train"], data["val"]
    return create_detector("cnn", epochs=6, batch_size=16, progress=False).fit(
        x, y, val_images=xv, val_labels=yv)


def test_registry_creates_cnn_with_documented_defaults():
    assert "cnn" in list_detectors()
    made = create_detector("cnn")
    assert isinstance(made, CNNDetector)
    params = made.resolved_params()
    assert params["backbone"] == "tf_efficientnet_lite0" and params["pretrained"] is True
    assert params["crop_size"] == 64 and params["tile_size"] == 256 and params["input"] == "rgb"
    assert params["p_blur"] == params["p_jpeg"] == 0.5
    assert params["blur_sigma"] == [0.0, 3.0] and params["jpeg_quality"] == [30, 100]
    assert json.loads(json.dumps(params)) == params
    assert CNNDetector(**params).resolved_params() == params


def test_beats_chance_on_held_out_fakes(detector, data):
    x, y = data["test"]
    scores = detector.predict_proba(x)
    assert scores.shape == (len(x),) and scores.dtype == np.float64
    assert ((scores >= 0) & (scores <= 1)).all()
    assert average_precision_score(y, scores) > 0.85
    assert (detector.predict(x) == np.array(y)).mean() > 0.7


def test_learned_state_records_training(detector):
    info = detector.training_info_
    assert [row["epoch"] for row in info["history"]] == list(range(1, len(info["history"]) + 1))
    assert 1 <= info["best_epoch"] <= len(info["history"]) <= 6
    assert {"train_loss", "val_loss", "val_ap"} <= set(info["history"][0])
    assert info["device"] == "cpu" and info["held_out_from_train"] == 0
    assert info["train_crop"] == 32  # the default 64 shrinks to the 32 px images: no padding
    assert detector.calibration_["method"] == "platt" and detector.calibration_["n_val"] == 40
    assert 0 < detector.threshold_ < 1 and detector.validation_metrics_["ap"] > 0.85
    assert not detector.network_.training


def test_bundle_round_trip_gives_identical_scores(detector, data, tmp_path):
    folder = detector.save(tmp_path / "cnn")
    assert sorted(p.name for p in folder.iterdir()) == [
        "detector.json", "training_curves.png", "weights.safetensors"]
    assert load_image(folder / "training_curves.png").shape[2] == 3
    manifest = json.loads((folder / "detector.json").read_text())
    assert manifest["kind"] == "cnn" and manifest["arrays"] == ["weights.safetensors"]
    assert manifest["calibration"] == detector.calibration_
    assert manifest["preprocessing"]["resize"] is None

    loaded = load_detector(folder)
    x = data["test"][0]
    assert isinstance(loaded, CNNDetector)
    assert np.array_equal(loaded.predict_proba(x), detector.predict_proba(x))
    assert loaded.threshold_ == detector.threshold_
    assert loaded.training_info_["history"] == detector.training_info_["history"]


@pytest.fixture
def bundle(detector, tmp_path):
    return detector.save(tmp_path / "bundle")


@pytest.mark.parametrize("payload", ["raw pickle", "torch.save"])
def test_refuses_pickled_weights_without_executing_them(bundle, tmp_path, payload):
    marker = tmp_path / "payload-ran"
    weights = bundle / "weights.safetensors"
    if payload == "raw pickle":
        weights.write_bytes(pickle.dumps(_TouchOnUnpickle(marker)))
    else:  # a torch checkpoint is a zip of pickles
        torch.save({"w": _TouchOnUnpickle(marker)}, weights)
    rehash_bundle(bundle)  # a consistent forgery: the parser itself must refuse the pickle
    with pytest.raises(BundleError, match="not a valid .safetensors.*nothing from it was executed"):
        load_detector(bundle)
    assert not marker.exists()


def test_refuses_weights_files_of_other_formats(bundle):
    manifest = json.loads((bundle / "detector.json").read_text())
    (bundle / "weights.pt").write_bytes(b"")
    manifest["arrays"] = ["weights.pt"]
    (bundle / "detector.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="plain"):
        load_detector(bundle)


def _rewrite_weights(folder, change) -> None:
    from safetensors.numpy import load_file, save_file

    tensors = load_file(folder / "weights.safetensors")
    change(tensors)
    save_file(tensors, folder / "weights.safetensors")


def test_refuses_weights_that_do_not_fit_or_reproduce(bundle):
    key = "backbone.conv_stem.weight"
    _rewrite_weights(bundle, lambda t: t.update({key: t[key] * 3}))
    with pytest.raises(BundleError, match="weights.safetensors does not match the SHA-256"):
        load_detector(bundle)
    # Intact files (checksums forged to match) whose probe logit is not what this timm and
    # torch compute: the compatibility message, naming the versions.
    _rewrite_weights(bundle, lambda t: t.update(probe_logit=t["probe_logit"] + 1.0))
    rehash_bundle(bundle)
    with pytest.raises(BundleError, match="probe image the logit .*intact.*compute other "
                                          "numbers.*install the versions"):
        load_detector(bundle)
    _rewrite_weights(bundle, lambda t: t.update({key: t[key][:1]}))
    rehash_bundle(bundle)
    with pytest.raises(BundleError, match="does not fit"):
        load_detector(bundle)


def test_tiles_cover_the_image_with_one_shape():
    boxes = tile_boxes(600, 500, 256)
    assert len(boxes) == 3 * 2
    covered = np.zeros((600, 500), dtype=int)
    for rows, cols in boxes:
        covered[rows, cols] += 1
        assert (rows.stop - rows.start, cols.stop - cols.start) == (256, 256)
    assert covered.min() == 1
    assert tile_boxes(40, 24, 256) == [(slice(0, 40), slice(0, 24))]
    assert [b[1] for b in tile_boxes(100, 300, 256)] == [slice(0, 256), slice(44, 300)]


def test_large_images_are_scored_as_the_mean_of_their_tiles(detector, data):
    rng = np.random.default_rng(5)
    large = rng.integers(0, 256, (600, 500, 3), dtype=np.uint8)
    tiles = [large[box] for box in tile_boxes(600, 500, detector.tile_size)]
    assert np.isclose(detector.logits([large])[0], detector.logits(tiles).mean(), atol=1e-5)
    mixed = [large, *data["test"][0][:3]]
    scores = detector.predict_proba(mixed)
    assert scores.shape == (4,) and np.isfinite(scores).all()
    one_by_one = [detector.predict_proba([image])[0] for image in mixed]
    assert np.allclose(scores, one_by_one, atol=1e-6)


def test_augmentation_really_changes_images():
    image = corpus(3, 1, [(32, 32)])[0][0]
    rng = np.random.default_rng(0)
    off = CNNDetector(p_blur=0, p_jpeg=0, flip=False, crop_size=32)
    assert np.array_equal(off.augment(image, rng), image)  # the control: nothing asked
    for changes in ({"p_jpeg": 1, "jpeg_quality": (30, 30)},
                    {"p_blur": 1, "blur_sigma": (2.0, 2.0)}):
        augmented = CNNDetector(**{**off.get_params(), **changes}).augment(image, rng)
        assert augmented.shape == image.shape
        assert np.abs(augmented.astype(int) - image).mean() > 2, changes
    flipped = CNNDetector(**{**off.get_params(), "flip": True})
    views = [flipped.augment(image, rng) for _ in range(8)]
    assert any(np.array_equal(v, image[:, ::-1]) for v in views)
    padded = off.augment(image[:20, :12], rng)  # smaller than the crop: reflect-padded
    assert padded.shape == (32, 32, 3)


def test_npr_residual_matches_the_feature_definition():
    x = torch.rand(2, 3, 6, 8)
    expected = npr_residual_numpy(x.numpy())
    assert np.allclose(npr_residual(x).numpy(), expected)
    assert npr_residual(torch.rand(1, 3, 5, 7)).shape == (1, 3, 5, 7)  # odd sizes too


def test_random_init_npr_trains_without_validation(data, tmp_path):
    x, y = data["train"]
    fitted = create_detector("cnn", input="npr", epochs=2, **TINY, **QUICK).fit(x, y)
    assert fitted.threshold_ == 0.5 and fitted.training_info_["held_out_from_train"] == 16
    loaded = load_detector(fitted.save(tmp_path / "npr"))
    assert loaded.preprocessing["input"].startswith("npr")
    assert np.array_equal(loaded.predict_proba(x[:4]), fitted.predict_proba(x[:4]))


def test_errors_are_clear(data):
    x, y = data["train"]
    with pytest.raises(NotFittedError):
        CNNDetector().predict_proba(x[:1])
    with pytest.raises(ValueError, match="input must be one of rgb, npr"):
        CNNDetector(input="dct").fit(x, y)
    with pytest.raises(BackboneError, match="offline"):
        CNNDetector(backbone="resnet18", epochs=1, **QUICK).fit(x, y)
