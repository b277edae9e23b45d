"""A hostile image corpus for the reliability tests (issue 7): writes files, runs no test.

``write_hostile_corpus(folder)`` fills ``folder`` with broken, odd and malicious inputs and
returns one :class:`HostileFile` per entry, saying whether ``load_image`` should decode it
(``"ok"``) or refuse it with an ImageError (``"error"``). Byte-limit cases assume the caller
uses :data:`HOSTILE_MAX_BYTES` as ``ImageLimits.max_bytes`` / ``--max-bytes``.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

# Every "ok" file is below this; the over-limit file is above it.
HOSTILE_MAX_BYTES = 200_000
FORMATS = {"png": "PNG", "jpg": "JPEG", "webp": "WEBP", "bmp": "BMP", "tif": "TIFF", "gif": "GIF"}
CUT_FRACTIONS = (0.05, 0.3, 0.6, 0.95)


@dataclass(frozen=True)
class HostileFile:
    """One entry written: its path (as the OS names it), expected outcome and what it is."""

    path: Path
    expected: str  # "ok" or "error"
    what: str


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def sample_image(width: int = 48, height: int = 40, seed: int = 0) -> Image.Image:
    """Smooth colour gradient plus noise: compresses to a few KB in every format."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    rgb = np.stack([xx * 5, yy * 6, (xx + yy) * 3], axis=-1)
    rgb = rgb + rng.integers(0, 30, (height, width, 3))
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A PNG whose IHDR (correct CRC) claims ``width`` x ``height`` RGB pixels; tiny IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
            + _png_chunk(b"IEND", b""))


def gif_bomb() -> bytes:
    """A GIF whose screen and frame claim 65535 x 65535 (the format's maximum)."""
    valid = encode(Image.new("P", (2, 2)), "GIF")
    data = bytearray(valid)
    data[6:10] = struct.pack("<HH", 65535, 65535)  # logical screen
    frame = data.index(b",")  # image descriptor
    data[frame + 5:frame + 9] = struct.pack("<HH", 65535, 65535)
    return bytes(data)


def bmp_bomb() -> bytes:
    """A BMP header claiming 60000 x 60000 24-bit pixels with almost no pixel data."""
    data = bytearray(encode(Image.new("RGB", (2, 2)), "BMP"))
    data[18:26] = struct.pack("<ii", 60_000, 60_000)
    return bytes(data)


def tiff_bomb() -> bytes:
    """A TIFF whose ImageWidth/ImageLength tags claim 100000 x 100000."""
    data = bytearray(encode(Image.new("RGB", (2, 2)), "TIFF"))
    (ifd,) = struct.unpack("<I", data[4:8])
    (count,) = struct.unpack("<H", data[ifd:ifd + 2])
    for i in range(count):
        entry = ifd + 2 + 12 * i
        tag, kind = struct.unpack("<HH", data[entry:entry + 4])
        if tag in (256, 257):  # ImageWidth, ImageLength
            if kind == 3:
                data[entry + 2:entry + 4] = struct.pack("<H", 4)  # widen SHORT to LONG
            data[entry + 8:entry + 12] = struct.pack("<I", 100_000)
    return bytes(data)


def valid_samples() -> dict[str, bytes]:
    """Small valid encodings of the sample image, one per format (also fuzzing seeds)."""
    image = sample_image()
    return {ext: encode(image, fmt) for ext, fmt in FORMATS.items()}


