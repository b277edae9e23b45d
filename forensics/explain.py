"""Explanations of a verdict as plain numpy data, for the app and for reports.

Every function takes an RGB ``uint8`` image of shape (H, W, 3) and returns arrays or dicts ready
to show with any image or chart library; nothing here plots. The panels are the ones forensic
tools offer (Forensically, Sherloq, FotoForensics) plus the two that fit our detectors:

* ``spectrum_2d``: where GAN upsampling leaves peaks (centred log power spectrum);
* ``azimuthal_vs_reference``: the image's azimuthal spectrum against the training real and
  fake curves that a spectral bundle stores;
* ``noise_residual``: what is left once content is predicted away (sensor noise or generator
  texture);
* ``error_level_analysis``: the difference after re-saving as JPEG;
* ``gradcam`` and ``overlay``: where the CNN looked (at a stage fine enough for the image's
  size: ``cam_stage``);
* ``jpeg_quality_estimate``: the quality a JPEG file was saved at, from its quantisation tables.
"""

from __future__ import annotations

import io
import math
import os
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.nn import functional as F

from crashsafe.images import row_strips
from forensics.detectors import Detector, load_detector
from forensics.detectors.cnn import CNNDetector, pool_logits
from forensics.features import (
    azimuthal_spectrum,
    check_rgb_image,
    highpass_residual,
    log_power_spectrum,
)
from forensics.features.spectrum import spectrum_radius
from forensics.perturb import _luma_table, jpeg

__all__ = [
    "spectrum_2d",
    "azimuthal_vs_reference",
    "noise_residual",
    "error_level_analysis",
    "gradcam",
    "cam_stage",
    "overlay",
    "jpeg_quality_estimate",
]

_TARGETS = ("verdict", "fake", "real")
CAM_MIN_CELLS = 7  # a Grad-CAM map's cells across the shorter side, at least (7: the paper's)


def _stretch(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """``values`` mapped linearly from their [low, high] percentiles to [0, 1], clipped, float32."""
    lo, hi = np.percentile(values, (low, high))
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.float32)
    return np.clip((values - lo) / (hi - lo), 0, 1).astype(np.float32)


def spectrum_2d(image: np.ndarray, window: bool = True) -> np.ndarray:
    """Centred log power spectrum of the grey image, float32 (H, W) in [0, 1] for display.

    Stretched between its 1st and 99.9th percentiles, so the bright zero frequency does not
    flatten everything else; zero frequency at (H // 2, W // 2). An image over
    ``TILED_ABOVE`` pixels gets the mean spectrum of its tiles (``log_power_spectrum``).
    """
    return _stretch(log_power_spectrum(image, window), 1.0, 99.9)


def _find_member(detector: Detector, wanted: type | str) -> Detector | None:
    """``detector`` itself or the first of an ensemble's members that is ``wanted``.

    ``wanted`` is a class, or the name of an attribute the detector must have.
    """

    def fits(candidate: Detector) -> bool:
        if isinstance(wanted, str):
            return hasattr(candidate, wanted)
        return isinstance(candidate, wanted)

    if fits(detector):
        return detector
    return next((m for m in getattr(detector, "members_", {}).values() if fits(m)), None)


def azimuthal_vs_reference(image: np.ndarray,
                           detector: Detector | str | os.PathLike) -> dict[str, Any]:
    """The image's azimuthal spectrum beside a bundle's real and fake reference curves.

    ``detector`` is a fitted detector or a bundle folder; its reference curves come from
    itself or, for an ensemble, its first member that keeps them (spectral detectors do).
    Returns ``radius`` (bin centres, frequency / Nyquist, 1.41 = corner), ``image`` (the
    curve, computed with the reference's bins and window) and ``reference``: a dict of
    ``real_mean``, ``real_std``, ``fake_mean``, ``fake_std``, or None when the bundle keeps no
    reference curves (the image curve then has 64 bins). All arrays are float64 (n_bins,).
    """
    if not isinstance(detector, Detector):
        detector = load_detector(detector)
    source = _find_member(detector, "reference_")
    reference = None if source is None else {
        key: np.asarray(curve, dtype=np.float64) for key, curve in source.reference_.items()}
    n_bins = 64 if reference is None else len(reference["real_mean"])
    window = bool(getattr(source, "window", True))
    curve = azimuthal_spectrum(image, n_bins=n_bins, window=window).astype(np.float64)
    return {"radius": spectrum_radius(n_bins), "image": curve,
            "reference": reference}


