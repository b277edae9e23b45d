"""Tests for crashsafe.images: decoding every supported format and mode, and refusing bad input."""

from __future__ import annotations

import io
import os
import struct
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageFile

from crashsafe.images import (
    DEFAULT_LIMITS,
    IMAGE_EXTENSIONS,
    ImageError,
    ImageLimits,
    encode_png,
    is_image_path,
    load_image,
    save_png,
)

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def quadrants(width: int = 32, height: int = 16) -> np.ndarray:
    """Non-square RGB image with four flat-coloured quadrants (survives JPEG and GIF closely)."""
    image = np.zeros((height, width, 3), np.uint8)
    h, w = height // 2, width // 2
    image[:h, :w], image[:h, w:], image[h:, :w], image[h:, w:] = RED, GREEN, BLUE, WHITE
    return image


def write(path: Path, image: Image.Image, **save_args) -> Path:
    image.save(path, **save_args)
    return path


def stored(path: Path, attribute: str):
    """An attribute (mode, n_frames) of the file as Pillow opens it, closing the file again."""
    with Image.open(path) as image:
        return getattr(image, attribute)


def png_bytes(width: int, height: int, pixels: bytes = b"") -> bytes:
    """A minimal 8-bit RGB PNG with the given IHDR size and IDAT payload, with correct CRCs."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(pixels))
        + chunk(b"IEND", b"")
    )


def assert_rgb(array: np.ndarray, height: int, width: int) -> None:
    assert array.shape == (height, width, 3)
    assert array.dtype == np.uint8
    assert array.flags.c_contiguous and array.flags.writeable


# --- formats -----------------------------------------------------------------

LOSSLESS = {"png": {}, "bmp": {}, "tiff": {}, "webp": {"lossless": True}, "gif": {}}


@pytest.mark.parametrize("ext", ["png", "jpg", "webp", "bmp", "tiff", "gif"])
def test_round_trip_each_format(tmp_path, ext):
    expected = quadrants()
    save_args = LOSSLESS.get(ext, {"quality": 95, "subsampling": 0})
    path = write(tmp_path / f"img.{ext}", Image.fromarray(expected), **save_args)
    out = load_image(path)
    assert_rgb(out, 16, 32)
    if ext in LOSSLESS:
        np.testing.assert_array_equal(out, expected)
    else:
        assert np.abs(out.astype(int) - expected).max() < 8


def test_bytes_input_matches_path_input(tmp_path):
    path = write(tmp_path / "img.png", Image.fromarray(quadrants()))
    np.testing.assert_array_equal(load_image(path.read_bytes()), load_image(path))
    np.testing.assert_array_equal(load_image(bytearray(path.read_bytes())), load_image(str(path)))


def test_content_decides_format_not_extension(tmp_path):
    path = write(tmp_path / "really_a_png.jpg", Image.fromarray(quadrants()), format="PNG")
    np.testing.assert_array_equal(load_image(path), quadrants())


# --- pixel modes -------------------------------------------------------------


def test_grey(tmp_path):
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    out = load_image(write(tmp_path / "g.png", Image.fromarray(grey, "L")))
    assert_rgb(out, 3, 4)
    np.testing.assert_array_equal(out, np.repeat(grey[:, :, None], 3, axis=2))


def test_bilevel(tmp_path):
    image = Image.new("1", (4, 2), 0)
    image.putpixel((1, 0), 1)
    out = load_image(write(tmp_path / "b.png", image))
    assert out[0, 1].tolist() == [255, 255, 255] and out[0, 0].tolist() == [0, 0, 0]


def test_rgba_alpha_is_dropped_not_composited(tmp_path):
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., :3] = (10, 20, 30)  # alpha 0 everywhere: compositing over white would give 255s
    out = load_image(write(tmp_path / "a.png", Image.fromarray(rgba, "RGBA")))
    assert (out == (10, 20, 30)).all()


def test_palette_with_transparency(tmp_path):
    image = Image.new("P", (4, 2), 0)
    image.putpalette([*RED, *GREEN, *BLUE] + [0] * (256 - 3) * 3)
    image.putpixel((1, 0), 1)
    image.putpixel((2, 0), 2)
    image.info["transparency"] = 0  # index 0 transparent: its colour is still returned
    out = load_image(write(tmp_path / "p.png", image, transparency=0))
    assert out[0, :3].tolist() == [list(RED), list(GREEN), list(BLUE)]


@pytest.mark.parametrize("mode", ["RGB", "L", "P", "RGBA"])
def test_large_images_convert_strip_by_strip_to_the_same_pixels(tmp_path, monkeypatch, mode):
    """Conversion goes a few rows at a time (bounded memory for 64 MP images); strips of 5
    rows of a 37-row image give what Pillow's whole-image conversion gives."""
    rng = np.random.default_rng(3)
    rgb = Image.fromarray(rng.integers(0, 256, (37, 64, 3), dtype=np.uint8))
    image = rgb.convert(mode) if mode != "P" else rgb.quantize(64)
    path = write(tmp_path / f"{mode}.png", image)
    expected = np.asarray(image.convert("RGBA" if mode == "P" else mode).convert("RGB"))
    monkeypatch.setattr("crashsafe.images.STRIP_PIXELS", 5 * 64)
    np.testing.assert_array_equal(load_image(path), expected)


