"""Each page of the Streamlit app run headless through streamlit.testing's AppTest."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from app_support import (APP_DIR, TIMEOUT, app, app_root, photo_png,  # noqa: F401 - fixtures
                         upsampled_noise)
import components as C


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
    monkeypatch.setenv(C.ENV_MAX_PIXELS, "1000")
    app.file_uploader(key="uploads").set_value([("big.png", photo_png(48), "image/png")]).run()
    assert not app.exception
    assert "over the limit of 1,000" in app.error[0].value


def test_verdict_page_without_a_usable_bundle_says_what_to_do(app_root, monkeypatch, tmp_path):
    monkeypatch.setenv(C.ENV_DETECTOR, str(tmp_path / "nothing"))
    monkeypatch.setenv(C.ENV_ROOT, str(app_root[0]))
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
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Generator"] == "dcgan" and metrics["Steps"] == "3"


def test_robustness_page_filters_families(app):
    app.switch_page("pages/robustness.py").run()
    assert not app.exception
    assert app.selectbox(key="robust_metric").value == "ap"
    assert app.selectbox(key="robust_family").value == "jpeg_pil"
    assert len(app.dataframe[0].value) == 6
    app.selectbox(key="robust_generator").set_value("dcgan").run()
    assert list(app.dataframe[0].value["level"]) == [100, 90, 70]
    assert app.get("vega_lite_chart")
    assert "falls below 0.8 at JPEG quality 70" in app.markdown[-1].value


def test_model_page_renders_the_card_and_its_members(app, app_root):
    app.switch_page("pages/model.py").run()
    assert not app.exception
    kinds = [m.value for m in app.metric if m.label == "Detector kind"]
    assert kinds == ["ensemble", "spectral", "cnn"]  # the ensemble, then each member's card
    threshold = C.read_json(app_root[1] / "detector.json")["threshold"]
    assert float(app.metric[1].value) == pytest.approx(threshold, abs=1e-3)
    assert [e.label for e in app.expander][-1] == "The whole card as JSON"
    assert any("Resizing" in m.value for m in app.markdown)  # known failure modes
