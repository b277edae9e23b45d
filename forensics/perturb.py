"""Image perturbations for robustness evaluation and training augmentation.

Every perturbation is a pure function: an RGB ``uint8`` array of shape (H, W, 3) in, a new
C-contiguous RGB ``uint8`` array out, the input never modified. Random ones take a ``seed`` (an
int or a ``numpy.random.Generator``): the same seed gives the same output.

No silent no-ops. GANDCTAnalysis passed an unknown key to ``cv2.imencode``, which OpenCV ignores,
so every "JPEG q=10..75" image it made was really q=95. Here:

* JPEG output must be JPEG data carrying libjpeg's quantisation table for the requested quality,
  and OpenCV parameters must use known JPEG keys; otherwise :class:`PerturbationNoOp` (or
  ``ValueError`` for bad parameters) is raised.
* At any level that is not one of the family's identity levels, a result with the input's
  pixels raises :class:`PerturbationNoOp`. Single-colour images are exempt (blurring or
  re-encoding them can legitimately change nothing), and ``check=False`` turns the test off
  where an unchanged result is expected (a tiny blur sigma, nearest-neighbour resizing up and
  back down).

The registry (:data:`PERTURBATIONS`, :func:`apply`, :class:`Perturbation`) names each setting by
a stable id, e.g. ``jpeg_pil/q=70`` or ``resize/scale=0.5,interpolation=area``, by which
robustness results are keyed; :func:`parse_perturbation` reads an id back.
"""

from __future__ import annotations

import io
import math
import numbers
import operator
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from types import MappingProxyType
from typing import Any

import cv2
import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

from crashsafe.images import load_image, row_strips

__all__ = [
    "AugmentDraw",
    "CHAINS",
    "PERTURBATIONS",
    "PerturbationFamily",
    "Perturbation",
    "PerturbationNoOp",
    "apply",
    "apply_augment",
    "contrast",
    "crop",
    "draw_augment",
    "gamma",
    "gaussian_blur",
    "gaussian_noise",
    "identity_levels",
    "jpeg",
    "longest_side",
    "parse_perturbation",
    "random_augment",
    "resize",
    "run_chain",
]

Seed = int | np.random.Generator


class PerturbationNoOp(RuntimeError):
    """A perturbation did not do what was asked: pixels left unchanged, or a JPEG quality ignored."""


# --- argument checks, shared by the functions and the registry ------------------------------

def _rgb(image: np.ndarray) -> np.ndarray:
    """``image`` as a C-contiguous RGB uint8 (H, W, 3) array, copied only if it was not contiguous."""
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3 or 0 in array.shape:
        raise ValueError(
            f"expected a non-empty RGB uint8 array of shape (H, W, 3), got {array.dtype} {array.shape}"
        )
    return np.ascontiguousarray(array)


def _integer(value: Any, what: str, low: int, high: int) -> int:
    """``value`` as an int in low..high, else TypeError/ValueError naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{what} must be an integer, got {value!r}")
    number = operator.index(value)
    if not low <= number <= high:
        raise ValueError(f"{what} must be in {low}..{high}, got {number}")
    return number


def _real(value: Any, what: str, low: float, high: float = math.inf, *, low_open: bool = False) -> float:
    """``value`` as a finite float in [low, high] (or (low, high] with ``low_open``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what} must be a number, got {value!r}")
    number = float(value)
    if not (math.isfinite(number) and low <= number <= high) or (low_open and number == low):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{']' if math.isfinite(high) else ')'}"
        raise ValueError(f"{what} must be in {interval}, got {value!r}")
    return number


def _choice(value: Any, what: str, options: Sequence[Any]) -> Any:
    """The element of ``options`` equal to ``value``, else ValueError listing them."""
    if not isinstance(value, (str, bool)) or value not in options:
        raise ValueError(f"{what} must be one of {', '.join(map(repr, options))}; got {value!r}")
    return options[list(options).index(value)]


_quality = partial(_integer, what="JPEG quality", low=1, high=100)
_blur_sigma = partial(_real, what="blur sigma", low=0.0)
_scale = partial(_real, what="resize scale", low=0.0, low_open=True)
_noise_sigma = partial(_real, what="noise sigma", low=0.0)
_fraction = partial(_real, what="crop fraction", low=0.0, high=1.0, low_open=True)
_gamma_value = partial(_real, what="gamma", low=0.0, low_open=True)
_contrast_factor = partial(_real, what="contrast factor", low=0.0)
_size = partial(_integer, what="longest side", low=1, high=sys.maxsize)

