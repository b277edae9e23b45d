"""Peak memory and time of a one-image scan of a 64 MP image, per detector kind.

Each scan is the real command (``python -m forensics.cli scan IMAGE --detector BUNDLE``) in a
fresh process, so its peak RSS (``ru_maxrss`` of that child, from ``os.wait4``) holds
everything a user's scan holds: the interpreter, torch, the detector and the image's
features or tiles. The image is the largest inside the default ``--max-pixels`` (7999 x 7999,
about 64 MP), cut from an enlarged bundled photo and written as PNG and as JPEG (quality 90).
The detectors are fit quickly on bundled patches (as ``bench_scan.py`` does; content does not
matter for memory), plus the shipped general detector, an ensemble of two spectral members
and one of a spectral and a CNN member (as the demo trains).
The baseline row is the decode alone (``crashsafe.images.load_image`` in a fresh process).

Linux keeps a process's peak RSS across ``exec`` from the process it was forked from, so the
heavy preparation (fitting, writing the image) runs in a child of its own, and the measuring
parent stays small (no torch, no numpy): every figure is the scan's own peak.

    python benchmarks/bench_memory.py [--side 7999] [--only spectral cnn ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DECODE_ONLY = "import sys; from crashsafe.images import load_image; load_image(sys.argv[1])"


def write_large_images(folder: Path, side: int) -> dict[str, Path]:
    """A ``side`` x ``side`` photo (the largest bundled photo, enlarged), as PNG and JPEG."""
    from PIL import Image

    from forensics.bundled import SOURCE_PHOTOS
    from crashsafe.images import load_image
    from forensics.perturb import resize

    photo = max((load_image(p.path()) for p in SOURCE_PHOTOS),
                key=lambda a: a.shape[0] * a.shape[1])
    scale = side / min(photo.shape[:2]) * 1.01
    big = resize(photo, scale, "bicubic", check=False)[:side, :side]
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"png": folder / "large.png", "jpeg": folder / "large.jpg"}
    Image.fromarray(big).save(paths["png"], compress_level=1)
    Image.fromarray(big).save(paths["jpeg"], quality=90)
    return paths


def measure(command: list[str]) -> dict[str, float]:
    """Wall seconds and peak RSS (MB) of ``command`` run to completion in a child process."""
    with tempfile.TemporaryFile() as errors:  # a file, not a pipe: a full pipe would block
        start = time.perf_counter()
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)  # already reaped by wait4
        if child.returncode:
            errors.seek(0)
            raise RuntimeError(f"{' '.join(command)} failed ({child.returncode}): "
                               f"{errors.read().decode(errors='replace').strip()}")
    return {"seconds": round(seconds, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024)}


def prepare(root: Path, side: int, only: list[str]) -> dict[str, Any]:
    """Fit and save the detectors and write the large images under ``root`` (run in a child
    process: see the module docstring); their paths by name."""
    from bench_scan import _detector, _training_set, real_size_detectors
    from forensics.bundled import write_bundled_corpus
    from forensics.corpus import discover_corpus
    from forensics.detectors import create_detector
    from crashsafe.images import load_image

    corpus = write_bundled_corpus(root / "c", size=64, count=200, seed=1)
    sample = [load_image(it.path) for it in discover_corpus(corpus).items]
    spectral = _detector(None, "spectral", sample)
    cnn = _detector(None, "cnn", sample, epochs=1, steps_per_epoch=2, progress=False)
    detectors = real_size_detectors(sample, spectral, cnn, "cpu")
    train, val = _training_set(sample[:150]), _training_set(sample[150:])
    detectors["ensemble (spectral fft + npr)"] = create_detector("ensemble").fit(
        *train, val_images=val[0], val_labels=val[1])
    quick_cnn = {"name": "cnn", "kind": "cnn",
                 "params": {"epochs": 1, "steps_per_epoch": 2, "progress": False}}
    detectors["ensemble+cnn (spectral fft + Lite0, the demo's)"] = create_detector(
        "ensemble", members=["spectral:fft", quick_cnn]).fit(
        *train, val_images=val[0], val_labels=val[1])
    bundles = {name: str(detector.save(root / "bundles" / name.split()[0]))
               for name, detector in detectors.items()
               if not only or name.split()[0] in only}
    images = {fmt: str(path) for fmt, path in write_large_images(root / "images", side).items()}
    return {"bundles": bundles, "images": images}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--side", type=int, default=7999, help="image side in pixels")
    ap.add_argument("--only", nargs="+", default=[],
                    help="detector kinds to measure (spectral, cnn, oneclass, general, "
                         "ensemble, ensemble+cnn); default all")
    ap.add_argument("--formats", nargs="+", default=("png", "jpeg"), choices=("png", "jpeg"))
    ap.add_argument("--prepare", metavar="DIR", help=argparse.SUPPRESS)  # the child's job
    args = ap.parse_args()
    if args.prepare:
        plan = prepare(Path(args.prepare), args.side, args.only)
        (Path(args.prepare) / "plan.json").write_text(json.dumps(plan))
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, __file__, "--prepare", tmp, "--side", str(args.side),
                        *(["--only", *args.only] if args.only else [])], check=True)
        plan = json.loads((Path(tmp) / "plan.json").read_text())
        for fmt in args.formats:
            image = Path(plan["images"][fmt])
            label = {"image": f"{fmt} {args.side}x{args.side}",
                     "file_mb": round(image.stat().st_size / 2**20, 1)}
            rows.append({**label, "detector": "decode only",
                         **measure([sys.executable, "-c", DECODE_ONLY, str(image)])})
            print(json.dumps(rows[-1]), flush=True)
            for name, bundle in plan["bundles"].items():
                scan = measure([sys.executable, "-m", "forensics.cli", "scan", str(image),
                                "--detector", bundle, "--out", str(Path(tmp) / "out.csv"),
                                "-q"])
                rows.append({**label, "detector": name, **scan})
                print(json.dumps(rows[-1]), flush=True)
    print(json.dumps({"cores": os.cpu_count(), "load_average_1min": os.getloadavg()[0],
                      "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
