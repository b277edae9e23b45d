"""Explanations: display-ready spectra, residuals, error levels, Grad-CAM, JPEG quality."""

import io

import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image

from crashsafe.images import encode_png, load_image
from forensics import explain
from forensics.detectors import create_detector
from forensics.detectors.ensemble import EnsembleDetector
from forensics.perturb import jpeg
from test_spectral_detector import corpus

PHOTO = np.ascontiguousarray(skimage.data.chelsea()[50:178, 100:228])  # 128 x 128 camera photo


@pytest.fixture(scope="module")
def data():
    return corpus(0, 24, [(32, 32)]), corpus(1, 10, [(32, 32)])


@pytest.fixture(scope="module")
def spectral(data):
    (x, y), (xv, yv) = data
    return create_detector("spectral", n_bins=32).fit(x, y, val_images=xv, val_labels=yv)


@pytest.fixture(scope="module")
def cnn(data):
    """EfficientNet-Lite0 from its packaged ImageNet weights, barely fine-tuned: Grad-CAM
    needs the real architecture, not a good detector."""
    (x, y), (xv, yv) = data
    return create_detector("cnn", crop_size=32, epochs=1, steps_per_epoch=2, batch_size=8,
                           progress=False).fit(x, y, val_images=xv, val_labels=yv)


def test_spectrum_2d_is_a_display_map_centred_on_zero_frequency():
    spectrum = explain.spectrum_2d(PHOTO)
    assert spectrum.shape == (128, 128) and spectrum.dtype == np.float32
    assert spectrum.min() == 0 and spectrum.max() == 1
    # A photo's power falls with frequency: the centre outshines the borders.
    assert spectrum[56:72, 56:72].mean() > spectrum[:16].mean() + 0.2


def test_azimuthal_curve_against_stored_references(spectral, tmp_path):
    for source in (spectral, spectral.save(tmp_path / "spectral")):
        result = explain.azimuthal_vs_reference(PHOTO, source)
        assert result["radius"].shape == result["image"].shape == (32,)
        assert 0 < result["radius"][0] < result["radius"][-1] < np.sqrt(2)
        assert set(result["reference"]) == {"real_mean", "real_std", "fake_mean", "fake_std"}
        assert np.array_equal(result["reference"]["fake_mean"], spectral.reference_["fake_mean"])


def test_azimuthal_curve_without_references(cnn):
    result = explain.azimuthal_vs_reference(PHOTO, cnn)
    assert result["reference"] is None and result["image"].shape == (64,)
    assert np.isfinite(result["image"]).all()


def test_noise_residual_shows_texture_not_flat_areas():
    flat = np.full((32, 32, 3), 90, np.uint8)
    assert not explain.noise_residual(flat).any()
    residual = explain.noise_residual(PHOTO)
    assert residual.shape == PHOTO.shape and residual.dtype == np.uint8
    assert residual.max() == 255 and residual.std() > 10


def test_error_levels_are_lower_for_a_fresh_jpeg_than_for_a_png():
    fresh_jpeg = jpeg(PHOTO, 90)
    png = load_image(encode_png(PHOTO))
    ela_jpeg = explain.error_level_analysis(fresh_jpeg, quality=90)
    ela_png = explain.error_level_analysis(png, quality=90)
    assert ela_png.shape == PHOTO.shape and ela_png.dtype == np.uint8
    assert ela_jpeg.mean() < 0.8 * ela_png.mean()


@pytest.mark.parametrize("size", [(128, 128), (600, 500)])
def test_gradcam_is_a_map_in_unit_range_of_the_image_size(cnn, size):
    image = cv2.resize(skimage.data.astronaut(), size[::-1], interpolation=cv2.INTER_AREA)
    heat = explain.gradcam(cnn, image)
    assert heat.shape == size and heat.dtype == np.float32
    assert np.isfinite(heat).all() and heat.min() >= 0 and heat.max() == 1
    assert heat.std() > 0.01  # not constant