_JPEG_ENCODERS = ("pil", "cv2")
_INTERPOLATIONS = {  # default first
    "bilinear": cv2.INTER_LINEAR,
    "nearest": cv2.INTER_NEAREST,
    "bicubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
}
_CROP_MODES = ("center", "random")


def _changed(before: np.ndarray, after: np.ndarray, what: str, check: bool) -> np.ndarray:
    """``after``, once sure it differs from ``before`` (unless ``check`` is off or ``before`` is flat)."""
    if (check and after.shape == before.shape and np.array_equal(after, before)
            and not (before == before[0, 0]).all()):
        raise PerturbationNoOp(
            f"{what} left a {before.shape[1]}x{before.shape[0]} image unchanged: the operation "
            "ignored its parameters, or the level is too weak to alter this image "
            "(pass check=False if an unchanged result is expected)"
        )
    return after


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """Round and clip to 0..255."""
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _scaled(side: int, factor: float) -> int:
    """``round(side * factor)``, at least 1."""
    return max(1, round(side * factor))


def _cv2_resize(image: np.ndarray, height: int, width: int, flag: int) -> np.ndarray:
    return cv2.resize(image, (width, height), interpolation=flag)


# --- JPEG -----------------------------------------------------------------------------------

# ITU-T T.81 Annex K.1 luminance table, row-major (the order Pillow reports tables in).
_STD_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61,
    12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77,
    24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99,
])

_CV2_JPEG_KEYS = frozenset({
    cv2.IMWRITE_JPEG_QUALITY, cv2.IMWRITE_JPEG_PROGRESSIVE, cv2.IMWRITE_JPEG_OPTIMIZE,
    cv2.IMWRITE_JPEG_RST_INTERVAL, cv2.IMWRITE_JPEG_LUMA_QUALITY,
    cv2.IMWRITE_JPEG_CHROMA_QUALITY, cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
})


