"""Start-up of a one-file scan, in fresh processes: what a user waits for before the first score.

Usage: python benchmarks/bench_startup.py [--repeats 5] [--baseline-tree DIR]

Times, as the median of ``--repeats`` fresh processes each: the interpreter alone
(``python -c pass``), ``import sklearn.base`` alone, and ``forensics scan`` of one 64 px PNG with
a spectral bundle (logistic regression, and gradient boosting) and with the shipped general
detector (torch + timm). With ``--baseline-tree`` (a git worktree of an older commit) the scans
also run that tree's code in the same run, alternating with this one's, so both meet the same
load (not the gbm bundle, whose layout changed). Bundles are trained here on 40 bundled patches
against upsampled copies (not timed). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from crashsafe.images import load_image
from forensics.bundled import write_bundled_corpus
from forensics.detectors import create_detector

HERE = Path(__file__).resolve().parents[1]


def fresh(command: list[str], cwd: Path) -> float:
    """Seconds one fresh process of ``command`` takes, run in ``cwd``."""
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - start


def train_bundles(folder: Path, reals: list[np.ndarray]) -> dict[str, Path]:
    """A spectral bundle of each classifier, fit on ``reals`` against 2x upsampled copies."""
    fakes = [np.ascontiguousarray(image[::2, ::2].repeat(2, 0).repeat(2, 1)) for image in reals]
    labels = [0] * len(reals) + [1] * len(fakes)
    bundles = {}
    for classifier in ("logreg", "gbm"):
        detector = create_detector("spectral", classifier=classifier)
        bundles[f"spectral_{classifier}"] = detector.fit(reals + fakes, labels).save(
            folder / classifier)
    return bundles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline-tree", type=Path, default=None)
    args = parser.parse_args()
    python = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        corpus = write_bundled_corpus(work / "corpus", size=64, count=40)
        paths = sorted((corpus / "real").glob("*.png"))
        image = paths[0]
        bundles = train_bundles(work, [load_image(path) for path in paths])
        trees = {"this": HERE, **({"baseline": args.baseline_tree} if args.baseline_tree else {})}
        cases = {"python -c pass": ([python, "-c", "pass"], ("this",)),
                 "import sklearn.base": ([python, "-c", "import sklearn.base"], ("this",))}
        scan = [python, "-m", "forensics", "scan", str(image), "--out", str(work / "r.csv"), "-q"]
        for name, bundle in bundles.items():  # the baseline's gbm bundles were tree arrays
            which = ("this",) if name.endswith("gbm") else tuple(trees)
            cases[f"scan, {name}"] = ([*scan, "--detector", str(bundle)], which)
        cases["scan, shipped general"] = (scan, tuple(trees))
        times: dict[str, list[float]] = {}
        for _ in range(args.repeats):
            for case, (command, which) in cases.items():
                for tree in which:
                    times.setdefault(f"{case} [{tree}]", []).append(fresh(command, trees[tree]))
    print(json.dumps({"seconds_median": {k: round(statistics.median(v), 3)
                                         for k, v in times.items()},
                      "repeats": args.repeats, "load_average": os.getloadavg()[0]}, indent=1))


if __name__ == "__main__":
    main()
