"""Each page of the Streamlit app run headless through streamlit.testing's AppTest."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from app_support import (APP_DIR, TIMEOUT, app, app_root, photo_png,  # noqa: F401 - fixtures
                         upsampled_noise)
import components as C
from forensics import serving
from crashsafe.files import STAGING_DIR
from conftest import run_cli
from forensics.detectors import BundleError
from forensics.verdict import STABILITY_COPIES


def encoded(image: np.ndarray, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def test_verdict_page_scores_every_format_and_reports_a_bad_file(app, monkeypatch):
    calls = []
    score_upload = C.score_upload
    monkeypatch.setattr(C, "score_upload",
                        lambda *a, **k: calls.append(a[1]) or score_upload(*a, **k))
    photo = np.asarray(Image.open(io.BytesIO(photo_png(64))))
    exif = Image.Exif()
    exif[0x010F] = "TestCam"
    fake = upsampled_noise(np.random.default_rng(5))
    app.file_uploader(key="uploads").set_value([
        ("photo.jpg", encoded(photo, "JPEG", quality=95, exif=exif), "image/jpeg"),
        ("fake.png", encoded(fake, "PNG"), "image/png"),
        ("photo.webp", encoded(photo, "WEBP", lossless=True), "image/webp"),
        ("broken.png", b"\x89PNG\r\n\x1a\n truncated", "image/png"),
    ]).run()
    assert not app.exception
    assert len(app.error) == 1 and "**broken.png** could not be scored" in app.error[0].value
    table = app.dataframe[0].value
    assert list(table["file"]) == ["photo.jpg", "fake.png", "photo.webp", "broken.png"]
    # Downscaling wipes out the upsampling trace: the fake's call flips, so it is "unsure".
    assert list(table["verdict"]) == ["real", "unsure", "real", "error"]
    assert table["p_fake"][1] > 0.9 and table["downscale 0.75"][1] < 0.5
    assert [b.label for b in app.download_button] == ["Download CSV", "Download JSON"]
    assert [t.label for t in app.tabs] == ["2-D spectrum", "Azimuthal spectrum", "Noise residual",
                                          "Error levels (ELA)", "Grad-CAM", "Metadata"]
    assert "TestCam" in app.dataframe[-1].value.to_string()  # EXIF of the inspected JPEG
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["JPEG quality (est.)"] == "95" and metrics["Format"] == "JPEG"
    # The ensemble's members: their scores, whether they agree, and the CNN's Grad-CAM.
    assert set(app.dataframe[1].value["detector"]) == {"spectral", "cnn"}
    assert table["members_agree"].notna().sum() == 3
    assert app.slider(key="cam_opacity").value == 0.5
    app.slider(key="ela_quality").set_value(70).run()
    assert not app.exception
    assert sorted(calls) == ["broken.png", "fake.png", "photo.jpg", "photo.webp"]

    app.selectbox(key="inspect").set_value("1:fake.png").run()
    assert any("UNSURE: flips when degraded" in w.value for w in app.warning)
    app.slider(key="threshold").set_value(0.99)
    app.slider(key="band").set_value(0.0).run()
    assert not app.exception
    assert len(calls) == 4  # moving the threshold re-used the cached scores
    rows = app.dataframe[0].value
    assert list(rows["verdict"])[0] == "real"


def test_uncertain_band_widens_to_cover_every_score(app):
    assert "Nothing uploaded yet" in app.info[0].value
    app.file_uploader(key="uploads").set_value([("p.png", photo_png(48), "image/png")]).run()
    app.slider(key="threshold").set_value(0.5)
    app.slider(key="band").set_value(0.5).run()
    assert list(app.dataframe[0].value["verdict"]) == ["uncertain"]
    assert any("too close to call" in w.value for w in app.warning)


def test_the_size_limit_refuses_a_large_image_with_a_message(app, monkeypatch):
    monkeypatch.setenv(serving.ENV_MAX_PIXELS, "1000")
    app.file_uploader(key="uploads").set_value([("big.png", photo_png(48), "image/png")]).run()
    assert not app.exception
    assert "over the limit of 1,000" in app.error[0].value


def test_scan_and_the_verdict_page_give_the_same_word_per_file(app, app_root, tmp_path):
    rng = np.random.default_rng(11)
    photo = np.asarray(Image.open(io.BytesIO(photo_png(96))))
    files = {"photo.png": photo_png(64), "photo.jpg": encoded(photo, "JPEG", quality=85),
             "fake32.png": encoded(upsampled_noise(rng), "PNG"),
             "fake64.png": encoded(upsampled_noise(rng, 64), "PNG"),
             "fake48.webp": encoded(upsampled_noise(rng, 48), "WEBP", lossless=True),
             "fake.jpg": encoded(upsampled_noise(rng, 64), "JPEG", quality=95),
             # half photo, half fake: P(fake) about 0.5, within 0.1 of the threshold (0.51)
             "mix.png": encoded(((photo[:64, :64].astype(float) + upsampled_noise(
                 np.random.default_rng(11), 64)) / 2).astype(np.uint8), "PNG")}
    (tmp_path / "in").mkdir()
    for name, data in files.items():
        (tmp_path / "in" / name).write_bytes(data)
    proc = run_cli("scan", tmp_path / "in", "--detector", app_root[1], "--band", "0.1",
                   "--stability", "--out", tmp_path / "scan.csv", "-q")
    with open(tmp_path / "scan.csv", newline="") as fh:
        scanned = {Path(row["path"]).name: row for row in csv.DictReader(fh)}

    app.file_uploader(key="uploads").set_value(
        [(name, data, "application/octet-stream") for name, data in files.items()]).run()
    app.slider(key="band").set_value(0.1).run()
    assert not app.exception
    table = app.dataframe[0].value.set_index("file")
    words = {name: row["verdict"] for name, row in scanned.items()}
    assert words == dict(table["verdict"])
    assert {"real", "uncertain", "unsure"} <= set(words.values())
    for name, row in scanned.items():  # the same scores behind the words
        assert float(row["p_fake"]) == pytest.approx(table["p_fake"][name], abs=1e-3)
        for copy in STABILITY_COPIES:
            assert float(row[copy.column]) == pytest.approx(table[copy.label][name], abs=1e-3)
    counts = {word: list(words.values()).count(word) for word in set(words.values())}
    assert f"{counts['unsure']} unsure" in proc.stdout and "stability check on" in proc.stdout


def test_verdict_page_draws_its_text_before_loading_the_detector(app_root, monkeypatch):
    import streamlit as st

    spinners, real_spinner = [], st.spinner
    monkeypatch.setattr(st, "spinner", lambda text, *a, **k: spinners.append(text)
                        or real_spinner(text, *a, **k))

    def refuse(folder):
        raise BundleError(folder, "not loaded in this test")

    monkeypatch.setattr("forensics.detectors.load_detector", refuse)
    monkeypatch.setenv(serving.ENV_DETECTOR, str(app_root[1]))
    monkeypatch.setenv(serving.ENV_ROOT, str(app_root[0]))
    st.cache_resource.clear()
    at = AppTest.from_file(str(APP_DIR / "Home.py"), default_timeout=TIMEOUT).run()
    assert not at.exception
    # The load failed, yet everything before it is on the page: it was drawn first.
    assert [t.value for t in at.title] == ["Is this image generated?"]
    assert any("calibrated probability" in c.value for c in at.caption)
    assert at.file_uploader(key="uploads").label == "Images to check"
    assert "Nothing uploaded yet" in at.info[0].value
    assert "not loaded in this test" in at.error[0].value
    assert spinners == [f"Loading detector {app_root[1]}…"]


def test_verdict_page_without_a_usable_bundle_says_what_to_do(app_root, monkeypatch, tmp_path):
    monkeypatch.setenv(serving.ENV_DETECTOR, str(tmp_path / "nothing"))
    monkeypatch.setenv(serving.ENV_ROOT, str(app_root[0]))
    at = AppTest.from_file(str(APP_DIR / "Home.py"), default_timeout=TIMEOUT).run()
    assert not at.exception
    assert "No detector bundle" in at.error[0].value
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "detector.json").write_text("{not json")
    at.run()
    assert not at.exception
    assert "is not valid JSON" in at.error[0].value


def test_corpora_page_shows_counts_samples_and_runs(app):
    app.switch_page("pages/corpora.py").run()
    assert not app.exception
    assert app.selectbox(key="corpus").options == ["fake_nn", "real32"]
    app.selectbox(key="corpus").set_value("fake_nn").run()
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Fake"] == "90" and metrics["Layout"] == "real-fake"
    assert "nn_upsample" in app.dataframe[0].value.to_string()
    assert len(app.image) == 24
    app.radio(key="browse_kind").set_value("Training runs").run()
    assert not app.exception
    assert app.selectbox(key="run").options == ["gan_run"]
    metrics = {m.label: m.value for m in app.metric}
    # The run is `forensics zoo train`'s: its config.json nests the model config under "config".
    assert metrics == {"Generator": "dcgan", "Steps": "3", "Resolution": "32",
                       "Final D(x) − D(G(z))": metrics["Final D(x) − D(G(z))"]}
    assert [e.label for e in app.expander] == ["config.json"]
    assert len(app.image) == 2  # samples.png and curves.png


def test_corpora_page_charts_the_mean_spectrum_of_each_generator(app):
    app.switch_page("pages/corpora.py").run()
    app.radio(key="browse_kind").set_value("Spectra by generator").run()
    assert not app.exception
    assert app.multiselect(key="spectra_corpora").value == ["fake_nn", "real32"]
    assert len(app.get("vega_lite_chart")) == 1
    table = app.dataframe[0].value
    assert list(table["generator"]) == ["real", "nn_upsample"] and table["images"].min() > 8
    app.multiselect(key="spectra_corpora").set_value(["real32"]).run()
    assert list(app.dataframe[0].value["generator"]) == ["real"]


def test_corpora_page_leaves_a_checkpoint_save_in_progress_alone(app_root, monkeypatch,
                                                                  tmp_path):
    """A training beside the app stages its next checkpoint in .pending/: viewing the run
    reads the last complete config and neither finishes nor discards that save."""
    run = tmp_path / "run"
    shutil.copytree(app_root[0] / "gan_run", run)
    (run / STAGING_DIR).mkdir()
    (run / STAGING_DIR / "weights.safetensors").write_bytes(b"half written")
    monkeypatch.setenv(serving.ENV_DETECTOR, str(app_root[1]))
    monkeypatch.setenv(serving.ENV_ROOT, str(tmp_path))
    at = AppTest.from_file(str(APP_DIR / "Home.py"), default_timeout=TIMEOUT).run()
    at.switch_page("pages/corpora.py").run()
    at.radio(key="browse_kind").set_value("Training runs").run()
    assert not at.exception
    assert {m.label: m.value for m in at.metric}["Resolution"] == "32"
    assert (run / STAGING_DIR / "weights.safetensors").read_bytes() == b"half written"


def test_corpora_page_shows_evaluations_where_they_are_written(app, app_root):
    """evaluation.json lies where `forensics evaluate --out` (or the demo, at its top) put it,
    never in a run folder: the page browses those folders and shows the printed table."""
    app.switch_page("pages/corpora.py").run()
    app.radio(key="browse_kind").set_value("Evaluations").run()
    assert not app.exception
    assert app.selectbox(key="evaluation").options == ["evaluation"]
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Detector"] == "ensemble" and metrics["Split"] == "test"
    table = app.dataframe[0].value
    assert list(table["generator"]) == ["nn_upsample", "mean", "all"]
    assert table["ap"].between(0, 1).all() and table["n_fake"][0] > 0


def test_robustness_page_filters_families(app):
    app.switch_page("pages/robustness.py").run()
    assert not app.exception
    assert app.selectbox(key="robust_metric").value == "ap"
    assert app.selectbox(key="robust_family").value == "jpeg_pil"
    assert len(app.dataframe[0].value) == 6
    app.selectbox(key="robust_generator").set_value("dcgan").run()
    assert list(app.dataframe[0].value["level"]) == [100, 90, 70]
    assert app.get("vega_lite_chart")
    # AP stays at 0.90 but every fake falls below the threshold: the page says it broke there.
    assert (":red[**broken**] · `spectral` · breaks at JPEG quality 90: balanced accuracy 0.50 "
            "at the saved threshold, below 0.7 (fake accuracy 0.00: every fake called real, "
            "real accuracy 1.00); AP 0.90") in app.markdown[-1].value


def test_model_page_renders_the_card_and_its_members(app, app_root):
    app.switch_page("pages/model.py").run()
    assert not app.exception
    kinds = [m.value for m in app.metric if m.label == "Detector kind"]
    assert kinds == ["ensemble", "spectral", "cnn"]  # the ensemble, then each member's card
    threshold = json.loads((app_root[1] / "detector.json").read_text())["threshold"]
    assert float(app.metric[1].value) == pytest.approx(threshold, abs=1e-3)
    assert [e.label for e in app.expander][-1] == "The whole card as JSON"
    assert any("Resizing" in m.value for m in app.markdown)  # known failure modes