def _residual_magnitude(image: np.ndarray, top: int, bottom: int) -> np.ndarray:
    """|SRM residual| of rows ``top:bottom`` of an RGB image, float32 (3, rows, W): computed
    with the row above and below as context, so strips give the whole image's values."""
    low, high = max(0, top - 1), min(image.shape[0], bottom + 1)
    planes = image[low:high].transpose(2, 0, 1).astype(np.float32)
    return np.abs(highpass_residual(planes))[:, top - low:bottom - low]


def _percentile_of_quarters(counts: np.ndarray, q: float) -> float:
    """numpy's (linear) ``q``-th percentile of values k / 4 given each k's count."""
    position = (int(counts.sum()) - 1) * q / 100
    cumulative = np.cumsum(counts)
    below, above = (int(np.searchsorted(cumulative, k, side="right"))
                    for k in (math.floor(position), math.ceil(position)))
    return (below + (above - below) * (position - math.floor(position))) / 4


def noise_residual(image: np.ndarray) -> np.ndarray:
    """Magnitude of the SRM high-pass residual per channel, uint8 (H, W, 3) for display.

    The residual (``forensics.features.highpass_residual``) predicts each pixel from its
    neighbours; its magnitude is stretched so the 99.5th percentile is white. Camera noise
    looks fine and even, generator texture often periodic or patchy. Computed a strip of rows
    at a time, twice (the percentile from a count of every value first: the residual of 8-bit
    pixels takes only multiples of 1/4), so a 64 MP image never has a float copy.
    """
    check_rgb_image(image)
    strips = list(row_strips(*image.shape[:2]))
    counts = np.zeros(4 * 1020 + 1, dtype=np.int64)  # |residual| <= 255 * 16 / 4
    for top, bottom in strips:
        quarters = np.rint(_residual_magnitude(image, top, bottom) * 4).astype(np.int64)
        counts += np.bincount(quarters.ravel(), minlength=counts.size)
    low, high = (_percentile_of_quarters(counts, q) for q in (0.0, 99.5))
    out = np.empty_like(image)
    for top, bottom in strips:
        magnitude = _residual_magnitude(image, top, bottom)
        scaled = (np.zeros_like(magnitude) if high <= low
                  else np.clip((magnitude - low) / (high - low), 0, 1))
        out[top:bottom] = np.rint(scaled.transpose(1, 2, 0) * 255).astype(np.uint8)
    return out


def error_level_analysis(image: np.ndarray, quality: int = 90,
                         amplification: float = 20.0) -> np.ndarray:
    """|image - JPEG(image, quality)| x ``amplification``, uint8 (H, W, 3), clipped at 255.

    Pixels already saved at this quality change little on re-saving; edited or never
    compressed ones change more. Re-saving goes through ``forensics.perturb.jpeg`` (Pillow),
    which checks that the quality was applied; the difference is taken a strip at a time.
    """
    check_rgb_image(image)
    resaved = jpeg(image, quality, check=False)
    out = np.empty_like(image)
    for top, bottom in row_strips(*image.shape[:2]):
        difference = np.abs(image[top:bottom].astype(np.int16)
                            - resaved[top:bottom].astype(np.int16))
        out[top:bottom] = np.clip(difference * amplification, 0, 255).astype(np.uint8)
    return out


