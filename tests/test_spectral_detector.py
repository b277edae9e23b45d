"""Spectral detector: separates upsampling artifacts, round-trips through a safe bundle."""

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from bundle_support import rehash_bundle, sha256_of
from sklearn.exceptions import NotFittedError
from sklearn.metrics import average_precision_score

from crashsafe.images import save_png
from forensics.detectors import (
    BundleError,
    Detector,
    create_detector,
    list_detectors,
    load_detector,
)
from forensics.detectors.spectral import SpectralDetector


def real_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Gaussian-blurred colour noise: a smooth, camera-like falling spectrum."""
    noise = gaussian_filter(rng.normal(size=(height, width, 3)), sigma=(1.0, 1.0, 0))
    return np.clip(128 + 40 * noise / noise.std(), 0, 255).astype(np.uint8)


def fake_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """The same kind of content made at half size and nearest-neighbour upsampled, as a GAN's
    upsampling layers do, plus a faint content-dependent period-2 grid."""
    small = real_image(rng, (height + 1) // 2, (width + 1) // 2)
    image = small.repeat(2, axis=0).repeat(2, axis=1)[:height, :width].astype(np.float64)
    i, j = np.indices((height, width))
    grid = 1.5 * ((-1.0) ** i + (-1.0) ** j) * (image.mean(axis=2) - 128) / 40
    return np.clip(image + grid[..., None], 0, 255).astype(np.uint8)


def corpus(seed: int, n: int, shapes: list[tuple[int, int]]) -> tuple[list[np.ndarray], list[int]]:
    """n real and n fake images cycling through shapes, labels 0 = real, 1 = fake."""
    rng = np.random.default_rng(seed)
    reals = [real_image(rng, *shapes[k % len(shapes)]) for k in range(n)]
    fakes = [fake_image(rng, *shapes[k % len(shapes)]) for k in range(n)]
    return reals + fakes, [0] * n + [1] * n


def write_real_fake_folders(root: Path, n: int, size: int, seed: int, generator: str) -> Path:
    """A corpus folder in the real/ + fake/<generator>/ layout: n synthetic images of each."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        save_png(real_image(rng, size, size), root / "real" / f"r{i:02d}.png")
        save_png(fake_image(rng, size, size), root / "fake" / generator / f"f{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def data():
    return {
        "train": corpus(0, 40, [(32, 32)]),
        "val": corpus(1, 20, [(32, 32), (40, 24)]),
        "test": corpus(2, 30, [(48, 48), (37, 53), (32, 64)]),  # sizes unseen in training
    }


@pytest.fixture(scope="module")
def detector(data):
    (x, y), (xv, yv) = data["train"], data["val"]
    return create_detector("spectral", n_bins=32).fit(x, y, val_images=xv, val_labels=yv)


def test_registry_lists_and_creates_spectral():
    assert "spectral" in list_detectors()
    made = create_detector("spectral", n_bins=16, classifier_params={"C": 0.5})
    assert isinstance(made, SpectralDetector) and isinstance(made, Detector)
    assert made.get_params() == {
        "features": "fft", "classifier": "logreg", "n_bins": 16, "window": True,
        "channels": "grey", "tile": 32, "classifier_params": {"C": 0.5}, "calibration": "platt",
        "seed": 0,
    }
    with pytest.raises(ValueError, match="spectral"):
        create_detector("no-such-kind")


def test_separates_held_out_images(detector, data):
    x, y = data["test"]
    scores = detector.predict_proba(x)
    assert scores.shape == (len(x),) and scores.dtype == np.float64
    assert ((scores >= 0) & (scores <= 1)).all()
    assert average_precision_score(y, scores) > 0.9
    assert (detector.predict(x) == np.array(y)).mean() > 0.85


def test_learned_state(detector, data):
    assert 0 < detector.threshold_ < 1
    assert detector.validation_metrics_["n"] == 40 and detector.validation_metrics_["ap"] > 0.9
    expected_info = {"n_images": 80, "n_real": 40, "n_fake": 40, "n_val_images": 40}
    assert expected_info.items() <= detector.training_info_.items()
    assert set(detector.reference_) == {"real_mean", "real_std", "fake_mean", "fake_std"}
    assert all(curve.shape == (32,) for curve in detector.reference_.values())
    # The fakes carry more power next to Nyquist: the curve a plot would show.
    reference = detector.reference_
    assert reference["fake_mean"][-4:].mean() > reference["real_mean"][-4:].mean()
    assert detector.extract_features(data["test"][0][:3]).shape == (3, 32)


def test_threshold_is_half_without_validation(data):
    x, y = data["train"]
    fitted = SpectralDetector(n_bins=16).fit(x, y)
    assert fitted.threshold_ == 0.5 and fitted.validation_metrics_ is None


def test_bundle_round_trip(detector, data, tmp_path):
    detector.training_info_["corpora"] = {"fake": "synthetic upsampled noise"}
    detector.training_info_["per_generator"] = {"nn-upsample": np.int64(40)}  # numpy is fine
    folder = detector.save(tmp_path / "nested" / "bundle")
    # Exactly the two bundle files: no temp files left behind by the atomic writes.
    assert sorted(p.name for p in folder.iterdir()) == ["detector.json", "weights.npz"]

    manifest = json.loads((folder / "detector.json").read_text())
    assert manifest["format"] == "gan-forensics-detector" and manifest["format_version"] == 2
    assert manifest["kind"] == "spectral" and manifest["params"]["n_bins"] == 32
    assert manifest["threshold"] == detector.threshold_
    assert manifest["training"]["corpora"] == {"fake": "synthetic upsampled noise"}
    assert manifest["validation"] == detector.validation_metrics_
    assert {"preprocessing", "created", "library_version", "environment"} <= set(manifest)
    assert manifest["sha256"] == {"weights.npz": sha256_of(folder / "weights.npz")}

    loaded = load_detector(folder)
    x = data["test"][0]
    assert isinstance(loaded, SpectralDetector)
    assert np.array_equal(loaded.predict_proba(x), detector.predict_proba(x))
    assert loaded.threshold_ == detector.threshold_
    assert loaded.training_info_ == detector.training_info_
    for key, curve in detector.reference_.items():
        assert np.array_equal(loaded.reference_[key], curve)
    assert np.array_equal(SpectralDetector.load(folder).predict(x), detector.predict(x))


BAD_FITS = {
    "empty": (lambda x, y: ([], [], {}), "empty"),
    "short labels": (lambda x, y: (x, [0, 1], {}), "one label per image"),
    "one class": (lambda x, y: (x, [0] * len(x), {}), "only class 0"),
    "label 2": (lambda x, y: (x, [2 * v for v in y], {}), "0 \\(real\\) or 1 \\(fake\\)"),
    "val without labels": (lambda x, y: (x, y, {"val_images": x}), "both val_images"),
    "float images": (lambda x, y: ([im / 255 for im in x], y, {}), "RGB uint8"),
}


@pytest.mark.parametrize("case", BAD_FITS)
def test_fit_validates_inputs(data, case):
    make, message = BAD_FITS[case]
    images, labels, kwargs = make(*data["train"])
    with pytest.raises(ValueError, match=message):
        SpectralDetector().fit(images, labels, **kwargs)


def test_unfitted_detector_refuses_to_predict_or_save(tmp_path):
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(NotFittedError):
        SpectralDetector().predict_proba([image])
    with pytest.raises(NotFittedError):
        SpectralDetector().save(tmp_path)


# ----------------------------------------------------------------------------- refusals


@pytest.fixture
def bundle(detector, tmp_path) -> Path:
    return detector.save(tmp_path / "bundle")


def edit_manifest(folder: Path, **changes) -> None:
    manifest = json.loads((folder / "detector.json").read_text())
    manifest.update(changes)
    (folder / "detector.json").write_text(json.dumps(manifest))


def test_refuses_missing_manifest(tmp_path):
    with pytest.raises(BundleError, match="missing detector.json") as error:
        load_detector(tmp_path)
    assert str(tmp_path) in str(error.value)


def test_refuses_manifest_that_is_not_json(bundle):
    (bundle / "detector.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_detector(bundle)


def test_refuses_unknown_kind_and_lists_known(bundle):
    edit_manifest(bundle, kind="vit-giant")
    with pytest.raises(BundleError, match="unknown detector kind 'vit-giant'.*spectral"):
        load_detector(bundle)


def test_refuses_newer_format_version(bundle):
    edit_manifest(bundle, format_version=3)
    with pytest.raises(BundleError, match="format_version 3 is newer"):
        load_detector(bundle)


def test_refuses_a_bundle_from_before_checksums(bundle):
    edit_manifest(bundle, format_version=1)
    with pytest.raises(BundleError, match="format_version 1 predates the SHA-256.*retrain"):
        load_detector(bundle)


def test_refuses_missing_array_file(bundle):
    (bundle / "weights.npz").unlink()
    with pytest.raises(BundleError, match="missing array file weights.npz"):
        load_detector(bundle)


@pytest.mark.parametrize("content", [b"not a zip at all", b"bare-npy"])
def test_refuses_unreadable_array_file(bundle, content):
    weights = bundle / "weights.npz"
    if content == b"bare-npy":
        with weights.open("wb") as handle:
            np.save(handle, np.zeros(3))
    else:
        weights.write_bytes(content)
    rehash_bundle(bundle)  # past the checksum: the parser must refuse it
    with pytest.raises(BundleError, match="weights.npz"):
        load_detector(bundle)


def test_refuses_array_file_outside_the_folder(bundle):
    edit_manifest(bundle, arrays=["../weights.npz"])
    with pytest.raises(BundleError, match="plain"):
        load_detector(bundle)


def test_refuses_weights_that_do_not_reproduce_saved_scores(bundle):
    with np.load(bundle / "weights.npz") as npz:
        arrays = dict(npz)
    arrays["coef"] = arrays["coef"] * 1.01
    np.savez(bundle / "weights.npz", **arrays)
    with pytest.raises(BundleError, match="weights.npz does not match the SHA-256"):
        load_detector(bundle)
    rehash_bundle(bundle)  # intact files that compute other numbers: the probe's message
    with pytest.raises(BundleError, match="does not reproduce.*intact.*compute other numbers"):
        load_detector(bundle)


class _TouchOnUnpickle:
    """Unpickling this creates a marker file: it stands for arbitrary code in a payload."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("payload", ["object-array npz", "raw pickle"])
def test_refuses_pickle_payload_without_executing_it(bundle, tmp_path, payload):
    marker = tmp_path / "payload-ran"
    weights = bundle / "weights.npz"
    if payload == "object-array npz":
        # np.savez pickles object arrays; keep the genuine arrays so only the payload is wrong.
        with np.load(weights) as npz:
            arrays = dict(npz)
        arrays["coef"] = np.array([_TouchOnUnpickle(marker)], dtype=object)
        np.savez(weights, **arrays)
    else:
        weights.write_bytes(pickle.dumps(_TouchOnUnpickle(marker)))
    rehash_bundle(bundle)  # a consistent forgery: the loader itself must refuse the pickle

    with pytest.raises(BundleError, match="refused.*nothing from it was executed") as error:
        load_detector(bundle)
    assert "pickle" in str(error.value)
    assert not marker.exists()

    # Control: the payload is live, so the refusal above is what kept it from running.
    control = tmp_path / "control.npz"
    control.write_bytes(weights.read_bytes())
    if payload == "object-array npz":
        np.load(control, allow_pickle=True)["coef"]
    else:
        np.load(control, allow_pickle=True)
    assert marker.exists()


def test_shared_crashsafe_module_imports_neither_package():
    """forensics and generators share crashsafe, so it must import neither (nor torch)."""
    code = ("import sys, crashsafe; "
            "bad = [m for m in ('forensics', 'generators', 'torch', 'numpy') if m in sys.modules]; "
            "sys.exit(str(bad) if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_library_never_imports_generators_or_streamlit():
    code = (
        "import sys, forensics.features, forensics.detectors, forensics.metrics; "
        "bad = [m for m in ('generators', 'streamlit') if m in sys.modules]; "
        "sys.exit(str(bad) if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
