"""Throughput of scanning one folder: decode only, spectral scoring and CNN scoring, in one run.

Usage: python benchmarks/bench_scan.py [--n 2000] [--size 64] [--bundle DIR] [--cnn-bundle DIR]
       [--per-image 300] [--large 12] [--threads N] [--real-size N] [--skip-patches]
       [--repeats 3] [--device cpu|cuda] [--only CASE|DETECTOR ...]

Real-size table (``--real-size N`` images per case, 0 to skip): JPEG photos of about 500x375
and 1024 px PNGs made from the bundled photos, scanned by every detector kind and the shipped
general detector through ``score_files``, beside the obvious baseline in the same run: for the
CNN kinds a plain loop (PIL decode, the detector's own tiles, one batch per image, the same
network under ``torch.inference_mode``, the same threads), for the others decoding alone. The
ratio scan / baseline is the figure of merit.

Patch table (skipped with ``--skip-patches``):

Prints one JSON object of figures (images per second) for the same bundled corpus: decoding
alone; spectral features per image and batched; the spectral detector and the CNN on decoded
images (the CNN batched, and one image per call on the first ``--per-image``); both through
``score_files`` (decode + score, 1 and 2 decoding threads); and the CNN on ``--large`` 600x500
images, which it scores as the mean of 256 px tiles. Without bundles, a spectral detector and
a CNN are trained first on the corpus against blurred copies (not timed; only speed matters).
The machine's load average is printed with the figures: other jobs share these cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from crashsafe.images import load_image
from crashsafe.runtime import keep_freed_memory, set_threads
from forensics.bundled import write_bundled_corpus
from forensics.corpus import discover_corpus
from forensics.detectors import Detector, create_detector, load_detector
from forensics.features import azimuthal_spectra, azimuthal_spectrum
from forensics.perturb import resize
from forensics.scoring import score_files
from PIL import Image

# (name, size of the written images, format): about ImageNet's photos, and large GAN PNGs.
REAL_SIZE_CASES = (("jpeg_500x375", (375, 500), "JPEG"), ("png_1024", (1024, 1024), "PNG"))
CASE_NAMES = {case for case, _, _ in REAL_SIZE_CASES}


def _rate(n: int, run: Callable[[], object]) -> float:
    """Images per second of ``run()`` over ``n`` images."""
    start = time.perf_counter()
    run()
    return round(n / (time.perf_counter() - start), 1)


def _training_set(images: list[np.ndarray]) -> tuple[list[np.ndarray], list[int]]:
    """Two classes for timing runs: the images (0) and 2-pixel-blurred copies (1)."""
    blurred = [np.ascontiguousarray(np.roll(i, 1, axis=0) // 2 + i // 2) for i in images]
    return images + blurred, [0] * len(images) + [1] * len(blurred)


def _detector(bundle: str | None, kind: str, images: list[np.ndarray], **params) -> Detector:
    """The bundle's detector, or one of ``kind`` fit quickly on ``_training_set``."""
    if bundle:
        return load_detector(bundle)
    return create_detector(kind, **params).fit(*_training_set(images))