@pytest.mark.parametrize("ext", ["jpg", "tiff"])
def test_cmyk(tmp_path, ext):
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in CMYK
    out = load_image(write(tmp_path / f"c.{ext}", cmyk))
    assert stored(tmp_path / f"c.{ext}", "mode") == "CMYK"
    assert np.abs(out.astype(int) - RED).max() < 10


def test_16bit_grey_png_scaled_not_clipped(tmp_path):
    values = np.array([[0, 256, 32768, 65535]], np.uint16)
    path = write(tmp_path / "g16.png", Image.fromarray(values))
    assert stored(path, "mode").startswith("I;16")
    assert load_image(path)[0, :, 0].tolist() == [0, 1, 128, 255]


def test_16bit_rgb_png(tmp_path):
    bgr = np.zeros((3, 5, 3), np.uint16)
    bgr[...] = (65535, 32768, 256)  # cv2 writes BGR order
    path = tmp_path / "rgb16.png"
    assert cv2.imwrite(str(path), bgr)
    out = load_image(path)
    assert_rgb(out, 3, 5)
    assert (out == (1, 128, 255)).all()


@pytest.mark.parametrize(
    ("mode", "values", "expected"),
    [
        ("I;16B", [0, 32768, 65535], [0, 128, 255]),
        ("I", [0, 32768, 65535], [0, 128, 255]),  # 16-bit data stored as 32-bit
        ("I", [-100, 0, 155], [0, 100, 255]),  # unknown range: stretched
        ("F", [0.0, 0.5, 1.0], [0, 128, 255]),
        ("F", [-1.0, float("nan"), 3.0], [0, 64, 255]),  # NaN counts as 0
    ],
)
def test_wide_grey_tiff(tmp_path, mode, values, expected):
    image = Image.new(mode, (3, 1))
    for x, value in enumerate(values):
        image.putpixel((x, 0), value)
    path = write(tmp_path / "wide.tiff", image)
    assert stored(path, "mode") == mode
    assert load_image(path)[0, :, 0].tolist() == expected


def test_exif_orientation_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored image must be rotated 90 degrees clockwise for display
    path = write(tmp_path / "rot.jpg", Image.fromarray(quadrants(32, 16)), exif=exif, quality=95)
    out = load_image(path)
    assert_rgb(out, 32, 16)
    # Clockwise rotation moves the stored top-left (red) to the top-right, bottom-left (blue) to top-left.
    assert np.abs(out[2, -3].astype(int) - RED).max() < 40
    assert np.abs(out[2, 2].astype(int) - BLUE).max() < 40
    assert np.abs(out[-3, -3].astype(int) - GREEN).max() < 40


