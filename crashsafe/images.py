"""The one safe image decoder and PNG writer, with their limits.

Every image the toolkit reads (detector and generator training corpora, sources of the
generator zoo, uploads, CLI arguments) goes through :func:`load_image`, so untrusted files are
handled in one place: size limits are enforced before pixels are decoded, only the six formats
below are accepted (Pillow's other plugins, e.g. EPS via Ghostscript, are never reached), and
every failure surfaces as one exception type, :class:`ImageError`, that names the file and says
what is wrong with it. PNGs are written by :func:`save_png` (atomically, through
:mod:`crashsafe.files`).

Decisions worth knowing:

* Output is always RGB ``uint8`` of shape ``(H, W, 3)``. Alpha is dropped, not
  composited over a background: compositing would invent pixel values, and
  detectors should see the colours that are actually stored. Fully transparent
  pixels therefore keep whatever colour the file stores for them.
* 16-bit data keeps its high byte (``v >> 8``: 65535 -> 255, 32768 -> 128),
  matching what Pillow itself does for 16-bit RGB(A) PNG and TIFF files.
* No colour management: ICC profiles are ignored and CMYK uses Pillow's plain
  conversion. PNG metadata chunks (an ICC profile, compressed text) may decompress to
  ``PNG_METADATA_CHUNK_LIMIT`` each (Pillow's own default of 1 MB refuses profiles that
  cameras and editors write); past it the file is refused as a bomb, naming the chunk.
* EXIF orientation is applied, so the array is upright as a viewer shows it.
* Only the first frame of an animated GIF/WebP (or multi-page TIFF) is read.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from crashsafe.files import atomic_write_bytes

__all__ = ["STRIP_PIXELS", "IMAGE_EXTENSIONS", "PNG_METADATA_CHUNK_LIMIT", "IMAGE_ERROR_ADVICE",
           "ImageError", "ImageLimits", "DEFAULT_LIMITS", "is_image_path", "load_image",
           "header_pixels", "encode_png", "save_png", "row_strips", "format_bytes"]

# Pixels a per-pixel computation over a strip of rows holds at once: 4 MP (16 MB a float32
# plane), where a 64 MP image's float copy would take 768 MB. The decoder converts by these
# strips, and so do the float perturbations and pixel maps of ``forensics``.
STRIP_PIXELS = 1 << 22

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
)

# Pillow format names tried by Image.open. "JPEG" also opens MPO (multi-picture
# JPEGs written by many phone cameras).
_PIL_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")

# Decompressed size allowed for one PNG metadata chunk (iCCP, zTXt, iTXt). Pillow's limit is a
# module setting read at each decode; it is raised once, here, for every decode in the process.
PNG_METADATA_CHUNK_LIMIT = 16 << 20
PngImagePlugin.MAX_TEXT_CHUNK = max(PngImagePlugin.MAX_TEXT_CHUNK, PNG_METADATA_CHUNK_LIMIT)
# Pillow's messages when PNG metadata decompresses past its limits.
_PNG_METADATA_ERRORS = ("MAX_TEXT_CHUNK", "Too much memory used in text chunks")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COMPRESSED_METADATA = (b"iCCP", b"zTXt", b"iTXt")

# Grey modes wider than 8 bits, scaled by _grey_to_uint8.
_WIDE_GREY_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
# Modes that Pillow converts to RGB itself (alpha, if any, is dropped).
_CONVERTIBLE_MODES = frozenset(
    {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB"}
)


# What to do about each kind of refused image, for messages in the CLI and the app.
IMAGE_ERROR_ADVICE: dict[str, str] = {
    "empty": "the file has no content: copy or upload it again",
    "too_large": "use a smaller copy, or raise --max-bytes if you trust the file",
    "too_many_pixels": "use a downscaled copy, or raise --max-pixels if you trust the file",
    "bomb": "Pillow never decodes that many pixels whatever the limits: use a downscaled copy",
    "metadata_bomb": "if the file is genuine, save a copy without its metadata (any editor's "
                     "'export' or `exiftool -all= FILE`) and use that",
    "missing": "check the path (the file may have been moved or deleted)",
    "unreadable": "check the file's permissions, or copy it somewhere readable",
    "not_a_file": "give an image file (a folder is walked for its images; devices and pipes "
                  "are never read)",
    "not_an_image": "check that it opens in an image viewer; PNG, JPEG, WebP, BMP, TIFF and GIF "
                    "are read",
    "corrupt": "the file is damaged: re-save or re-download it",
    "unsupported": "convert it to an 8-bit RGB PNG or JPEG",
}


class ImageError(ValueError):
    """Bad image input: names the offending file (``path``), says why (``reason``) and what kind
    of problem it is (``kind``, a key of :data:`IMAGE_ERROR_ADVICE`; ``advice`` says what to do).

    ``path`` is the file path, ``'<bytes>'`` for raw bytes, or the ``name``
    passed to :func:`load_image`. ``str(err)`` is ``"{path}: {reason}"``.
    """

    def __init__(self, path: str, reason: str, kind: str = "corrupt"):
        # All go into args so the exception pickles (e.g. across process pools).
        super().__init__(path, reason, kind)
        self.path = path
        self.reason = reason
        self.kind = kind

    @property
    def advice(self) -> str:
        return IMAGE_ERROR_ADVICE.get(self.kind, IMAGE_ERROR_ADVICE["corrupt"])

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass(frozen=True)
class ImageLimits:
    """Refuse inputs above these sizes before decoding them.

    ``max_pixels`` is checked against the header's width x height, so a small
    file claiming a huge canvas (a decompression bomb) is refused without
    allocating it. Pillow's own limit (``PIL.Image.MAX_IMAGE_PIXELS``, about
    89 million pixels) still applies on top and is not changed here, so raising
    ``max_pixels`` above it has no effect.
    """

    max_pixels: int = 64_000_000
    max_bytes: int = 100 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.max_pixels <= 0 or self.max_bytes <= 0:
            raise ValueError(f"image limits must be positive, got {self}")


DEFAULT_LIMITS = ImageLimits()


def is_image_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` has one of :data:`IMAGE_EXTENSIONS` (case-insensitive); the file is not opened."""
    return os.path.splitext(os.fsdecode(path))[1].lower() in IMAGE_EXTENSIONS


