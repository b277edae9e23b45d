"""Throughput of scanning: decode only vs decode + spectral scoring, batched vs one at a time.

Usage: python benchmarks/bench_scan.py [--n 2000] [--size 64] [--bundle DIR]
Prints one JSON object of figures (images per second). Without --bundle, a spectral detector is
trained on a small bundled corpus first (not timed).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from forensics.bundled import write_bundled_corpus
from forensics.corpus import REAL, discover_corpus
from forensics.detectors import create_detector, load_detector
from forensics.features import azimuthal_spectra, azimuthal_spectrum
from forensics.images import load_image
from forensics.scoring import score_files


def _rate(n: int, seconds: float) -> float:
    return round(n / seconds, 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--bundle")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        corpus_dir = write_bundled_corpus(Path(tmp) / "c", size=args.size, count=args.n, seed=1)
        paths = [it.path for it in discover_corpus(corpus_dir).items]
        if args.bundle:
            detector = load_detector(args.bundle)
        else:  # real vs a blurred copy: any two classes will do for timing
            imgs = [load_image(p) for p in paths[:200]]
            fake = [np.ascontiguousarray(np.roll(i, 1, axis=0) // 2 + i // 2) for i in imgs]
            detector = create_detector("spectral").fit(imgs + fake, [REAL] * 200 + [1] * 200)

        t = time.perf_counter()
        images = [load_image(p) for p in paths]
        decode = time.perf_counter() - t

        t = time.perf_counter()
        for img in images:
            azimuthal_spectrum(img)
        per_image = time.perf_counter() - t
        t = time.perf_counter()
        azimuthal_spectra(images)
        batched = time.perf_counter() - t

        results = {}
        for workers in (1, 2):
            t = time.perf_counter()
            score_files(paths, detector, workers=workers, progress=False)
            results[f"scan_workers{workers}"] = _rate(len(paths), time.perf_counter() - t)

    print(json.dumps({
        "machine": f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores",
        "images": len(paths), "size": args.size,
        "decode_only_img_per_s": _rate(len(paths), decode),
        "spectrum_per_image_img_per_s": _rate(len(paths), per_image),
        "spectrum_batched_img_per_s": _rate(len(paths), batched),
        **{f"{k}_img_per_s": v for k, v in results.items()},
    }, indent=2))


if __name__ == "__main__":
    main()
