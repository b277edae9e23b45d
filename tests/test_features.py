"""DCT, residual and NPR features and the feature registry: shapes, batching, known signals."""

import tracemalloc

import numpy as np
import pytest
import scipy.fft

from forensics.features import (
    azimuthal_spectra,
    create_features,
    dct_spectra,
    feature_parameters,
    highpass_residual,
    list_features,
    npr_residual,
    npr_spectra,
    residual_spectra,
    tile_log_dct,
)
from forensics.features.spectrum import (TILED_ABOVE, feature_tiles, image_planes,
                                         planes_azimuthal_spectra)
from test_spectral_detector import real_image

SHAPES = [(32, 32), (37, 53), (32, 32), (64, 40)]


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [real_image(rng, *shape) for shape in SHAPES]


@pytest.mark.parametrize("extract", [azimuthal_spectra, residual_spectra, npr_spectra])
@pytest.mark.parametrize("channels, width", [("grey", 16), ("rgb", 48)])
def test_curve_features_batched_equal_single(images, extract, channels, width):
    batch = extract(images, n_bins=16, channels=channels)
    single = np.concatenate([extract([im], n_bins=16, channels=channels) for im in images])
    assert batch.shape == (len(images), width) and batch.dtype == np.float32
    assert np.isfinite(batch).all()
    np.testing.assert_allclose(batch, single, rtol=1e-5, atol=1e-5)


def test_rgb_curves_of_a_grey_image_repeat_the_grey_curve(images):
    grey = np.repeat(images[0][..., :1], 3, axis=2)
    rgb = azimuthal_spectra([grey], n_bins=8, channels="rgb")[0]
    np.testing.assert_allclose(rgb.reshape(3, 8), np.tile(rgb[:8], (3, 1)), atol=1e-5)


def test_dct_matches_scipy_on_one_tile():
    rng = np.random.default_rng(1)
    planes = rng.random((1, 1, 16, 16)).astype(np.float32)
    expected = np.log(np.abs(scipy.fft.dctn(planes[0, 0], norm="ortho")) + 1e-6)
    np.testing.assert_allclose(tile_log_dct(planes, tile=16)[0, 0], expected, rtol=1e-4, atol=1e-4)


def test_dct_averages_centred_tiles_without_resizing(images):
    features = dct_spectra(images, tile=16, channels="rgb")
    assert features.shape == (len(images), 3 * 16 * 16)
    # A 37x53 image holds 2x3 tiles of 16 starting at (2, 2); the rest is left out.
    planes = images[1][None].transpose(0, 3, 1, 2).astype(np.float32) / 255
    tiles = [tile_log_dct(planes[..., 2 + 16 * i:18 + 16 * i, 2 + 16 * j:18 + 16 * j], 16)
             for i in range(2) for j in range(3)]
    np.testing.assert_allclose(features[1], np.mean(tiles, axis=0).ravel(), rtol=1e-4, atol=1e-4)


def test_dct_refuses_images_smaller_than_a_tile():
    with pytest.raises(ValueError, match="at least 32x32.*never resized"):
        dct_spectra([np.zeros((20, 40, 3), np.uint8)], tile=32)


def test_dct_shows_nearest_upsampling():
    """Upsampling by 2 empties the DCT row and column at half the tile and mirrors low
    frequencies into the highest ones (the grid of peaks Frank et al. describe)."""
    rng = np.random.default_rng(2)
    real = dct_spectra([real_image(rng, 32, 32) for _ in range(4)], tile=16).reshape(-1, 16, 16)
    upsampled = [real_image(rng, 16, 16).repeat(2, 0).repeat(2, 1) for _ in range(4)]
    fake = dct_spectra(upsampled, tile=16).reshape(-1, 16, 16)
    real, fake = real.mean(axis=0), fake.mean(axis=0)
    assert fake[8].max() < real[8].min() - 5 and fake[:, 8].max() < real[:, 8].min() - 5
    assert fake[12:, 12:].mean() > real[12:, 12:].mean() + 1