def load_image(
    source: str | os.PathLike | bytes,
    *,
    limits: ImageLimits = DEFAULT_LIMITS,
    name: str | None = None,
) -> np.ndarray:
    """Decode a file path or raw bytes into a new RGB ``uint8`` array of shape (H, W, 3), C-contiguous.

    ``name`` labels the input in errors (useful for uploaded bytes); it defaults
    to the path, or ``'<bytes>'``. Raises :class:`ImageError` for anything that
    is not a readable image within ``limits``.
    """
    if isinstance(source, (bytes, bytearray)):
        label = name if name is not None else "<bytes>"
        _check_byte_count(len(source), limits, label, "data")
        data = bytes(source)
    else:
        label = name if name is not None else os.fsdecode(source)
        data = _read_file(source, limits, label)
    return _decode(data, limits, label)


def header_pixels(path: str | os.PathLike) -> int:
    """Width x height from a regular file's header, read by the same six decoders (no pixel
    decoded); 0 when it is not one or cannot be read (a pipe named like an image would block
    the read): :func:`load_image` then says why. Lets callers budget memory before decoding."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a bomb's warning is load_image's to raise
            with Image.open(path, formats=_PIL_FORMATS) as image:
                return image.width * image.height
    except Exception:  # noqa: BLE001 - any failure is load_image's to report
        return 0


def encode_png(image: np.ndarray) -> bytes:
    """Encode a ``uint8`` array of shape (H, W), (H, W, 3) or (H, W, 4) as lossless PNG bytes."""
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"expected a uint8 array, got dtype {array.dtype}")
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise ValueError(f"expected shape (H, W), (H, W, 3) or (H, W, 4), got {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"cannot encode an empty image of shape {array.shape}")
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG")
    return buffer.getvalue()


def save_png(image: np.ndarray, path: str | os.PathLike) -> None:
    """Write ``image`` as PNG atomically, creating parent folders.

    Readers never see a half-written file (see :func:`crashsafe.files.atomic_write_bytes`).
    """
    atomic_write_bytes(path, encode_png(image))  # encode first: a bad array leaves nothing


def row_strips(height: int, width: int) -> Iterator[tuple[int, int]]:
    """(top, bottom) rows of consecutive strips of about ``STRIP_PIXELS`` pixels each."""
    rows = max(1, STRIP_PIXELS // max(1, width))
    for top in range(0, height, rows):
        yield top, min(top + rows, height)


def format_bytes(count: int) -> str:
    """Human-readable byte count, e.g. '300 MB', '1.5 KB', '12 bytes'."""
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if count >= size:
            return f"{count / size:.1f}".removesuffix(".0") + f" {unit}"
    return f"{count} bytes"


def _check_byte_count(count: int, limits: ImageLimits, label: str, kind: str) -> None:
    """Refuse empty inputs and inputs over ``limits.max_bytes``; ``kind`` is 'file' or 'data'."""
    if count == 0:
        raise ImageError(label, f"{kind} is empty (0 bytes)", "empty")
    if count > limits.max_bytes:
        raise ImageError(
            label,
            f"{kind} is {format_bytes(count)}, over the limit of {format_bytes(limits.max_bytes)}",
            "too_large",
        )


def _os_error(label: str, exc: OSError) -> ImageError:
    """The ImageError for a failure to stat or open a file."""
    if isinstance(exc, FileNotFoundError):
        return ImageError(label, "file not found", "missing")
    if isinstance(exc, IsADirectoryError):
        return ImageError(label, "is a directory, not a file", "not_a_file")
    if isinstance(exc, PermissionError):
        return ImageError(label, "permission denied", "unreadable")
    return ImageError(label, f"cannot read file ({exc.strerror or exc})", "unreadable")


def _read_file(path: str | os.PathLike, limits: ImageLimits, label: str) -> bytes:
    """Read a regular file whose size is checked before reading (and again after, in case it grew)."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise _os_error(label, exc) from exc
    if stat.S_ISDIR(info.st_mode):
        raise ImageError(label, "is a directory, not a file", "not_a_file")
    if not stat.S_ISREG(info.st_mode):  # FIFOs and devices could block or never end
        raise ImageError(label, "not a regular file", "not_a_file")
    _check_byte_count(info.st_size, limits, label, "file")
    try:
        with open(path, "rb") as fh:
            # Ask for the size stat gave (plus one byte, to see growth), not the limit: a read
            # of n bytes allocates n up front, and mapping the limit's worth per file cost
            # more than a third of a photo's decode time.
            data = fh.read(info.st_size + 1)
            if len(data) > info.st_size:  # it grew since stat: read on, up to the limit
                data += fh.read(limits.max_bytes + 1 - len(data))
    except OSError as exc:
        raise _os_error(label, exc) from exc
    _check_byte_count(len(data), limits, label, "file")
    return data


