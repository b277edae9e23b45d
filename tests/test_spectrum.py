"""Azimuthal spectrum features: fixed length at any size, batching, and known signals."""

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter, zoom

from forensics.features import azimuthal_spectra, azimuthal_spectrum, log_power_spectrum, to_grey


def smooth_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Gaussian-blurred colour noise: a stand-in for a camera image's falling spectrum."""
    noise = gaussian_filter(rng.normal(size=(height, width, 3)), sigma=(1.5, 1.5, 0))
    return np.clip(128 + 40 * noise / noise.std(), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("shape", [(8, 8), (31, 47), (64, 64), (1, 40), (40, 1), (1, 1), (2, 3)])
def test_length_is_n_bins_at_any_size(shape):
    image = np.random.default_rng(0).integers(0, 256, shape + (3,), dtype=np.uint8)
    for n_bins in (64, 16):
        curve = azimuthal_spectrum(image, n_bins=n_bins)
        assert curve.shape == (n_bins,)
        assert curve.dtype == np.float32
        assert np.isfinite(curve).all()


def test_flat_image_is_finite():
    curve = azimuthal_spectrum(np.full((16, 16, 3), 77, dtype=np.uint8))
    assert np.isfinite(curve).all()


def test_batched_equals_per_image_in_input_order():
    rng = np.random.default_rng(1)
    shapes = [(32, 32), (31, 47), (32, 32), (8, 8), (32, 32)]
    images = [rng.integers(0, 256, s + (3,), dtype=np.uint8) for s in shapes]
    for window in (True, False):
        batch = azimuthal_spectra(images, n_bins=32, window=window)
        single = np.stack([azimuthal_spectrum(im, n_bins=32, window=window) for im in images])
        assert batch.shape == (5, 32) and batch.dtype == np.float32
        np.testing.assert_allclose(batch, single, rtol=1e-5, atol=1e-5)


def test_checkerboard_artifact_raises_top_bins():
    """A faint period-2 grid whose strength follows the content, as uneven transposed-conv
    overlap leaves it, lifts the top (near-Nyquist) bins and leaves the low ones alone."""
    rng = np.random.default_rng(2)
    image = smooth_image(rng, 64, 64)
    i, j = np.indices((64, 64))
    strength = gaussian_filter(rng.normal(size=(64, 64)), 2)
    grid = 4 * strength / strength.std() * ((-1.0) ** i + (-1.0) ** j) / 2
    with_grid = np.clip(image + grid[..., None], 0, 255).astype(np.uint8)
    plain, gridded = azimuthal_spectrum(image), azimuthal_spectrum(with_grid)
    assert gridded[-4:].mean() - plain[-4:].mean() > 2.0
    assert np.abs(gridded[:32] - plain[:32]).mean() < 0.1


def test_nearest_neighbour_upsampling_raises_top_bins():
    """Nearest-neighbour upsampling leaves block edges that cubic upsampling of the same
    content does not: more power near Nyquist."""
    small = smooth_image(np.random.default_rng(3), 32, 32)
    nearest = small.repeat(2, axis=0).repeat(2, axis=1)
    cubic = np.clip(zoom(small.astype(np.float64), (2, 2, 1), order=3), 0, 255).astype(np.uint8)
    assert azimuthal_spectrum(nearest)[-8:].mean() > azimuthal_spectrum(cubic)[-8:].mean() + 1.0


def test_level_does_not_depend_on_image_size():
    """The power is normalised, so white noise gives the same curve at 32 and 128 pixels."""
    rng = np.random.default_rng(4)
    small = azimuthal_spectra(rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8))
    large = azimuthal_spectra(rng.integers(0, 256, (4, 128, 128, 3), dtype=np.uint8))
    assert abs(small[:, 8:56].mean() - large[:, 8:56].mean()) < 0.2


def test_log_power_spectrum_peaks_at_known_frequency():
    i, j = np.indices((64, 96))
    stripes = 128 + 60 * np.cos(2 * np.pi * j / 8)  # 96 / 8 = 12 cycles across the width
    image = np.repeat(stripes[..., None], 3, axis=2).astype(np.uint8)
    spectrum = log_power_spectrum(image)
    assert spectrum.shape == (64, 96) and spectrum.dtype == np.float32
    peak = np.unravel_index(np.argmax(spectrum), spectrum.shape)
    assert peak[0] == 32 and abs(int(peak[1]) - 48) == 12


def test_to_grey_uses_bt601_weights():
    image = np.zeros((2, 2, 3), dtype=np.uint8)
    image[0, 0] = (255, 0, 0)
    image[0, 1] = (0, 255, 0)
    image[1, 0] = (0, 0, 255)
    image[1, 1] = (255, 255, 255)
    np.testing.assert_allclose(to_grey(image), [[0.299, 0.587], [0.114, 1.0]], atol=1e-6)


@pytest.mark.parametrize(
    "bad",
    [np.zeros((8, 8), np.uint8), np.zeros((8, 8, 4), np.uint8), np.zeros((8, 8, 3), np.float32)],
)
def test_rejects_non_rgb_uint8(bad):
    with pytest.raises(ValueError, match="RGB uint8"):
        azimuthal_spectrum(bad)


def test_rejects_bad_n_bins():
    with pytest.raises(ValueError, match="n_bins"):
        azimuthal_spectrum(np.zeros((8, 8, 3), np.uint8), n_bins=0)


def test_spectra_by_generator_groups_draws_and_skips_broken_files(tmp_path):
    from forensics.corpus import discover_corpus
    from crashsafe.images import save_png
    from forensics.spectra import spectra_by_generator

    rng, root = np.random.default_rng(0), tmp_path / "c"
    for i in range(12):
        save_png(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), root / "real" / f"{i}.png")
        small = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        save_png(small.repeat(2, 0).repeat(2, 1), root / "fake" / "nn" / f"{i}.png")
    (root / "fake" / "nn" / "broken.png").write_bytes(b"not a png")
    corpus = discover_corpus(root)
    spectra = spectra_by_generator([corpus], n_bins=16)
    assert list(spectra) == ["real", "nn"] and spectra["real"].shape == (12, 16)
    assert len(spectra["nn"]) == 12  # the broken file is left out
    # nearest-neighbour doubling moves energy away from the top band: the groups differ there
    assert spectra["nn"][:, -4:].mean() < spectra["real"][:, -4:].mean()
    drawn = spectra_by_generator([corpus], n_bins=16, per_group=5, seed=1)
    assert {len(v) for v in drawn.values()} == {5}
    assert np.array_equal(drawn["real"], spectra_by_generator([corpus], n_bins=16, per_group=5,
                                                              seed=1)["real"])
