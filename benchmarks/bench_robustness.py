"""Throughput of robustness runs against plain scanning of the same images, in one process.

Usage: python benchmarks/bench_robustness.py [--n 400] [--size 64] [--grid small]
                                            [--kind spectral|cnn] [--threads N]
Prints one JSON object: images per second of ``score_files`` (decode + score once), and of
``run_robustness`` over the grid (each image decoded once, perturbed and scored at every
setting) with 1 and 2 worker threads; ``perturbed_img_per_s`` counts image x setting pairs,
and ``grid_over_scan`` is its ratio to the scan rate, the figure of merit. A detector of
``--kind`` is first fitted on real vs blurred patches (not timed): any two classes will do.
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
import torch

from crashsafe.images import load_image
from crashsafe.runtime import keep_freed_memory, set_threads
from forensics.bundled import write_bundled_corpus
from forensics.corpus import REAL, discover_corpus
from forensics.detectors import create_detector, load_detector
from forensics.grid import load_grid
from forensics.robustness import run_robustness
from forensics.scoring import score_files


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--grid", default="small")
    ap.add_argument("--kind", default="spectral", choices=("spectral", "cnn"))
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: every usable CPU)")
    args = ap.parse_args()
    keep_freed_memory()  # as the CLI does
    set_threads(args.threads)
    settings = len(load_grid(args.grid))
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        corpus = write_bundled_corpus(Path(tmp) / "c", size=args.size, count=args.n, seed=1)
        paths = [it.path for it in discover_corpus(corpus).items]
        imgs = [load_image(p) for p in paths[:200]]
        blurred = [np.ascontiguousarray(np.roll(i, 1, axis=0) // 2 + i // 2) for i in imgs]
        bundle = Path(tmp) / "spectral"
        params = {"epochs": 1, "steps_per_epoch": 4, "progress": False} if args.kind == "cnn" else {}
        create_detector(args.kind, **params).fit(imgs + blurred,
                                                 [REAL] * 200 + [1] * 200).save(bundle)

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
            figures[f"grid_workers{workers}_over_scan"] = (
                figures[f"grid_workers{workers}_perturbed_img_per_s"] / figures["scan_img_per_s"])

    print(json.dumps({
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "load_average_1min": round(os.getloadavg()[0], 1),
        "images": len(paths), "size": args.size, "grid": args.grid, "settings": settings,
        "kind": args.kind, "torch_threads": torch.get_num_threads(),
        **{key: round(value, 2) for key, value in figures.items()},
    }, indent=2))


if __name__ == "__main__":
    main()