def _decode(data: bytes, limits: ImageLimits, label: str) -> np.ndarray:
    """Decode in-memory image bytes; the single boundary where decoder exceptions become ImageError."""
    fmt = None  # set once the header is recognised
    try:
        # Turn Pillow's decompression-bomb warning into an error for this call
        # only. catch_warnings edits process-wide state, so a concurrent thread
        # could briefly see the warning printed instead; our own max_pixels
        # check below still applies.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=_PIL_FORMATS) as img:
                fmt = img.format
                _check_header(img, limits, label)  # before any pixel is decoded
                img.load()
                ImageOps.exif_transpose(img, in_place=True)
                return _to_rgb_array(img)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(label, f"over Pillow's decompression-bomb limit: {exc}", "bomb") from exc
    except UnidentifiedImageError as exc:
        raise ImageError(label, "not an image (unrecognised format or corrupt header)",
                         "not_an_image") from exc
    except Exception as exc:  # OSError, SyntaxError, ValueError, struct.error, MemoryError, ...
        if data.startswith(_PNG_SIGNATURE) and any(m in str(exc) for m in _PNG_METADATA_ERRORS):
            raise ImageError(label, f"PNG metadata {_metadata_chunks(data)} decompresses past "
                             f"{PNG_METADATA_CHUNK_LIMIT >> 20} MB a chunk (refused as a "
                             "possible decompression bomb)", "metadata_bomb") from exc
        what = f"{fmt} data" if fmt else "image header"
        raise ImageError(label, f"truncated or corrupt {what} ({str(exc) or type(exc).__name__})") from exc


