"""Throughput of scanning one folder: decode only, spectral scoring and CNN scoring, in one run.

Usage: python benchmarks/bench_scan.py [--n 2000] [--size 64] [--bundle DIR] [--cnn-bundle DIR]
       [--per-image 300] [--large 12] [--threads N]

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

from forensics.bundled import write_bundled_corpus
from forensics.corpus import discover_corpus
from forensics.detectors import Detector, create_detector, load_detector
from forensics.features import azimuthal_spectra, azimuthal_spectrum
from forensics.images import load_image
from forensics.scoring import score_files


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
                    help="torch CPU threads of the CNN (default: its own choice, idle CPUs)")
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        corpus_dir = write_bundled_corpus(Path(tmp) / "c", size=args.size, count=args.n, seed=1)
        paths = [it.path for it in discover_corpus(corpus_dir).items]
        sample = [load_image(p) for p in paths[:200]]
        spectral = _detector(args.bundle, "spectral", sample)
        cnn = _detector(args.cnn_bundle, "cnn", sample, epochs=1, steps_per_epoch=4,
                        progress=False)
        cnn.threads = args.threads or cnn.threads

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

    print(json.dumps({
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "load_average_1min": [round(load_before, 1), round(os.getloadavg()[0], 1)],
        "torch_threads": torch.get_num_threads(),
        "images": len(paths), "size": args.size,
        "cnn": f"{cnn.backbone}, batch {cnn.batch_size}, tile {cnn.tile_size}",
        **{f"{key}_img_per_s": value for key, value in figures.items()},
    }, indent=2))


if __name__ == "__main__":
    main()
