"""Unit tests of the app's logic (app/components.py), no Streamlit runtime involved."""

from __future__ import annotations

import csv
import io
import json
import os

import numpy as np
import pandas as pd
import pytest

from app_support import photo_png, train_tiny_run  # importing app_support puts app/ on sys.path
import components as C
from crashsafe.images import ImageLimits
from forensics import serving
from forensics.bundled import write_bundled_corpus
from forensics.corpus import is_corpus
from forensics.detectors.general import GENERAL_DIR
from forensics.robustness_results import RobustnessResults
from forensics.verdict import STABILITY_COPIES
from generators import GeneratorRun


class BrightnessDetector:
    """A stand-in detector: P(fake) is the mean pixel value / 255."""

    threshold_ = 0.5

    def predict_proba_with_members(self, images):
        p = np.array([image.mean() / 255 for image in images])
        return p, {"bright": p, "dark": 1 - p}


def result(p: float, **copies: float) -> C.ImageResult:
    return C.ImageResult(name="x.png", sha256="0" * 64, p_fake=p,
                         copies=copies or {c.label: p for c in STABILITY_COPIES})


def test_config_comes_from_the_environment(tmp_path):
    env = {serving.ENV_DETECTOR: str(tmp_path / "b"), serving.ENV_ROOT: str(tmp_path),
           serving.ENV_MAX_BYTES: "20", serving.ENV_MAX_PIXELS: "10"}
    assert serving.AppConfig.from_env(env) == serving.AppConfig(tmp_path / "b", tmp_path,
                                                    ImageLimits(max_pixels=10, max_bytes=20))
    default = serving.AppConfig.from_env({})
    assert (default.detector, default.root.as_posix()) == (GENERAL_DIR, "runs")
    assert default.scoring_slots == 1
    assert serving.AppConfig.from_env({serving.ENV_SCORING_SLOTS: "3"}).scoring_slots == 3


def test_resolve_under_refuses_path_traversal(tmp_path):
    root = tmp_path / "root"
    (root / "corpus").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    os.symlink(tmp_path / "secret", root / "escape")
    assert C.resolve_under(root, "corpus") == (root / "corpus").resolve()
    assert C.resolve_under(root, ".") == root.resolve()
    for bad in ("..", "../secret", "corpus/../../secret", str(tmp_path / "secret"), "escape"):
        with pytest.raises(ValueError):
            C.resolve_under(root, bad)


def test_find_folders_lists_corpora_and_runs_without_leaving_the_root(tmp_path):
    root = tmp_path / "root"
    (root / "a" / "real").mkdir(parents=True)
    write_bundled_corpus(root / "b", size=32, count=16, seed=0)
    train_tiny_run(root / "run", root / "b")  # what `forensics zoo train` writes
    (tmp_path / "outside" / "real").mkdir(parents=True)
    os.symlink(tmp_path / "outside", root / "link")
    assert C.find_folders(root, is_corpus) == ["a", "b"]
    assert C.find_folders(root, GeneratorRun.is_run) == ["run"]
    assert C.find_folders(tmp_path / "missing", is_corpus) == []


def test_score_upload_scores_copies_and_reports_bad_files():
    good = C.score_upload(BrightnessDetector(), "photo.png", photo_png(64))
    assert good.error == "" and (good.width, good.height) == (64, 64)
    assert set(good.copies) == {c.label for c in STABILITY_COPIES} and 0 <= good.p_fake <= 1
    assert good.members == {"bright": good.p_fake, "dark": 1 - good.p_fake}
    assert good.sha256 == C.sha256_hex(photo_png(64))
    bad = C.score_upload(BrightnessDetector(), "bad.png", b"not an image")
    assert bad.p_fake is None and "not an image" in bad.error
    big = C.score_upload(BrightnessDetector(), "big.png", photo_png(64),
                         ImageLimits(max_pixels=100))
    assert "over the limit" in big.error