def _luma_table(quality: int) -> list[int]:
    """libjpeg's luminance table at ``quality`` (``jpeg_set_quality`` with baseline clamping)."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return np.clip((_STD_LUMA * scale + 50) // 100, 1, 255).tolist()


def _encode_pil(image: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality, subsampling="4:2:0")
    return buffer.getvalue()


def _encode_cv2(image: np.ndarray, params: list[int]) -> bytes:
    """JPEG bytes of an RGB image by OpenCV; ``params`` must be (cv2.IMWRITE_JPEG_*, value) pairs.

    OpenCV only logs a warning for an unknown key and then ignores it, which is how the
    GANDCTAnalysis bug went unnoticed; here it is an error.
    """
    if len(params) % 2 or not set(params[::2]) <= _CV2_JPEG_KEYS:
        raise ValueError(f"cv2 JPEG params must be (cv2.IMWRITE_JPEG_* key, value) pairs, got {params}")
    ok, encoded = cv2.imencode(".jpg", np.ascontiguousarray(image[:, :, ::-1]), params)
    if not ok:
        raise RuntimeError("cv2.imencode could not write JPEG")
    return encoded.tobytes()


def _check_jpeg_quality(data: bytes, quality: int, encoder: str) -> None:
    """Raise PerturbationNoOp unless ``data`` is JPEG quantised with the tables of ``quality``."""
    with Image.open(io.BytesIO(data)) as img:
        fmt = img.format
        table = list(img.quantization.get(0, ())) if fmt == "JPEG" else None
    if fmt != "JPEG":
        raise PerturbationNoOp(f"the {encoder} JPEG encoder returned {fmt} data, not JPEG")
    if table != _luma_table(quality):
        used = [q for q in range(1, 101) if _luma_table(q) == table]
        raise PerturbationNoOp(
            f"the {encoder} JPEG encoder ignored quality {quality}: its quantisation table is that "
            f"of quality {', '.join(map(str, used)) or 'none of 1..100'}"
        )


def jpeg(image: np.ndarray, quality: int, encoder: str = "pil", *, check: bool = True) -> np.ndarray:
    """Compress to JPEG at ``quality`` (1..100, 4:2:0 chroma) and decode again.

    ``encoder`` is "pil" (Pillow) or "cv2" (OpenCV), the two CNNDetection's augmentation mixes.
    Decoding goes through :func:`crashsafe.images.load_image`, the toolkit's one decoder. There
    is no identity level: even q=100 re-encodes. Raises PerturbationNoOp if the encoder did not
    apply ``quality`` or (``check``) returned the input's pixels.
    """
    image = _rgb(image)
    quality = _quality(quality)
    encoder = _choice(encoder, "JPEG encoder", _JPEG_ENCODERS)
    if encoder == "pil":
        data = _encode_pil(image, quality)
    else:
        data = _encode_cv2(image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    _check_jpeg_quality(data, quality, encoder)
    decoded = load_image(data, name=f"{encoder} JPEG q={quality}")
    return _changed(image, decoded, f"JPEG q={quality} ({encoder})", check)


# --- other perturbations --------------------------------------------------------------------

def gaussian_blur(image: np.ndarray, sigma: float, *, check: bool = True) -> np.ndarray:
    """Gaussian blur of each channel, ``sigma`` in pixels; sigma=0 returns an unchanged copy.

    As CNNDetection's augmentation (scipy.ndimage, reflected borders, kernel cut at 4 sigma), but
    rounded rather than truncated to uint8. The kernel depends on sigma only, not on image size.
    """
    image = _rgb(image)
    sigma = _blur_sigma(sigma)
    if sigma == 0:
        return image.copy()
    height = image.shape[0]
    # A strip of rows at a time (no float copy of a large image), each with the rows its
    # kernel reaches: scipy's radius at its default truncate=4. The same pixels as one pass.
    halo = int(4.0 * sigma + 0.5)
    out = np.empty_like(image)
    for top, bottom in row_strips(*image.shape[:2]):
        low, high = max(0, top - halo), min(height, bottom + halo)
        part = gaussian_filter(image[low:high].astype(np.float32), sigma=(sigma, sigma, 0))
        out[top:bottom] = _to_uint8(part[top - low:bottom - low])
    return _changed(image, out, f"Gaussian blur sigma={sigma:g}", check)


def resize(image: np.ndarray, scale: float, interpolation: str = "bilinear", back: bool = False,
           *, check: bool = True) -> np.ndarray:
    """Resize each side to ``round(side * scale)`` (at least 1) by OpenCV, and back if ``back``.

    ``interpolation`` is "nearest", "bilinear", "bicubic" or "area", used both ways; scale=1
    returns an unchanged copy.
    """
    image = _rgb(image)
    scale = _scale(scale)
    flag = _INTERPOLATIONS[_choice(interpolation, "interpolation", tuple(_INTERPOLATIONS))]
    back = _choice(back, "back", (False, True))
    if scale == 1:
        return image.copy()
    height, width = image.shape[:2]
    out = _cv2_resize(image, _scaled(height, scale), _scaled(width, scale), flag)
    if back:
        out = _cv2_resize(out, height, width, flag)
    what = f"resize x{scale:g} ({interpolation}{', back' if back else ''})"
    return _changed(image, out, what, check)


def gaussian_noise(image: np.ndarray, sigma: float, seed: Seed = 0, *,
                   check: bool = True) -> np.ndarray:
    """Add i.i.d. Gaussian noise of standard deviation ``sigma`` (0..255 units), round and clip."""
    image = _rgb(image)
    sigma = _noise_sigma(sigma)
    if sigma == 0:
        return image.copy()
    rng = np.random.default_rng(seed)
    out = np.empty_like(image)
    for top, bottom in row_strips(*image.shape[:2]):  # the same draws as one call would make
        noise = rng.standard_normal((bottom - top, *image.shape[1:]), dtype=np.float32)
        out[top:bottom] = _to_uint8(image[top:bottom] + noise * np.float32(sigma))
    return _changed(image, out, f"Gaussian noise sigma={sigma:g}", check)


def crop(image: np.ndarray, fraction: float, mode: str = "center", seed: Seed = 0,
         *, check: bool = True) -> np.ndarray:
    """Keep ``round(fraction * side)`` (at least 1) of each side, centred or at a seeded random place."""
    image = _rgb(image)
    fraction = _fraction(fraction)
    mode = _choice(mode, "crop mode", _CROP_MODES)
    if fraction == 1:
        return image.copy()
    height, width = image.shape[:2]
    new_height, new_width = _scaled(height, fraction), _scaled(width, fraction)
    if mode == "center":
        top, left = (height - new_height) // 2, (width - new_width) // 2
    else:
        rng = np.random.default_rng(seed)
        top = int(rng.integers(0, height - new_height + 1))
        left = int(rng.integers(0, width - new_width + 1))
    out = image[top:top + new_height, left:left + new_width].copy()
    return _changed(image, out, f"{mode} crop fraction={fraction:g}", check)


def gamma(image: np.ndarray, value: float, *, check: bool = True) -> np.ndarray:
    """Gamma curve ``255 * (x / 255) ** value``: value > 1 darkens mid-tones, < 1 brightens."""
    image = _rgb(image)
    value = _gamma_value(value)
    if value == 1:
        return image.copy()
    lut = _to_uint8(255 * (np.arange(256) / 255) ** value)
    return _changed(image, lut[image], f"gamma {value:g}", check)


def contrast(image: np.ndarray, factor: float, *, check: bool = True) -> np.ndarray:
    """Scale every value's distance from the mean grey level (ITU-R 601 luma) by ``factor``.

    Like Pillow's ``ImageEnhance.Contrast``: 0 gives flat grey, < 1 less contrast, > 1 more.
    """
    image = _rgb(image)
    factor = _contrast_factor(factor)
    if factor == 1:
        return image.copy()
    luma = np.array([0.299, 0.587, 0.114])
    mean = sum(float((image[top:bottom] @ luma).sum())
               for top, bottom in row_strips(*image.shape[:2])) / (image.size // 3)
    lut = _to_uint8(mean + factor * (np.arange(256) - mean))
    return _changed(image, lut[image], f"contrast x{factor:g}", check)


def longest_side(image: np.ndarray, size: int) -> np.ndarray:
    """Shrink by area interpolation so the longest side is ``size``.

    An image that already fits comes back as an unchanged copy: that is the contract, not a no-op.
    """
    image = _rgb(image)
    size = _size(size)
    height, width = image.shape[:2]
    if max(height, width) <= size:
        return image.copy()
    if height >= width:
        new_height, new_width = size, _scaled(width, size / height)
    else:
        new_height, new_width = _scaled(height, size / width), size
    return _cv2_resize(image, new_height, new_width, cv2.INTER_AREA)


# --- chains, augmentation -------------------------------------------------------------------

# A chain is a list of (registry name, keyword arguments) steps. A (low, high) tuple is drawn from
# the chain's seed: an integer in low..high inclusive if both are ints, else a uniform float.
CHAINS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    # A photo as re-shared on social networks: shrunk to 1080 px, re-encoded at q 75..85.
    "social": [("longest_side", {"size": 1080}), ("jpeg_pil", {"quality": (75, 85)})],
}


def _draw(value: Any, rng: np.random.Generator) -> Any:
    """A value drawn from a (low, high) tuple, or ``value`` itself."""
    if not isinstance(value, tuple):
        return value
    low, high = value
    if isinstance(low, int) and isinstance(high, int):
        return int(rng.integers(low, high + 1))
    return float(rng.uniform(low, high))


def run_chain(image: np.ndarray, steps: Sequence[tuple[str, Mapping[str, Any]]],
              seed: Seed = 0) -> np.ndarray:
    """Apply ``steps`` (see :data:`CHAINS`) in order; one generator from ``seed`` makes all draws."""
    image = _rgb(image)
    rng = np.random.default_rng(seed)
    out = image
    for name, params in steps:
        family = _family(name)
        kwargs = {key: _draw(value, rng) for key, value in params.items()}
        out = family.func(out, **({"seed": rng} if family.seeded else {}), **family.fixed, **kwargs)
    return image.copy() if out is image else out


def random_augment(image: np.ndarray, rng: Seed, p_blur: float = 0.5,
                   blur_sigma: tuple[float, float] = (0.0, 3.0), p_jpeg: float = 0.5,
                   jpeg_quality: tuple[int, int] = (30, 100)) -> np.ndarray:
    """CNNDetection's training augmentation.

    With probability ``p_blur``, Gaussian blur with sigma ~ U[blur_sigma]; then with probability
    ``p_jpeg``, JPEG with quality ~ U{jpeg_quality} (inclusive) by Pillow or OpenCV at random.
    Pass the trainer's Generator so draws continue across images (an int seeds a new one). The
    pixel-change check is off, as a small sigma may rightly change nothing; the JPEG quality
    check stays on.
    """
    image = _rgb(image)
    return apply_augment(image, draw_augment(rng, p_blur, blur_sigma, p_jpeg, jpeg_quality))


@dataclass(frozen=True)
class AugmentDraw:
    """What ``random_augment`` does to one image: the blur sigma and the JPEG (encoder,
    quality), each None when skipped."""

    sigma: float | None
    jpeg: tuple[str, int] | None


def draw_augment(rng: Seed, p_blur: float = 0.5, blur_sigma: tuple[float, float] = (0.0, 3.0),
                 p_jpeg: float = 0.5, jpeg_quality: tuple[int, int] = (30, 100)) -> AugmentDraw:
    """The random choices of ``random_augment`` alone, in its order, without touching pixels:
    data-parallel training draws every view of a batch on every rank and applies its own."""
    p_blur = _real(p_blur, "p_blur", 0.0, 1.0)
    p_jpeg = _real(p_jpeg, "p_jpeg", 0.0, 1.0)
    rng = np.random.default_rng(rng)
    sigma = float(rng.uniform(*blur_sigma)) if rng.random() < p_blur else None
    compression = None
    if rng.random() < p_jpeg:
        encoder = _JPEG_ENCODERS[rng.integers(len(_JPEG_ENCODERS))]
        compression = (encoder, int(rng.integers(jpeg_quality[0], jpeg_quality[1] + 1)))
    return AugmentDraw(sigma, compression)


def apply_augment(image: np.ndarray, draw: AugmentDraw) -> np.ndarray:
    """``image`` blurred and compressed as ``draw`` says; a new array."""
    out = image
    if draw.sigma is not None:
        out = gaussian_blur(out, draw.sigma, check=False)
    if draw.jpeg is not None:
        out = jpeg(out, draw.jpeg[1], draw.jpeg[0], check=False)
    return image.copy() if out is image else out


# --- registry -------------------------------------------------------------------------------

@dataclass(frozen=True)
class PerturbationFamily:
    """One registry entry: the function behind a name, and how its level and options appear in ids.

    ``family(image, level, seed=0, **kwargs)`` calls ``func`` with ``level`` as its ``level_arg``,
    the seed if ``seeded``, the ``fixed`` arguments, and any other keyword arguments
    (e.g. ``check=False``). Chains have no level (``level_arg`` is None).
    """

    name: str
    func: Callable[..., np.ndarray]
    level_arg: str | None = None
    level_key: str | None = None  # the level's name in ids: "q" in jpeg_pil/q=70
    parse_level: Callable[[Any], Any] | None = None  # checks a level, returns it as int or float
    identity: tuple[float, ...] = ()  # levels at which func returns an unchanged copy
    options: Mapping[str, tuple] = field(default_factory=dict)  # allowed values, default first
    fixed: Mapping[str, Any] = field(default_factory=dict)  # arguments this name fixes
    seeded: bool = False

    def __call__(self, image: np.ndarray, level: Any = None, *, seed: Seed = 0,
                 **kwargs: Any) -> np.ndarray:
        if self.level_arg is None:
            if level is not None:
                raise ValueError(f"{self.name!r} takes no level, got {level!r}")
            level_kw = {}
        else:
            level_kw = {self.level_arg: level}
        seed_kw = {"seed": seed} if self.seeded else {}
        return self.func(image, **level_kw, **seed_kw, **self.fixed, **kwargs)


PERTURBATIONS: dict[str, PerturbationFamily] = {family.name: family for family in [
    PerturbationFamily("jpeg_pil", jpeg, "quality", "q", _quality, fixed={"encoder": "pil"}),
    PerturbationFamily("jpeg_cv2", jpeg, "quality", "q", _quality, fixed={"encoder": "cv2"}),
    PerturbationFamily("blur", gaussian_blur, "sigma", "sigma", _blur_sigma, identity=(0.0,)),
    PerturbationFamily("resize", resize, "scale", "scale", _scale, identity=(1.0,),
                       options={"interpolation": tuple(_INTERPOLATIONS), "back": (False, True)}),
    PerturbationFamily("noise", gaussian_noise, "sigma", "sigma", _noise_sigma, identity=(0.0,),
                       seeded=True),
    PerturbationFamily("crop", crop, "fraction", "fraction", _fraction, identity=(1.0,),
                       options={"mode": _CROP_MODES}, seeded=True),
    PerturbationFamily("gamma", gamma, "value", "value", _gamma_value, identity=(1.0,)),
    PerturbationFamily("contrast", contrast, "factor", "factor", _contrast_factor,
                       identity=(1.0,)),
    PerturbationFamily("longest_side", longest_side, "size", "size", _size),
    *(PerturbationFamily(name, partial(run_chain, steps=steps), seeded=True)
      for name, steps in CHAINS.items()),
]}


def _family(name: str) -> PerturbationFamily:
    if name not in PERTURBATIONS:
        raise ValueError(f"unknown perturbation {name!r}; known: {', '.join(PERTURBATIONS)}")
    return PERTURBATIONS[name]


def identity_levels(name: str) -> tuple[float, ...]:
    """Levels at which perturbation ``name`` is a no-op (none for JPEG: even q=100 re-encodes)."""
    return _family(name).identity


def apply(image: np.ndarray, name: str, level: Any = None, *, seed: Seed = 0,
          **kwargs: Any) -> np.ndarray:
    """Apply registered perturbation ``name`` at ``level`` (its main parameter; None for chains).

    ``kwargs`` are the function's other keyword arguments, e.g. ``interpolation="area"``.
    """
    return _family(name)(image, level, seed=seed, **kwargs)


def _format(value: Any) -> str:
    """How a level or option is written in ids: floats by repr, booleans as true/false."""
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class Perturbation:
    """A registered perturbation at one setting, checked and normalised when built.

    ``params`` (read-only) holds every option of the family, defaults filled in; ``id`` names the setting,
    e.g. ``jpeg_pil/q=70`` or ``crop/fraction=0.8,mode=random`` (options at their defaults left
    out), and :func:`parse_perturbation` reads it back.
    """

    name: str
    level: Any = None
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        family = _family(self.name)
        if family.parse_level is None:
            if self.level is not None:
                raise ValueError(f"{self.name!r} takes no level, got {self.level!r}")
        else:
            object.__setattr__(self, "level", family.parse_level(self.level))
        unknown = sorted(set(self.params) - set(family.options))
        if unknown:
            raise ValueError(f"{self.name!r} has no option {', '.join(unknown)}; "
                             f"options: {', '.join(family.options) or 'none'}")
        params = {key: _choice(self.params.get(key, options[0]), key, options)
                  for key, options in family.options.items()}
        object.__setattr__(self, "params", MappingProxyType(params))

    def __hash__(self) -> int:
        return hash(self.id)

    @property
    def id(self) -> str:
        family = PERTURBATIONS[self.name]
        if family.level_key is None:
            return self.name
        fields = [f"{family.level_key}={_format(self.level)}"]
        fields += [f"{key}={_format(value)}" for key, value in self.params.items()
                   if value != family.options[key][0]]
        return f"{self.name}/{','.join(fields)}"

    def apply(self, image: np.ndarray, seed: Seed = 0) -> np.ndarray:
        """The perturbed image; ``seed`` matters for random families and chains only."""
        return apply(image, self.name, self.level, seed=seed, **self.params)


def parse_perturbation(text: str) -> Perturbation:
    """The :class:`Perturbation` whose ``id`` is ``text``, e.g. ``resize/scale=0.5,interpolation=area``.

    Raises ValueError (TypeError for a fractional JPEG quality) for ids that do not name a
    valid setting.
    """
    name, _, rest = text.strip().partition("/")
    family = _family(name)
    if family.level_key is None:
        if rest:
            raise ValueError(f"bad perturbation id {text!r}: {name!r} takes no level or options")
        return Perturbation(name)
    pairs = [item.partition("=") for item in rest.split(",")]
    fields = {key: value for key, _, value in pairs}
    if (not all(sep for _, sep, _ in pairs) or len(fields) < len(pairs)
            or family.level_key not in fields):
        raise ValueError(f"bad perturbation id {text!r}: expected "
                         f"{name}/{family.level_key}=LEVEL[,option=value,...]")
    level_text = fields.pop(family.level_key)
    try:
        level = int(level_text)
    except ValueError:
        try:
            level = float(level_text)
        except ValueError:
            raise ValueError(
                f"bad perturbation id {text!r}: level {level_text!r} is not a number"
            ) from None
    params = {key: next((o for o in family.options.get(key, ()) if _format(o) == value), value)
              for key, value in fields.items()}
    return Perturbation(name, level, params)
