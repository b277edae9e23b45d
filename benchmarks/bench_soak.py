"""Soak: memory of long runs. `forensics scan` over 20,000 small images and `forensics
robustness` over 2,000, each the real command in a child process whose resident memory is
sampled twice a second; a flat profile (end close to start) means nothing accumulates per image.

Prints one JSON row per run: images, wall seconds, RSS once started (median over 20-30% of
the run, past the imports and the first batches), near the end (median over 85-95%, before
the report is written), the peak, and the growth between the two per 1,000 images; writes
the samples (``soak_rss.csv``), the rows (``soak_summary.json``) and a plot of RSS against
the share of the run (``soak_rss.png``) under ``--out``. The images are 64 px patches of the
bundled photos (real) and their nearest-neighbour 2x upsampled halves (fake); the detector is
the shipped general one unless ``--detector`` names another bundle.

    python benchmarks/bench_soak.py [--scan-images 20000] [--robustness-images 2000]
                                    [--detector BUNDLE] [--out benchmarks/soak]
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SAMPLE_SECONDS = 0.5


def write_images(folder: Path, n: int, seed: int = 0) -> Path:
    """``n`` PNGs of 64 px, half real patches in ``real/``, half upsampled fakes in ``fake/``."""
    from forensics.bundled import write_bundled_corpus
    from forensics.corpus import discover_corpus
    from crashsafe.images import load_image, save_png

    real = discover_corpus(write_bundled_corpus(folder / "source", size=64,
                                                count=max(2, n // 2), seed=seed))
    for k, item in enumerate(real.items[:n - n // 2]):
        image = load_image(item.path)
        save_png(image, folder / "data" / "real" / f"{k:06d}.png")
        half = image[::2, ::2]
        save_png(np.ascontiguousarray(half.repeat(2, axis=0).repeat(2, axis=1)),
                 folder / "data" / "fake" / f"{k:06d}.png")
    return folder / "data"


def rss_mb(pid: int) -> float | None:
    """The process's resident memory now, in MB (None once it has gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            return next(int(l.split()[1]) for l in status if l.startswith("VmRSS:")) / 1024
    except (OSError, StopIteration):
        return None


def soak(name: str, command: list[str], images: int) -> tuple[dict, list[tuple[float, float]]]:
    """Run ``command``, sampling its RSS; its summary row and the (seconds, MB) samples."""
    samples = []
    start = time.monotonic()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
    while child.poll() is None:
        rss = rss_mb(child.pid)
        if rss is not None:
            samples.append((time.monotonic() - start, rss))
        time.sleep(SAMPLE_SECONDS)  # sampling a running child, not waiting on a result
    wall = time.monotonic() - start
    if child.returncode:
        raise RuntimeError(f"{name} failed ({child.returncode}): {child.stderr.read()[-2000:]}")
    times = np.array([t for t, _ in samples])
    values = np.array([v for _, v in samples])
    # Past the start (imports, the detector, the first batches: the first fifth of these runs)
    # and before the end (robustness writes its report and plots there).
    early = values[(times >= 0.2 * wall) & (times <= 0.3 * wall)]
    late = values[(times >= 0.85 * wall) & (times <= 0.95 * wall)]
    begin, end = float(np.median(early)), float(np.median(late))
    row = {"run": name, "images": images, "seconds": round(wall, 1),
           "rss_start_mb": round(begin), "rss_end_mb": round(end),
           "rss_peak_mb": round(float(values.max())),
           "growth_mb_per_1000_images": round((end - begin) / images * 1000, 2)}
    return row, samples


def plot(runs: dict[str, list[tuple[float, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, samples in runs.items():
        wall = samples[-1][0] or 1.0
        ax.plot([100 * t / wall for t, _ in samples], [v for _, v in samples], label=name)
    ax.set(xlabel="share of the run (%)", ylabel="resident memory (MB)",
           title="Soak: memory over long runs")
    ax.set_ylim(bottom=0)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scan-images", type=int, default=20_000)
    ap.add_argument("--robustness-images", type=int, default=2_000)
    ap.add_argument("--grid", default="small", help="robustness grid (default small)")
    ap.add_argument("--detector", help="bundle folder (default: the shipped general detector)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/soak"))
    args = ap.parse_args()
    from forensics.detectors.general import general_detector_path

    forensics = [sys.executable, "-m", "forensics.cli"]
    detector = args.detector or str(general_detector_path())
    args.out.mkdir(parents=True, exist_ok=True)
    rows, runs = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        scan_data = write_images(Path(tmp) / "scan", args.scan_images)
        robust_data = write_images(Path(tmp) / "robust", args.robustness_images, seed=1)
        commands = {
            "scan": ([*forensics, "scan", str(scan_data), "--detector", detector, "-q",
                      "--out", str(Path(tmp) / "scan.csv")], args.scan_images),
            "robustness": ([*forensics, "robustness", "--corpus", str(robust_data),
                            "--detector", detector, "--grid", args.grid, "-q",
                            "--out", str(Path(tmp) / "robustness")], args.robustness_images),
        }
        for name, (command, images) in commands.items():
            row, runs[name] = soak(name, command, images)
            rows.append(row)
            print(json.dumps(row), flush=True)
    with open(args.out / "soak_rss.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["run", "seconds", "rss_mb"])
        for name, samples in runs.items():
            writer.writerows((name, round(t, 2), round(v, 1)) for t, v in samples)
    (args.out / "soak_summary.json").write_text(json.dumps(rows, indent=2) + "\n")
    plot(runs, args.out / "soak_rss.png")
    print(f"wrote soak_rss.csv, soak_rss.png and soak_summary.json under {args.out}")


if __name__ == "__main__":
    main()