def _metadata_chunks(data: bytes) -> str:
    """The PNG's compressed metadata chunks, largest first, e.g. "zTXt 'Comment' (3 KB
    compressed), iCCP 'ICC Profile' (1.1 MB compressed)": read from the chunk headers only."""
    found, offset = [], len(_PNG_SIGNATURE)
    while offset + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        if kind in _COMPRESSED_METADATA:
            keyword = data[offset + 8:offset + 8 + min(length, 80)].split(b"\0", 1)[0]
            found.append((length, f"{kind.decode()} '{keyword.decode('latin-1')}'"))
        if kind == b"IEND":
            break
        offset += 12 + length
    if not found:
        return "(no compressed chunk found)"
    return ", ".join(f"{name} ({_size(length)} compressed)"
                     for length, name in sorted(found, reverse=True))


def _size(n: int) -> str:
    return f"{n / (1 << 20):.1f} MB" if n >= 1 << 20 else f"{max(1, round(n / 1024))} KB"


def _check_header(img: Image.Image, limits: ImageLimits, label: str) -> None:
    """Refuse bad dimensions and unsupported pixel modes using only the parsed header."""
    width, height = img.size
    if width == 0 or height == 0:
        raise ImageError(label, f"image has a zero-size dimension ({width}x{height})", "corrupt")
    if width * height > limits.max_pixels:
        raise ImageError(
            label,
            f"image is {width}x{height} = {width * height:,} pixels, "
            f"over the limit of {limits.max_pixels:,} (decompression bomb?)",
            "too_many_pixels",
        )
    if img.mode not in _WIDE_GREY_MODES and img.mode not in _CONVERTIBLE_MODES:
        raise ImageError(label, f"unsupported {img.format} pixel mode {img.mode!r}",
                         "unsupported")


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    """Convert a loaded image of any supported mode to a new RGB uint8 array, dropping alpha.

    Strip by strip into the array: converting it whole held Pillow's copies beside the result
    (a 64 MP JPEG peaked at 670 MB for a 192 MB array; by 4 MP strips, 523 MB).
    """
    if img.mode in _WIDE_GREY_MODES:
        grey = _grey_to_uint8(img)
        return np.repeat(grey[:, :, np.newaxis], 3, axis=2)
    # P via RGBA so palette transparency is honoured without Pillow's warning; the alpha is
    # then dropped like any other.
    via = "RGBA" if img.mode in ("P", "PA") else None
    width, height = img.size
    out = np.empty((height, width, 3), dtype=np.uint8)
    for top, bottom in row_strips(height, width):
        strip = img if bottom - top == height else img.crop((0, top, width, bottom))
        if via:
            strip = strip.convert(via)
        if strip.mode != "RGB":
            strip = strip.convert("RGB")
        out[top:top + strip.height] = np.asarray(strip)
    return out


def _grey_to_uint8(img: Image.Image) -> np.ndarray:
    """Scale 16-bit, 32-bit integer or float grey to 8 bits without clipping.

    16-bit data keeps its high byte. Mode ``I`` (32-bit int) holding values in
    0..65535 is 16-bit data in a wider container (as Pillow stores some 16-bit
    TIFFs) and is scaled the same way; float data in 0..1 is multiplied by 255.
    Anything else has no known range, so it is stretched from its min to max,
    the only mapping that cannot clip.
    """
    values = np.asarray(img)
    if img.mode.startswith("I;16"):
        return (values >> 8).astype(np.uint8)
    values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(values.min()), float(values.max())
    if img.mode == "I" and low >= 0 and high <= 65535:
        return (values.astype(np.uint16) >> 8).astype(np.uint8)
    if img.mode == "F" and low >= 0 and high <= 1:
        return np.rint(values * 255).astype(np.uint8)
    if high == low:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.rint((values - low) * (255 / (high - low))).astype(np.uint8)