def write_hostile_corpus(folder: str | os.PathLike) -> list[HostileFile]:
    """Write the hostile corpus into ``folder`` (created) and list what was written."""
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    written: list[HostileFile] = []

    def put(name: str | bytes, data: bytes, expected: str, what: str) -> None:
        path = Path(os.fsdecode(os.path.join(os.fsencode(root), os.fsencode(name))))
        path.write_bytes(data)
        written.append(HostileFile(path, expected, what))

    samples = valid_samples()
    for ext, data in samples.items():
        put(f"valid.{ext}", data, "ok", f"valid {ext}")
        for fraction in CUT_FRACTIONS:
            cut = max(1, int(len(data) * fraction))
            put(f"truncated_{int(fraction * 100):02d}.{ext}", data[:cut], "error",
                f"{ext} cut at {cut} of {len(data)} bytes")
        put(f"empty.{ext}", b"", "error", f"zero-byte {ext}")
        rng = np.random.default_rng(len(written))
        put(f"random.{ext}", rng.bytes(4096), "error", f"random bytes named .{ext}")

    put("bomb_ihdr.png", png_bomb(), "error", "PNG IHDR 100000x100000, correct CRC")
    put("bomb_screen.gif", gif_bomb(), "error", "GIF claiming 65535x65535")
    put("bomb_header.bmp", bmp_bomb(), "error", "BMP claiming 60000x60000")
    put("bomb_tags.tif", tiff_bomb(), "error", "TIFF claiming 100000x100000")
    rng = np.random.default_rng(1)
    noise = Image.fromarray(rng.integers(0, 256, (300, 300, 3), dtype=np.uint8))
    big = encode(noise, "PNG")
    assert len(big) > HOSTILE_MAX_BYTES
    put("over_byte_limit.png", big, "error", f"valid PNG of {len(big)} bytes over the limit")

    put("one_by_one.png", encode(sample_image(1, 1), "PNG"), "ok", "1x1 PNG")
    put("one_by_n.png", encode(sample_image(1, 57), "PNG"), "ok", "1x57 PNG")
    put("n_by_one.jpg", encode(sample_image(61, 1), "JPEG"), "ok", "61x1 JPEG")
    put("smaller_than_crop.png", encode(sample_image(7, 5), "PNG"), "ok", "7x5, below any crop")
    frames = [sample_image(seed=s) for s in range(3)]
    for ext, fmt in (("gif", "GIF"), ("webp", "WEBP")):
        buffer = io.BytesIO()
        frames[0].save(buffer, format=fmt, save_all=True, append_images=frames[1:], duration=50,
                       loop=0)
        put(f"animated.{ext}", buffer.getvalue(), "ok", f"animated {ext}, 3 frames")
    put("cmyk.jpg", encode(sample_image().convert("CMYK"), "JPEG"), "ok", "CMYK JPEG")
    wide = Image.fromarray((np.arange(40 * 48, dtype=np.uint16).reshape(40, 48) * 30))
    put("grey16.png", encode(wide, "PNG"), "ok", "16-bit grey PNG")
    put("palette.png", encode(sample_image().convert("P"), "PNG"), "ok", "palette PNG")
    put("alpha.png", encode(sample_image().convert("RGBA"), "PNG"), "ok", "RGBA PNG")
    put(b"latin1_\xe9\xff.png", samples["png"], "ok", "non-UTF-8 file name")
    long_name = "L" * (250 - len(".png")) + ".png"
    put(long_name, samples["png"], "ok", "250-byte file name")

    def link(name: str, target: str, what: str) -> None:
        path = root / name
        os.symlink(target, path)
        written.append(HostileFile(path, "error", what))

    unreadable = root / "unreadable.png"
    unreadable.write_bytes(samples["png"])
    os.chmod(unreadable, 0)
    if os.access(unreadable, os.R_OK):  # root reads anything: use a named pipe instead
        unreadable.unlink()
        os.mkfifo(unreadable)
        written.append(HostileFile(unreadable, "error", "FIFO named .png (running as root)"))
    else:
        written.append(HostileFile(unreadable, "error", "chmod 000 PNG"))
    link("loop_a.png", "loop_b.png", "symlink loop a -> b")
    link("loop_b.png", "loop_a.png", "symlink loop b -> a")
    link("dangling.png", "does-not-exist.png", "dangling symlink")
    (root / "dir.png").mkdir()
    written.append(HostileFile(root / "dir.png", "error", "directory named like an image"))
    return written