def write_real_size_images(folder: Path, n: int, shape: tuple[int, int], fmt: str,
                           seed: int = 0) -> list[Path]:
    """``n`` images of ``shape`` (H, W) cut from the bundled photos, a photo smaller than the
    shape enlarged first (content does not matter for speed), JPEG at quality 90 or PNG."""
    from forensics.bundled import SOURCE_PHOTOS

    rng = np.random.default_rng(seed)
    photos = [load_image(p.path()) for p in SOURCE_PHOTOS]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(n):
        photo = photos[k % len(photos)]
        scale = max(shape[0] / photo.shape[0], shape[1] / photo.shape[1], 1.0)
        if scale > 1:
            photo = resize(photo, scale * 1.01, "bicubic", check=False)
        top = int(rng.integers(0, photo.shape[0] - shape[0] + 1))
        left = int(rng.integers(0, photo.shape[1] - shape[1] + 1))
        path = folder / f"{k:04d}.{'jpg' if fmt == 'JPEG' else 'png'}"
        Image.fromarray(photo[top:top + shape[0], left:left + shape[1]]).save(
            path, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        paths.append(path)
    return paths


def plain_cnn_loop(paths: list[Path], detector) -> None:
    """The obvious loop a user would write with the detector's network: PIL decode, the
    detector's tiles, one batch per image, ``inference_mode``; the score is thrown away."""
    network = detector.network_.eval()
    device = next(network.parameters()).device
    with torch.inference_mode():
        for path in paths:
            with Image.open(path) as im:
                image = np.asarray(im.convert("RGB"))
            tiles = np.stack([image[box] for box in detector.tiles(*image.shape[:2])])
            network(detector.to_tensor(tiles, device)).float().mean().item()


def decode_only(paths: list[Path]) -> None:
    for path in paths:
        with Image.open(path) as im:
            np.asarray(im.convert("RGB"))


def real_size_table(detectors: dict, n: int, tmp: Path, repeats: int = 3,
                    cases: tuple[str, ...] = ()) -> list[dict]:
    """One row per (case, detector): scan rate, baseline rate (each the best of ``repeats``
    alternating runs) and their ratio; only ``cases`` when given."""
    rows = []
    for case, shape, fmt in REAL_SIZE_CASES:
        if cases and case not in cases:
            continue
        paths = write_real_size_images(tmp / case, n, shape, fmt)
        decode_only(paths[:4])  # warm the page cache and the decoder
        for name, detector in detectors.items():
            cnn = hasattr(detector, "network_")
            baseline = (lambda: plain_cnn_loop(paths, detector)) if cnn else (
                lambda: decode_only(paths))
            score_files(paths[:2], detector, progress=False)  # warm-up: first-call set-up
            base = scan = 0.0
            for _ in range(repeats):  # alternate so machine load hits both alike; keep the best
                base = max(base, _rate(n, baseline))
                scan = max(scan, _rate(n, lambda: score_files(paths, detector, progress=False)))
            rows.append({"case": case, "detector": name,
                         "baseline": "plain loop" if cnn else "decode only",
                         "baseline_img_per_s": base, "scan_img_per_s": scan,
                         "scan_over_baseline": round(scan / base, 2)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def real_size_detectors(sample: list[np.ndarray], spectral: Detector, cnn: Detector,
                        device: str) -> dict:
    """Every detector kind (fit quickly on ``sample`` against blurred copies) and the shipped
    general detector, the CNN kinds on ``device``."""
    from forensics.detectors.general import general_detector_path

    oneclass = create_detector("oneclass").fit(sample, [0] * len(sample))
    general = load_detector(general_detector_path()).to(device)
    return {"spectral": spectral, "cnn (Lite0)": cnn, "oneclass": oneclass,
            "general (shipped, npr_resnet)": general}


def patch_figures(paths: list[Path], spectral: Detector, cnn: Detector,
                  args: argparse.Namespace) -> dict[str, float]:
    """Images per second of each step on the small patches (the patch table)."""
    start = time.perf_counter()
    images = [load_image(p) for p in paths]
    figures = {"decode_only": round(len(paths) / (time.perf_counter() - start), 1)}
    n = len(images)
    figures["spectrum_per_image"] = _rate(n, lambda: [azimuthal_spectrum(i) for i in images])
    figures["spectrum_batched"] = _rate(n, lambda: azimuthal_spectra(images))
    figures["spectral_scoring"] = _rate(n, lambda: spectral.predict_proba(images))
    figures["cnn_batched"] = _rate(n, lambda: cnn.predict_proba(images))
    few = images[:args.per_image]
    figures["cnn_per_image"] = _rate(len(few), lambda: [cnn.predict_proba([i]) for i in few])
    for name, detector in (("spectral", spectral), ("cnn", cnn)):
        for workers in (1, 2):
            figures[f"{name}_scan_workers{workers}"] = _rate(
                n, lambda: score_files(paths, detector, workers=workers, progress=False))
    rng = np.random.default_rng(0)
    large = [rng.integers(0, 256, (600, 500, 3), dtype=np.uint8) for _ in range(args.large)]
    figures["cnn_tiled_600x500"] = _rate(len(large), lambda: cnn.predict_proba(large))
    return figures


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--bundle", help="spectral (or any) detector bundle")
    ap.add_argument("--cnn-bundle", help="CNN detector bundle")
    ap.add_argument("--per-image", type=int, default=300,
                    help="images scored one call each by the CNN")
    ap.add_argument("--large", type=int, default=12, help="600x500 images for the tiled CNN")
    ap.add_argument("--threads", type=int,
                    help="torch CPU threads, as forensics --threads (default: every usable CPU)")
    ap.add_argument("--real-size", type=int, default=100,
                    help="images per real-size case (0: skip the real-size table)")
    ap.add_argument("--skip-patches", action="store_true", help="only the real-size table")
    ap.add_argument("--only", nargs="+", default=(),
                    help="real-size rows to measure: case names (jpeg_500x375, png_1024) and "
                         "detector names (spectral, cnn, oneclass, general); default all")
    ap.add_argument("--repeats", type=int, default=3,
                    help="alternating runs of scan and baseline per row; the best of each counts")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                    help="where the CNN kinds run (the patch table's CNN too)")
    args = ap.parse_args()
    keep_freed_memory()  # as the CLI does; the plain loop gains from it as much as scan
    set_threads(args.threads)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        corpus_dir = write_bundled_corpus(Path(tmp) / "c", size=args.size, count=args.n, seed=1)
        paths = [it.path for it in discover_corpus(corpus_dir).items]
        sample = [load_image(p) for p in paths[:200]]
        spectral = _detector(args.bundle, "spectral", sample)
        cnn = _detector(args.cnn_bundle, "cnn", sample, epochs=1, steps_per_epoch=4,
                        progress=False, device=args.device).to(args.device)
        figures = {} if args.skip_patches else patch_figures(paths, spectral, cnn, args)
        detectors = {name: detector for name, detector
                     in real_size_detectors(sample, spectral, cnn, args.device).items()
                     if not set(args.only) - CASE_NAMES or name.split()[0] in args.only}
        cases = tuple(set(args.only) & CASE_NAMES)
        real_size = (real_size_table(detectors, args.real_size, Path(tmp), args.repeats, cases)
                     if args.real_size else [])

    print(json.dumps({
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "load_average_1min": [round(load_before, 1), round(os.getloadavg()[0], 1)],
        "torch_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "images": len(paths), "size": args.size,
        "cnn": f"{cnn.backbone}, batch {cnn.batch_size}, tile {cnn.tile_size}",
        **{f"{key}_img_per_s": value for key, value in figures.items()},
        "real_size": real_size,
    }, indent=2))


if __name__ == "__main__":
    main()
