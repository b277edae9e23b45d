"""Throughput of robustness runs against plain scanning of the same images, in one process.

Usage: python benchmarks/bench_robustness.py [--n 400] [--size 64] [--grid small]
Prints one JSON object: images per second of ``score_files`` (decode + score once), and of
``run_robustness`` over the grid (each image decoded once, perturbed and scored at every
setting) with 1 and 2 worker threads; ``perturbed_img_per_s`` counts image x setting pairs.
A spectral detector is first fitted on real vs blurred patches (not timed): any two classes
will do for timing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from forensics.bundled import write_bundled_corpus
from forensics.corpus import REAL, discover_corpus
from forensics.detectors import create_detector, load_detector
from forensics.grid import load_grid
from forensics.images import load_image
from forensics.robustness import run_robustness
from forensics.scoring import score_files


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--grid", default="small")
    args = ap.parse_args()
    settings = len(load_grid(args.grid))
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        corpus = write_bundled_corpus(Path(tmp) / "c", size=args.size, count=args.n, seed=1)
        paths = [it.path for it in discover_corpus(corpus).items]
        imgs = [load_image(p) for p in paths[:200]]
        blurred = [np.ascontiguousarray(np.roll(i, 1, axis=0) // 2 + i // 2) for i in imgs]
        bundle = Path(tmp) / "spectral"
        create_detector("spectral").fit(imgs + blurred, [REAL] * 200 + [1] * 200).save(bundle)

        start = time.perf_counter()
        score_files(paths, load_detector(bundle), workers=2, progress=False)
        figures["scan_img_per_s"] = len(paths) / (time.perf_counter() - start)
        for workers in (1, 2):
            start = time.perf_counter()
            run_robustness([bundle], [corpus], Path(tmp) / f"run{workers}", grid=args.grid,
                           split="all", workers=workers, progress=False)
            seconds = time.perf_counter() - start
            figures[f"grid_workers{workers}_img_per_s"] = len(paths) / seconds
            figures[f"grid_workers{workers}_perturbed_img_per_s"] = len(paths) * settings / seconds

    print(json.dumps({
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "load_average_1min": round(os.getloadavg()[0], 1),
        "images": len(paths), "size": args.size, "grid": args.grid, "settings": settings,
        **{key: round(value, 1) for key, value in figures.items()},
    }, indent=2))


if __name__ == "__main__":
    main()
