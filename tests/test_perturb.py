"""Tests for forensics.perturb: each family perturbs, keeps the contract, and never no-ops silently."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data

from crashsafe.images import encode_png
from forensics import perturb
from forensics.perturb import (
    PERTURBATIONS,
    Perturbation,
    PerturbationNoOp,
    apply,
    crop,
    gaussian_blur,
    gaussian_noise,
    identity_levels,
    jpeg,
    longest_side,
    parse_perturbation,
    random_augment,
    resize,
)

ASTRONAUT = skimage.data.astronaut()[::4, ::4][:96].copy()  # natural photo, 96 x 128
NOISE = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
IMAGES = {
    "astronaut": ASTRONAUT,
    "noise": NOISE,
    "flipped view": ASTRONAUT[:, ::-1],  # not C-contiguous
}

# (registry name, level, other keyword arguments) at non-identity levels.
CASES = [
    ("jpeg_pil", 75, {}),
    ("jpeg_cv2", 75, {}),
    ("jpeg_pil", 100, {}),
    ("blur", 1.5, {}),
    ("resize", 0.5, {}),
    ("resize", 1.5, {"interpolation": "nearest"}),
    ("resize", 0.7, {"interpolation": "bicubic", "back": True}),
    ("resize", 0.5, {"interpolation": "area", "back": True}),
    ("noise", 5.0, {}),
    ("crop", 0.8, {}),
    ("crop", 0.6, {"mode": "random"}),
    ("gamma", 1.5, {}),
    ("gamma", 0.6, {}),
    ("contrast", 0.5, {}),
    ("contrast", 1.5, {}),
    ("longest_side", 32, {}),
    ("social", None, {}),
]


def case_id(case: tuple) -> str:
    name, level, kwargs = case
    return "-".join([name, str(level), *map(str, kwargs.values())])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / mse)) if mse else float("inf")


def mean_abs_laplacian(image: np.ndarray) -> float:
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float64)
    return float(np.abs(cv2.Laplacian(grey, cv2.CV_64F)).mean())


@pytest.mark.parametrize("image_name", IMAGES)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_changes_image_and_keeps_the_contract(case, image_name):
    name, level, kwargs = case
    image = IMAGES[image_name]
    before = image.copy()
    out = apply(image, name, level, seed=0, **kwargs)
    np.testing.assert_array_equal(image, before)  # input untouched
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    assert out.flags.c_contiguous and not np.shares_memory(out, image)
    assert out.shape != image.shape or not np.array_equal(out, image)


@pytest.mark.parametrize("name", [n for n in PERTURBATIONS if identity_levels(n)])
def test_identity_level_returns_an_equal_copy(name):
    for level in identity_levels(name):
        out = apply(ASTRONAUT, name, level)
        assert out is not ASTRONAUT and not np.shares_memory(out, ASTRONAUT)
        np.testing.assert_array_equal(out, ASTRONAUT)


def test_identity_levels_per_family():
    assert identity_levels("jpeg_pil") == identity_levels("jpeg_cv2") == ()
    assert identity_levels("blur") == identity_levels("noise") == (0.0,)
    for name in ("resize", "crop", "gamma", "contrast"):
        assert identity_levels(name) == (1.0,)


@pytest.mark.parametrize("name, level, kwargs", [
    ("noise", 5.0, {}),
    ("crop", 0.5, {"mode": "random"}),
    ("social", None, {}),
])
def test_seeded_families_are_deterministic(name, level, kwargs):
    runs = {seed: apply(ASTRONAUT, name, level, seed=seed, **kwargs) for seed in range(6)}
    np.testing.assert_array_equal(runs[3], apply(ASTRONAUT, name, level, seed=3, **kwargs))
    np.testing.assert_array_equal(runs[3], apply(ASTRONAUT, name, level,
                                                 seed=np.random.default_rng(3), **kwargs))
    assert len({out.tobytes() for out in runs.values()}) > 1


def test_noise_and_random_crop_differ_between_seeds():
    assert not np.array_equal(gaussian_noise(ASTRONAUT, 5, seed=0), gaussian_noise(ASTRONAUT, 5, seed=1))
    assert not np.array_equal(crop(ASTRONAUT, 0.5, "random", seed=0), crop(ASTRONAUT, 0.5, "random", seed=1))


@pytest.mark.parametrize("scale", [0.5, 0.3, 1.7])
def test_resize_shape_rules(scale):
    expected = (round(96 * scale), round(128 * scale), 3)
    for interpolation in ("nearest", "bilinear", "bicubic", "area"):
        assert resize(ASTRONAUT, scale, interpolation).shape == expected
        assert resize(ASTRONAUT, scale, interpolation, back=True).shape == ASTRONAUT.shape
    assert resize(ASTRONAUT, 0.001).shape == (1, 1, 3)


@pytest.mark.parametrize("fraction", [0.9, 0.5, 0.25])
def test_crop_shape_rules(fraction):
    expected = (round(96 * fraction), round(128 * fraction), 3)
    assert crop(ASTRONAUT, fraction).shape == expected
    assert crop(ASTRONAUT, fraction, "random", seed=1).shape == expected
    centre = crop(ASTRONAUT, fraction)
    top, left = (96 - expected[0]) // 2, (128 - expected[1]) // 2
    np.testing.assert_array_equal(centre, ASTRONAUT[top:top + expected[0], left:left + expected[1]])


def test_longest_side_shrinks_only():
    assert longest_side(ASTRONAUT, 64).shape == (48, 64, 3)
    assert longest_side(ASTRONAUT.transpose(1, 0, 2), 64).shape == (64, 48, 3)
    np.testing.assert_array_equal(longest_side(ASTRONAUT, 500), ASTRONAUT)


@pytest.mark.parametrize("encoder", ["pil", "cv2"])
def test_jpeg_quality_is_really_applied(encoder):
    low, high = jpeg(ASTRONAUT, 30, encoder), jpeg(ASTRONAUT, 95, encoder)
    assert psnr(low, ASTRONAUT) < psnr(high, ASTRONAUT) - 5
    assert psnr(high, ASTRONAUT) > 30  # colours right: with red and blue swapped it is 13 dB


def test_jpeg_encoders_agree_and_cv2_sizes_follow_quality():
    assert psnr(jpeg(ASTRONAUT, 80, "pil"), jpeg(ASTRONAUT, 80, "cv2")) > 40
    sizes = [len(perturb._encode_cv2(ASTRONAUT, [cv2.IMWRITE_JPEG_QUALITY, q])) for q in (30, 95)]
    assert sizes[0] < sizes[1]


def test_blur_removes_high_frequencies_the_same_way_at_any_size():
    for image in (ASTRONAUT, NOISE):
        assert mean_abs_laplacian(gaussian_blur(image, 2)) < 0.25 * mean_abs_laplacian(image)
    # The kernel depends on sigma only: away from the borders, blurring a crop = cropping the blur.
    margin = 8  # > kernel radius 6 at sigma 1.5
    whole = gaussian_blur(ASTRONAUT, 1.5)[20 + margin:80 - margin, 30 + margin:110 - margin]
    part = gaussian_blur(ASTRONAUT[20:80, 30:110], 1.5)[margin:-margin, margin:-margin]
    np.testing.assert_array_equal(whole, part)


def test_social_chain_shrinks_then_compresses():
    big = cv2.resize(ASTRONAUT, (2000, 1500), interpolation=cv2.INTER_CUBIC)
    out = apply(big, "social", seed=7)
    assert out.shape == (810, 1080, 3)
    shrunk = longest_side(big, 1080)
    assert any(np.array_equal(out, jpeg(shrunk, q)) for q in range(75, 86))


@pytest.mark.parametrize("perturbation", [
    Perturbation("jpeg_pil", 70),
    Perturbation("jpeg_cv2", 30),
    Perturbation("blur", 2),
    Perturbation("resize", 0.5, {"interpolation": "area"}),
    Perturbation("resize", 0.25, {"back": True}),
    Perturbation("noise", 5),
    Perturbation("crop", 0.8, {"mode": "random"}),
    Perturbation("gamma", 0.5),
    Perturbation("contrast", 1.25),
    Perturbation("longest_side", 1080),
    Perturbation("social"),
], ids=lambda p: p.id)
def test_perturbation_id_round_trips(perturbation):
    parsed = parse_perturbation(perturbation.id)
    assert parsed == perturbation and parsed.id == perturbation.id
    assert hash(parsed) == hash(perturbation)
    np.testing.assert_array_equal(perturbation.apply(ASTRONAUT, seed=2),
                                  apply(ASTRONAUT, perturbation.name, perturbation.level, seed=2,
                                        **perturbation.params))


def test_perturbation_ids_are_canonical():
    assert Perturbation("jpeg_pil", 70).id == "jpeg_pil/q=70"
    assert Perturbation("resize", 0.5, {"interpolation": "area"}).id == "resize/scale=0.5,interpolation=area"
    assert Perturbation("resize", 0.5, {"back": True}).id == "resize/scale=0.5,back=true"
    assert Perturbation("blur", 2).id == "blur/sigma=2.0"
    assert Perturbation("resize", 0.5).params == {"interpolation": "bilinear", "back": False}
    assert Perturbation("resize", 0.5, {"interpolation": "bilinear"}) == Perturbation("resize", 0.5)


@pytest.mark.parametrize("text, error", [
    ("jpeg_pil/q=0", ValueError),
    ("jpeg_pil/q=70.5", TypeError),
    ("jpeg_pil", ValueError),
    ("jpeg_pil/q=70,q=80", ValueError),
    ("jpeg_pil/q=70,subsampling=444", ValueError),
    ("resize/scale=0.5,interpolation=lanczos", ValueError),
    ("blur/sigma=nan", ValueError),
    ("blur/sigma=abc", ValueError),
    ("social/q=80", ValueError),
    ("sharpen/amount=1", ValueError),
])
def test_bad_ids_are_refused(text, error):
    with pytest.raises(error):
        parse_perturbation(text)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="uint8"):
        apply(ASTRONAUT.astype(np.float32), "blur", 1.0)
    with pytest.raises(ValueError, match="takes no level"):
        apply(ASTRONAUT, "social", 80)
    with pytest.raises(ValueError, match="JPEG quality"):
        jpeg(ASTRONAUT, 101)
    with pytest.raises(ValueError, match="encoder"):
        jpeg(ASTRONAUT, 70, "libjpeg")


def png_instead_of_jpeg(ext, bgr, params):
    """A broken encoder: lossless PNG bytes whatever was asked, so decoding gives the input back."""
    return True, np.frombuffer(encode_png(bgr[:, :, ::-1]), dtype=np.uint8)


def test_encoder_returning_the_input_is_caught(monkeypatch):
    monkeypatch.setattr(cv2, "imencode", png_instead_of_jpeg)
    with pytest.raises(PerturbationNoOp, match="PNG data, not JPEG"):
        jpeg(ASTRONAUT, 50, "cv2")
    jpeg(ASTRONAUT, 50, "pil")  # unaffected
    caught = 0
    for seed in range(8):  # the augmentation picks cv2 or PIL at random: only cv2 draws fail
        try:
            random_augment(ASTRONAUT, seed, p_blur=0, p_jpeg=1)
        except PerturbationNoOp:
            caught += 1
    assert 0 < caught < 8


def test_gandct_unknown_key_bug_is_caught(monkeypatch):
    real_imencode = cv2.imencode

    def gandct_style(ext, bgr, params):
        """What GANDCTAnalysis passed: the quality as the key, so OpenCV falls back to q=95."""
        return real_imencode(ext, bgr, [params[1], 90])

    monkeypatch.setattr(cv2, "imencode", gandct_style)
    with pytest.raises(PerturbationNoOp, match="ignored quality 30.*quality 95"):
        jpeg(ASTRONAUT, 30, "cv2")


def test_cv2_params_are_checked():
    with pytest.raises(ValueError, match="IMWRITE_JPEG"):
        perturb._encode_cv2(ASTRONAUT, [10, 90])  # the GANDCTAnalysis call
    with pytest.raises(ValueError, match="IMWRITE_JPEG"):
        perturb._encode_cv2(ASTRONAUT, [cv2.IMWRITE_JPEG_QUALITY])


def test_operation_returning_the_input_is_caught(monkeypatch):
    monkeypatch.setattr(perturb, "gaussian_filter", lambda values, sigma: values)
    with pytest.raises(PerturbationNoOp, match="blur sigma=2 left a 128x96 image unchanged"):
        gaussian_blur(ASTRONAUT, 2)


def test_real_no_ops_raise_unless_expected():
    with pytest.raises(PerturbationNoOp):
        resize(ASTRONAUT, 2, "nearest", back=True)  # nearest up x2 then down is lossless
    np.testing.assert_array_equal(resize(ASTRONAUT, 2, "nearest", back=True, check=False), ASTRONAUT)
    with pytest.raises(PerturbationNoOp):
        apply(ASTRONAUT, "blur", 0.1)  # weights off the centre ~ 1e-22
    np.testing.assert_array_equal(apply(ASTRONAUT, "blur", 0.1, check=False), ASTRONAUT)


def test_single_colour_images_are_exempt_from_the_check():
    grey = np.full((16, 24, 3), 128, np.uint8)
    for out in (gaussian_blur(grey, 2), jpeg(grey, 50), jpeg(grey, 50, "cv2"), resize(grey, 0.5, back=True)):
        np.testing.assert_array_equal(out, grey)


def test_random_augment_is_seeded():
    runs = [random_augment(ASTRONAUT, seed) for seed in range(8)]
    np.testing.assert_array_equal(runs[5], random_augment(ASTRONAUT, 5))
    assert len({out.tobytes() for out in runs}) > 2
    rng = np.random.default_rng(0)
    first, second = (random_augment(ASTRONAUT, rng, p_blur=1, p_jpeg=1) for _ in range(2))
    assert not np.array_equal(first, second)  # a shared generator moves on


def test_random_augment_probabilities():
    before = ASTRONAUT.copy()
    kept = random_augment(ASTRONAUT, 0, p_blur=0, p_jpeg=0)
    assert kept is not ASTRONAUT
    np.testing.assert_array_equal(kept, ASTRONAUT)
    for seed in range(4):
        out = random_augment(ASTRONAUT, seed, p_blur=1, p_jpeg=1)
        assert out.shape == ASTRONAUT.shape and not np.array_equal(out, ASTRONAUT)
    np.testing.assert_array_equal(ASTRONAUT, before)


@pytest.mark.parametrize("apply", [
    lambda im: perturb.gaussian_blur(im, 2.7),
    lambda im: perturb.gaussian_noise(im, 5.0, seed=3),
    lambda im: perturb.contrast(im, 1.5),
])
def test_float_perturbations_go_strip_by_strip_with_the_same_result(monkeypatch, apply):
    """Blur, noise and contrast work on strips of rows (bounded memory for 64 MP images): many
    uneven strips give exactly the pixels of one whole-image pass."""
    image = np.random.default_rng(0).integers(0, 256, (61, 37, 3), dtype=np.uint8)
    whole = apply(image)
    monkeypatch.setattr("crashsafe.images.STRIP_PIXELS", 97)  # strips of 2 rows, blur halos past them
    np.testing.assert_array_equal(apply(image), whole)