@pytest.mark.parametrize("ext", ["gif", "webp"])
def test_animation_first_frame(tmp_path, ext):
    frames = [Image.new("RGB", (6, 4), colour) for colour in (RED, BLUE, GREEN)]
    extra = {"lossless": True} if ext == "webp" else {}
    path = write(tmp_path / f"anim.{ext}", frames[0], save_all=True, append_images=frames[1:], duration=50, **extra)
    assert stored(path, "n_frames") == 3
    out = load_image(path)
    assert_rgb(out, 4, 6)
    assert (out == RED).all()


# --- bad input ---------------------------------------------------------------


def expect_error(source, reason: str, path: str | None = None, **kwargs) -> ImageError:
    with pytest.raises(ImageError) as info:
        load_image(source, **kwargs)
    err = info.value
    assert err.path == (str(source) if path is None else path)
    assert reason in err.reason, err.reason
    assert str(err) == f"{err.path}: {err.reason}"
    return err


@pytest.fixture
def png_file(tmp_path) -> Path:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)
    return write(tmp_path / "good.png", Image.fromarray(noise))


def test_truncated_png(tmp_path, png_file):
    data = png_file.read_bytes()
    path = tmp_path / "trunc.png"
    path.write_bytes(data[: len(data) // 2])
    err = expect_error(path, "truncated or corrupt PNG data")
    assert err.__cause__ is not None


def test_truncated_jpeg_is_not_silently_accepted(tmp_path):
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "JPEG")
    data = buffer.getvalue()
    for cut in (len(data) // 2, len(data) - 10):
        path = tmp_path / f"trunc{cut}.jpg"
        path.write_bytes(data[:cut])
        expect_error(path, "truncated or corrupt JPEG data")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.png"
    path.touch()
    expect_error(path, "file is empty (0 bytes)")
    expect_error(b"", "data is empty", path="<bytes>")


def test_text_renamed_png(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("these are not pixels\n" * 10)
    expect_error(path, "not an image")


def test_random_bytes_jpg(tmp_path):
    path = tmp_path / "noise.jpg"
    path.write_bytes(np.random.default_rng(1).bytes(2048))
    expect_error(path, "not an image")


def test_bytes_errors_use_given_name():
    expect_error(b"not an image at all", "not an image", path="<bytes>")
    expect_error(b"not an image at all", "not an image", path="upload.png", name="upload.png")


def test_decompression_bomb_header_refused_fast(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_bytes(100_000, 100_000))
    start = time.perf_counter()
    err = expect_error(path, "pixels")
    assert time.perf_counter() - start < 0.5
    assert "decompression-bomb" in err.reason


def test_over_default_pixel_limit_but_under_pillows(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(png_bytes(8_001, 8_000))  # 64,008,000 pixels: only our default limit catches it
    expect_error(path, "image is 8001x8000 = 64,008,000 pixels, over the limit of 64,000,000")


def test_over_custom_pixel_limit(png_file):
    expect_error(png_file, "64x64 = 4,096 pixels, over the limit of 4,000", limits=ImageLimits(max_pixels=4_000))
    assert load_image(png_file, limits=ImageLimits(max_pixels=4_096)).shape == (64, 64, 3)


def test_over_byte_limit(png_file):
    size = png_file.stat().st_size
    limits = ImageLimits(max_bytes=1_000)
    reason = f"is {size / 1024:.1f} KB, over the limit of 1000 bytes"
    expect_error(png_file, "file " + reason, limits=limits)
    expect_error(png_file.read_bytes(), "data " + reason, path="<bytes>", limits=limits)


def test_zero_size_dimension(tmp_path):
    path = tmp_path / "zero.png"
    path.write_bytes(png_bytes(0, 10))
    # Pillow itself refuses a zero width while parsing the header; our own check covers other decoders.
    err = expect_error(path, "")
    assert "zero-size" in err.reason or "corrupt header" in err.reason


def test_missing_file(tmp_path):
    expect_error(tmp_path / "nope.png", "file not found")


def test_directory(tmp_path):
    folder = tmp_path / "folder.png"
    folder.mkdir()
    expect_error(folder, "is a directory")


def test_image_error_is_value_error_and_pickles():
    import pickle

    err = pickle.loads(pickle.dumps(ImageError("a.png", "file not found")))
    assert isinstance(err, ValueError)
    assert (err.path, err.reason, str(err)) == ("a.png", "file not found", "a.png: file not found")


def test_limits():
    assert DEFAULT_LIMITS == ImageLimits(max_pixels=64_000_000, max_bytes=100 * 1024 * 1024)
    with pytest.raises(ValueError):
        ImageLimits(max_bytes=0)


# --- helpers and writing -----------------------------------------------------


def test_is_image_path():
    assert IMAGE_EXTENSIONS == {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
    assert is_image_path("a/b/PHOTO.JPEG") and is_image_path(Path("x.Tif"))
    assert not is_image_path("notes.txt") and not is_image_path(".png") and not is_image_path("png")


@pytest.mark.parametrize("shape", [(5, 7), (5, 7, 3), (5, 7, 4)])
def test_encode_png_round_trip(shape):
    image = np.random.default_rng(2).integers(0, 256, shape, np.uint8)
    out = load_image(encode_png(image))
    expected = image if image.ndim == 3 else np.repeat(image[:, :, None], 3, axis=2)
    np.testing.assert_array_equal(out, expected[..., :3])


@pytest.mark.parametrize(
    "bad", [np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 2), np.uint8), np.zeros((0, 4, 3), np.uint8)]
)
def test_encode_png_rejects_bad_arrays(bad):
    with pytest.raises(ValueError):
        encode_png(bad)


def test_save_png_atomic_round_trip(tmp_path):
    image = quadrants()
    target = tmp_path / "new" / "nested" / "out.png"
    save_png(image, target)
    save_png(image[::-1], target)  # overwrite in place
    np.testing.assert_array_equal(load_image(target), image[::-1])
    assert os.listdir(target.parent) == ["out.png"]
    reference = tmp_path / "reference"
    reference.write_bytes(b"")
    assert target.stat().st_mode == reference.stat().st_mode  # normal permissions, not mkstemp's 0600


def test_save_png_bad_array_leaves_nothing(tmp_path):
    with pytest.raises(ValueError):
        save_png(np.zeros((4, 4), np.float64), tmp_path / "out.png")
    assert os.listdir(tmp_path) == []


def test_png_with_a_camera_sized_icc_profile_decodes(tmp_path):
    # Pillow's own limit (1 MB a chunk) refused this valid file; 4 MB profiles exist in the wild.
    noise = np.random.default_rng(0).integers(0, 256, (16, 16, 3), np.uint8)
    path = tmp_path / "profiled.png"
    Image.fromarray(noise).save(path, icc_profile=np.random.default_rng(1).bytes(4 << 20))
    np.testing.assert_array_equal(load_image(path), noise)


def test_png_metadata_bomb_names_the_chunk_and_what_to_do(tmp_path):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "x" * (20 << 20), zip=True)  # 20 MB of text in a 20 KB chunk
    path = tmp_path / "bomb.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    assert path.stat().st_size < 64 << 10
    err = expect_error(path, "PNG metadata zTXt 'Comment' (20 KB compressed) decompresses past "
                             "16 MB a chunk")
    assert err.kind == "metadata_bomb" and "without its metadata" in err.advice


def test_the_generator_zoo_reads_images_through_load_image(tmp_path):
    """The zoo's datasets decode with load_image: EXIF orientation applied as everywhere else,
    and a file it refuses skipped with its path and the decoder's reason."""
    from generators.data import RandomCropDataset

    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = write(tmp_path / "rot.jpg", Image.fromarray(quadrants(32, 16)), exif=exif,
                    quality=95)
    notes = tmp_path / "notes.png"
    notes.write_text("not an image")
    with pytest.warns(UserWarning, match="skipped 1 of 2"):
        dataset = RandomCropDataset([rotated, notes], 8)
    np.testing.assert_array_equal(dataset.images[0], load_image(rotated))
    assert dataset.skipped == [(notes, "not an image (unrecognised format or corrupt header)")]
