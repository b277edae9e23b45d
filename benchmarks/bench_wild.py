"""Detection in the wild: a detector on ../shared/wild-dev, as published and re-encoded.

Usage: python benchmarks/bench_wild.py [--detector BUNDLE] [--wild DIR] [--jpeg 85]
       [--out FILE.json]

wild-dev holds GAN images other people published (ProGAN, StyleGAN 1/2-ADA/3, BigGAN, CycleGAN,
pix2pix, StarGAN, GauGAN, DCGAN), each group beside real photos of the same content, plus camera
JPEGs (its README). Without ``--detector`` the shipped general detector is measured.

Prints, in one run: per group AP, ROC-AUC and accuracy (fake and real) at the detector's own
threshold; the mean over groups holding both classes; the pooled figures; the false-alarm rate
on ``camera_jpeg``; and the pooled figures again after re-encoding every image of both classes
as JPEG ``--jpeg`` (the format-bias check: PNG fakes beside JPEG reals let a detector learn the
format). wild-dev is for measuring only: nothing here fits, calibrates or picks a threshold.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from crashsafe.images import load_image
from forensics.corpus import discover_corpus
from forensics.detectors import load_detector
from forensics.evaluation import Scored, score_corpora, summarise
from forensics.metrics import binary_metrics, format_table
from forensics.perturb import jpeg

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_WILD = ROOT.parent / "shared" / "wild-dev"
CAMERA_GROUP = "camera_jpeg"
COLUMNS = ["generator", "n_real", "n_fake", "ap", "roc_auc", "accuracy", "real_accuracy",
           "fake_accuracy"]


def _group(item) -> str:
    return item.meta.get("set") or item.generator


def _jpeg_scores(detector, scored: Scored, quality: int) -> np.ndarray:
    """P(fake) of every scored image after re-encoding it as JPEG ``quality``."""
    images = [jpeg(load_image(item.path), quality, check=False) for item in scored.items]
    return np.concatenate([detector.predict_proba(images[i:i + 32])
                           for i in range(0, len(images), 32)])


def measure(detector_path: str | None, wild: Path, quality: int) -> dict:
    """Every figure the module docstring lists, as one JSON-ready dict."""
    from forensics.detectors.general import general_detector_path

    bundle = Path(detector_path) if detector_path else general_detector_path()
    detector = load_detector(bundle)
    start = time.perf_counter()
    scored, errors = score_corpora(detector, [discover_corpus(wild)], "all", progress=False)
    seconds = time.perf_counter() - start
    threshold = detector.threshold_
    summary = summarise(scored, threshold, bootstrap=0)
    camera = np.array([_group(item) == CAMERA_GROUP for item in scored.items])
    false_alarms = float((scored.scores[camera] >= threshold).mean()) if camera.any() else None
    jpeg_scores = _jpeg_scores(detector, scored, quality)
    both = [r for r in summary["per_generator"] if r["n_real"] and r["n_fake"]]
    return {
        "detector": str(bundle), "kind": detector.kind, "threshold": threshold,
        "wild": str(wild), "n_scored": len(scored.items), "errors": errors,
        "seconds_scoring": round(seconds, 1), "machine": platform.machine(),
        "per_group": summary["per_generator"],
        "mean_ap_groups_with_both_classes": float(np.mean([r["ap"] for r in both])),
        "pooled": summary["overall"],
        "camera_jpeg_false_alarm_rate": false_alarms,
        f"pooled_jpeg{quality}": binary_metrics(scored.labels, jpeg_scores, threshold),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detector", help="bundle folder (default: the shipped general detector)")
    parser.add_argument("--wild", type=Path, default=DEFAULT_WILD)
    parser.add_argument("--jpeg", type=int, default=85, help="quality of the format-bias check")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()
    result = measure(args.detector, args.wild, args.jpeg)
    pooled_jpeg = result[f"pooled_jpeg{args.jpeg}"]
    print(format_table([*result["per_group"], {"generator": "all (pooled)", **result["pooled"]},
                        {"generator": f"all, JPEG {args.jpeg}", **pooled_jpeg}], COLUMNS))
    alarms = result["camera_jpeg_false_alarm_rate"]
    print(f"\n{result['detector']} ({result['kind']}, threshold {result['threshold']:.3f}) on "
          f"{result['n_scored']} images in {result['seconds_scoring']} s")
    print(f"mean AP over groups with both classes {result['mean_ap_groups_with_both_classes']:.3f}"
          f" (target 0.85); pooled ROC-AUC {result['pooled']['roc_auc']:.3f} (target 0.85); "
          f"pooled AP at JPEG {args.jpeg} {pooled_jpeg['ap']:.3f} (target 0.80); false alarms "
          f"on {CAMERA_GROUP} " + ("-" if alarms is None else f"{alarms:.1%}") + " (target 10%)")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