def gradcam(detector: Detector, image: np.ndarray, target: str = "verdict", *,
            min_cells: int = CAM_MIN_CELLS) -> np.ndarray:
    """Grad-CAM heat map of the CNN's logit over the image, float32 (H, W) in [0, 1].

    ``detector`` is a CNNDetector or an ensemble with a CNN member. The map is taken at the
    deepest stage of the backbone whose map still has ``min_cells`` cells across the image's
    (or tile's) shorter side: the last stage (7 x 7 for 224 px, as in the Grad-CAM paper) for
    large images, an earlier one for small images, where the last stage is 1 x 1 and says
    nothing about where (as Layer-CAM does for finer maps). As in scoring, images larger than
    the detector's tile size are done tile by tile (overlaps averaged), never resized.
    ``target`` is "fake" (what raised P(fake)), "real" (what lowered it) or "verdict"
    (whichever the detector decided). An all-zero map means no region pushed towards the
    target.
    """
    if target not in _TARGETS:
        raise ValueError(f"target must be one of {', '.join(_TARGETS)}, got {target!r}")
    cnn = _find_member(detector, CNNDetector)
    if cnn is None:
        raise ValueError(f"a {detector.kind!r} detector has no CNN, so it has no Grad-CAM map")
    check_rgb_image(image)
    network = cnn.network_.eval()
    device = next(network.parameters()).device
    height, width = image.shape[:2]
    boxes = cnn.tiles(height, width)
    shortest = min(min(b[0].stop - b[0].start, b[1].stop - b[1].start) for b in boxes)
    stage = cam_stage(network.backbone, shortest, min_cells)
    cams, logits = [], []
    for box in boxes:
        x = cnn.to_tensor(image[box][None], device).requires_grad_(True)
        with torch.enable_grad():
            features, stage_map = network.features_and_stage(x, stage)
            logit = network.head(features)[0]
            (gradient,) = torch.autograd.grad(logit, stage_map)
        # Channel weights: the gradient averaged over the map; their sign flips for "real".
        weights = gradient.mean(dim=(2, 3), keepdim=True)
        cams.append((stage_map.detach() * weights).sum(dim=1, keepdim=True))
        logits.append(float(logit.detach()))
    sign = {"fake": 1.0, "real": -1.0}.get(target)
    if sign is None:
        pooled = pool_logits(np.asarray(logits), cnn.pool, cnn.pool_k)
        fake = cnn.proba_from_logits(pooled) >= cnn.threshold_
        sign = 1.0 if fake else -1.0

    heat = torch.zeros(height, width)  # float32: a 64 MP map in 256 MB, not 512
    counts = torch.zeros(height, width, dtype=torch.uint8)  # tiles overlap 4 times at most
    for box, cam in zip(boxes, cams):
        size = (box[0].stop - box[0].start, box[1].stop - box[1].start)
        up = F.interpolate(torch.relu(sign * cam), size=size, mode="bilinear",
                           align_corners=False)
        heat[box] += up[0, 0].float().cpu()
        counts[box] += 1
    heat.div_(counts.clamp_(min=1))  # in place (npr: an odd last row or column is unscored)
    peak = float(heat.max())
    if peak > 0:
        heat.div_(peak)
    return heat.numpy()


def cam_stage(backbone: torch.nn.Module, side: int, min_cells: int = CAM_MIN_CELLS) -> int:
    """Index in timm's ``feature_info`` of ``backbone`` of the deepest stage whose map has at
    least ``min_cells`` cells across ``side`` pixels (the shallowest stage when none has)."""
    reductions = [info["reduction"] for info in backbone.feature_info]
    fitting = [i for i, reduction in enumerate(reductions) if side // reduction >= min_cells]
    return max(fitting, key=reductions.__getitem__) if fitting else reductions.index(
        min(reductions))


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The image blended with a heat map in the "jet" colours, RGB uint8 (H, W, 3).

    ``heatmap`` holds values in [0, 1] (as ``gradcam`` returns); a map of another size is
    resized to the image for display. ``alpha`` is the heat map's opacity in [0, 1].
    """
    check_rgb_image(image)
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    heat = np.clip(np.nan_to_num(np.asarray(heatmap, dtype=np.float32)), 0, 1)
    if heat.ndim != 2:
        raise ValueError(f"heatmap must be a (H, W) array, got shape {heat.shape}")
    if heat.shape != image.shape[:2]:
        heat = cv2.resize(heat, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    colours = cv2.applyColorMap(np.rint(heat * 255).astype(np.uint8), cv2.COLORMAP_JET)
    colours = cv2.cvtColor(colours, cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(colours, alpha, image, 1 - alpha, 0)


def jpeg_quality_estimate(source: str | os.PathLike | bytes) -> int | None:
    """The libjpeg quality (1..100) whose luminance table is nearest the file's, or None.

    Reads only the header of a file path or raw bytes (no pixels are decoded). Files written
    by libjpeg, Pillow or OpenCV give their exact quality; other encoders' tables give the
    nearest libjpeg quality. Non-JPEG or unreadable data gives None.
    """
    stream = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    try:
        with Image.open(stream, formats=["JPEG"]) as img:
            table = np.asarray(img.quantization.get(0, ()), dtype=np.float64)
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    if table.shape != (64,):
        return None
    errors = [np.abs(np.log(table) - np.log(_luma_table(q))).sum() for q in range(1, 101)]
    return int(np.argmin(errors)) + 1