def test_npr_residual_is_zero_on_nearest_upsampled_images():
    rng = np.random.default_rng(3)
    small = rng.random((2, 1, 5, 7)).astype(np.float32)
    upsampled = small.repeat(2, axis=-2).repeat(2, axis=-1)
    assert np.abs(npr_residual(upsampled)).max() == 0
    odd = rng.random((1, 1, 9, 11)).astype(np.float32)
    assert npr_residual(odd).shape == (1, 1, 8, 10)  # cropped to even sizes
    with pytest.raises(ValueError, match="2x2"):
        npr_residual(np.zeros((1, 1, 1, 8), np.float32))


@pytest.mark.parametrize("shape", [(3, 37, 50), (1, 1, 1), (2, 1, 5), (2, 2), (3, 7, 9)])
def test_highpass_residual_is_the_kb_kernel_with_mirrored_borders(shape):
    from scipy.ndimage import correlate

    planes = np.random.default_rng(1).random(shape).astype(np.float32) * 255
    kb = np.array([[-1, 2, -1], [2, -4, 2], [-1, 2, -1]], np.float32) / 4
    expected = correlate(planes, kb.reshape((1,) * (len(shape) - 2) + kb.shape), mode="reflect")
    np.testing.assert_allclose(highpass_residual(planes), expected, atol=1e-4)


def test_highpass_residual_removes_smooth_content():
    i, j = np.indices((16, 16)).astype(np.float32)
    ramp = (0.01 * i + 0.02 * j)[None, None]
    assert np.abs(highpass_residual(ramp)[..., 1:-1, 1:-1]).max() < 1e-6
    assert np.abs(highpass_residual(np.full((1, 1, 8, 8), 0.7, np.float32))).max() < 1e-6


def test_registry_combines_families(images):
    assert list_features() == ["dct", "fft", "npr", "residual", "selfdesc"]
    extract = create_features("fft+npr", n_bins=8, channels="rgb")
    rows = extract(images)
    assert rows.shape == (len(images), 48) and rows.dtype == np.float64
    assert extract.blocks == [("fft", 0, 24), ("npr", 24, 48)]
    np.testing.assert_allclose(rows[:, 24:], npr_spectra(images, n_bins=8, channels="rgb"))
    assert feature_parameters("dct") == {"tile", "channels"}
    assert create_features("dct", tile=16).n_features == 256
    assert extract.describe()["features"] == "fft+npr"


@pytest.mark.parametrize("name, params, message", [
    ("fft+wavelet", {}, "unknown feature family 'wavelet'"),
    ("fft+fft", {}, "repeats"),
    ("fft", {"tile": 8}, "takes no parameter tile"),
    ("fft", {"n_bins": 0}, "positive integer"),
    ("npr", {"channels": "lab"}, "channels"),
    ("fft", {"window": "yes"}, "window"),
])
def test_registry_rejects_bad_names_and_params(name, params, message):
    with pytest.raises(ValueError, match=message):
        create_features(name, **params)


def _peak_bytes(function) -> int:
    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_large_images_are_described_by_their_tiles_in_bounded_memory():
    """Over TILED_ABOVE pixels, each spectral family gives the mean of its features on
    FEATURE_TILE px tiles: within 0.15 of the whole image's curve (past its lowest
    bin) while holding a tile's worth of memory, not the image's."""
    large = real_image(np.random.default_rng(1), 2080, 2100)
    assert large.shape[0] * large.shape[1] > TILED_ABOVE
    tiles = [np.ascontiguousarray(large[box]) for box in feature_tiles(*large.shape[:2])]
    assert len(tiles) == 9 and tiles[-1].shape == (1024, 1024, 3)
    for extract in (azimuthal_spectra, residual_spectra, npr_spectra, dct_spectra):
        np.testing.assert_allclose(extract([large])[0], extract(tiles).mean(axis=0),
                                   rtol=1e-5, atol=1e-5)
    whole = planes_azimuthal_spectra(image_planes(large[None]), 64, True)[0]
    assert np.abs(azimuthal_spectra([large])[0] - whole)[1:].max() < 0.15
    whole_peak = _peak_bytes(lambda: planes_azimuthal_spectra(image_planes(large[None]), 64,
                                                              True))
    tiled_peak = _peak_bytes(lambda: azimuthal_spectra([large]))
    assert tiled_peak < whole_peak / 3, (tiled_peak, whole_peak)