def test_table_rows_and_exports():
    flipping = result(0.9, **{"JPEG 90": 0.95, "downscale 0.75": 0.1})
    rows = [C.result_row(flipping, 0.5, 0.15),
            C.result_row(C.ImageResult("bad.gif", "f" * 64, error="corrupt"), 0.5, 0.15)]
    assert rows[0]["verdict"] == "unsure" and rows[0]["stability"] == "flips"
    assert rows[0]["downscale 0.75"] == 0.1 and rows[0]["members_agree"] is None
    assert rows[1]["verdict"] == "error" and rows[1]["p_fake"] is None
    assert all(list(row) == C.TABLE_COLUMNS for row in rows)
    parsed = list(csv.DictReader(io.StringIO(C.rows_to_csv(rows))))
    assert [p["file"] for p in parsed] == ["x.png", "bad.gif"]
    doc = json.loads(C.rows_to_json(rows, 0.5, 0.15, "bundle"))
    assert doc["threshold"] == 0.5 and doc["results"][1]["error"] == "corrupt"


def test_metadata_reads_exif_and_hash():
    from PIL import Image

    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x010F] = "TestCam"  # Make
    Image.new("RGB", (20, 10), "red").save(buffer, format="JPEG", exif=exif)
    meta = C.image_metadata("cam.jpg", buffer.getvalue())
    assert (meta["format"], meta["width"], meta["height"]) == ("JPEG", 20, 10)
    assert meta["exif"] == {"Make": "TestCam"}
    assert meta["sha256"] == C.sha256_hex(buffer.getvalue())


def test_spectrum_chart_rows_with_and_without_reference():
    comparison = {"radius": np.linspace(0.1, 1.4, 8), "image": np.linspace(0, 1, 8),
                  "reference": None}
    assert {r["series"] for r in C.spectrum_chart_rows(comparison)} == {"this image"}
    comparison["reference"] = {f"{k}_{s}": np.ones(8) for k in ("real", "fake")
                               for s in ("mean", "std")}
    rows = C.spectrum_chart_rows(comparison)
    assert len(rows) == 24 and rows[-1]["radius"] == pytest.approx(1.4)
    assert {r["high"] - r["low"] for r in rows if r["series"] != "this image"} == {2.0}


def test_has_cnn_looks_into_ensemble_members():
    from forensics.detectors import create_detector

    assert not C.has_cnn(create_detector("spectral"))
    assert C.has_cnn(create_detector("cnn"))
    ensemble = create_detector("ensemble")
    ensemble.members_ = {"a": create_detector("spectral"), "b": create_detector("cnn")}
    assert C.has_cnn(ensemble)


def test_robustness_metrics_from_csv_and_json(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"metrics": [
        {"detector": "spectral", "generator": "dcgan", "perturbation": "jpeg_pil/q=90",
         "level": 90, "ap": 0.9, "n_real": 10},
        {"detector": "spectral", "generator": "dcgan", "perturbation": "blur/sigma=1",
         "level": 1, "ap": 0.7, "n_real": 10},
        {"detector": "spectral", "generator": "dcgan", "perturbation": "social",
         "level": None, "ap": 0.5, "n_real": 10}]}))
    assert RobustnessResults.is_results(tmp_path)
    table = pd.DataFrame(RobustnessResults(tmp_path).metrics())
    assert list(table["family"]) == ["jpeg_pil", "blur", "social"]
    assert C.metric_columns(table) == ["ap"]
    assert C.metric_records(table)[2]["level"] is None
    assert len(C.select_rows(table, family="blur", generator=None, detector="spectral")) == 1


def test_sample_paths_is_deterministic():
    paths = [str(i) for i in range(100)]
    assert C.sample_paths(paths, 5, seed=1) == C.sample_paths(paths, 5, seed=1)
    assert C.sample_paths(paths[:3], 5) == paths[:3]


def test_large_uploads_are_shown_shrunk_or_cropped_never_whole():
    """What the app sends to the browser is bounded: pictures shrink to DISPLAY_SIDE (aspect
    kept), pixel-level maps take the central NATIVE_CROP px unresampled; small images pass."""
    wide = np.random.default_rng(0).integers(0, 256, (1500, 3000, 3), dtype=np.uint8)
    shown = C.display_copy(wide)
    assert shown.shape == (512, C.DISPLAY_SIDE, 3)
    assert C.display_copy(wide, C.THUMBNAIL_SIDE).shape == (128, 256, 3)
    small = wide[:100, :200]
    assert C.display_copy(small) is small
    crop = C.native_crop(wide)
    assert crop.shape == (C.NATIVE_CROP, C.NATIVE_CROP, 3)
    np.testing.assert_array_equal(crop, wide[238:238 + 1024, 988:988 + 1024])
    assert C.native_crop(small).shape == small.shape