def test_gradcam_of_a_small_image_is_taken_at_a_stage_with_a_map(cnn):
    """At 32 px the last stage of Lite0 is 1 x 1: a constant map. An earlier stage is used."""
    backbone = cnn.network_.backbone

    def stage(side):
        return backbone.feature_info[explain.cam_stage(backbone, side)]["module"]

    assert stage(224) == "blocks.6"  # stride 32: 7 x 7, as in the paper
    assert stage(64) == "blocks.2"  # stride 8: 8 x 8
    assert stage(32) == "blocks.1"  # stride 4: 8 x 8
    assert stage(8) == "blocks.0"  # the shallowest when none has 7 cells
    small = cv2.resize(skimage.data.astronaut(), (32, 32), interpolation=cv2.INTER_AREA)
    heat = explain.gradcam(cnn, small, "fake") + explain.gradcam(cnn, small, "real")
    assert heat.shape == (32, 32) and heat.std() > 0.01  # it says where, not just "all of it"
    # Asking for the last stage anyway gives the old, uninformative constant map.
    flat = explain.gradcam(cnn, small, "fake", min_cells=1) + explain.gradcam(cnn, small, "real",
                                                                              min_cells=1)
    assert flat.std() < 1e-6


def test_gradcam_uses_an_ensembles_cnn_member_and_refuses_detectors_without_one(cnn, spectral):
    ensemble = EnsembleDetector()
    ensemble.members_ = {"spectral": spectral, "cnn": cnn}
    assert np.array_equal(explain.gradcam(ensemble, PHOTO), explain.gradcam(cnn, PHOTO))
    for target in ("fake", "real"):  # one of them is the verdict's map
        assert np.isfinite(explain.gradcam(cnn, PHOTO, target)).all()
    with pytest.raises(ValueError, match="no CNN"):
        explain.gradcam(spectral, PHOTO)
    with pytest.raises(ValueError, match="target"):
        explain.gradcam(cnn, PHOTO, target="both")


def test_overlay_blends_a_heat_map_onto_the_image():
    heat = np.tile(np.linspace(0, 1, 128, dtype=np.float32), (128, 1))
    out = explain.overlay(PHOTO, heat, 0.5)
    assert out.shape == PHOTO.shape and out.dtype == np.uint8
    assert np.array_equal(explain.overlay(PHOTO, heat, 0.0), PHOTO)
    hot = explain.overlay(PHOTO, heat, 1.0)
    assert hot[0, -1, 0] > 100 and hot[0, 0, 2] > 100  # jet: red at 1, blue at 0
    assert explain.overlay(PHOTO, heat[::4, ::4], 0.5).shape == PHOTO.shape
    with pytest.raises(ValueError, match="alpha"):
        explain.overlay(PHOTO, heat, 1.5)


def _jpeg_bytes(quality: int, encoder: str) -> bytes:
    if encoder == "cv2":
        ok, data = cv2.imencode(".jpg", PHOTO[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
        assert ok
        return data.tobytes()
    buffer = io.BytesIO()
    Image.fromarray(PHOTO).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


@pytest.mark.parametrize("encoder", ["pil", "cv2"])
@pytest.mark.parametrize("quality", [50, 75, 95])
def test_jpeg_quality_estimate_within_five(quality, encoder):
    assert abs(explain.jpeg_quality_estimate(_jpeg_bytes(quality, encoder)) - quality) <= 5


def test_jpeg_quality_estimate_reads_paths_and_says_none_for_other_data(tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(_jpeg_bytes(80, "pil"))
    assert explain.jpeg_quality_estimate(path) == 80
    assert explain.jpeg_quality_estimate(encode_png(PHOTO)) is None
    assert explain.jpeg_quality_estimate(b"not an image") is None


def test_gradcam_from_several_threads_at_once_equals_one_at_a_time(cnn):
    """The app computes maps for concurrent sessions on one shared network."""
    from concurrent.futures import ThreadPoolExecutor

    images = [cv2.resize(photo, (side, side), interpolation=cv2.INTER_AREA)
              for photo in (skimage.data.astronaut(), skimage.data.coffee(), PHOTO)
              for side in (32, 64)]
    alone = [explain.gradcam(cnn, image) for image in images]
    with ThreadPoolExecutor(max_workers=len(images)) as pool:
        together = list(pool.map(lambda image: explain.gradcam(cnn, image), images * 3))
    for i, heat in enumerate(together):
        np.testing.assert_allclose(heat, alone[i % len(images)], atol=1e-5)


def test_pixel_maps_go_strip_by_strip_with_the_same_result(monkeypatch):
    """The noise residual and error levels work a strip of rows at a time (bounded memory for
    64 MP images; the residual's percentile comes from an exact count of its values): many
    strips give exactly the map of one pass."""
    whole = explain.noise_residual(PHOTO), explain.error_level_analysis(PHOTO, quality=80)
    monkeypatch.setattr("crashsafe.images.STRIP_PIXELS", 97)
    np.testing.assert_array_equal(explain.noise_residual(PHOTO), whole[0])
    np.testing.assert_array_equal(explain.error_level_analysis(PHOTO, quality=80), whole[1])
