"""What each part of the general recipe adds, measured on wild-dev.

Usage: python benchmarks/bench_wild_ablation.py --work DIR [--variants NAME ...] [--wild DIR]
       [--out FILE.json]

Each variant takes one part of the recipe (``forensics.general_recipe``) away, or adds one,
trains its detector from the package's own data only (the bundled photos) and is scored on
``../shared/wild-dev`` by ``bench_wild.measure`` (measured only: nothing is fitted, calibrated or
thresholded on it). The recipe's simulators are trained once in ``DIR/simulators`` and shared;
every variant's pairs and bundle stay in ``DIR`` and a variant whose bundle exists is only
scored again, so an interrupted run continues where it stopped.

- ``recipe``: the general recipe as it ships (upsampler simulators, aligned pairs, residual CNN);
- ``fixed-upsampling`` (item 1 taken away): the fakes are the real crop downscaled and
  re-upsampled 2x by nearest or bilinear interpolation instead of simulator reconstructions;
- ``unaligned`` (item 2): each fake is made from another crop and stays as the simulator wrote
  it, while its real gets the drawn JPEG/blur history (the usual unaligned data);
- ``rgb-input`` (item 3): the same CNN on the RGB image instead of the NPR residual;
- ``oneclass`` (item 4, alone): the real-only model fitted on the recipe's real crops;
- ``recipe+oneclass`` (item 4 added): an ensemble of the recipe's CNN and the real-only model,
  stacked on the val pairs.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bench_wild import DEFAULT_WILD, measure
from forensics.aligned import write_aligned_pairs
from forensics.general_recipe import (GeneralRecipe, recipe_sources, simulator_maker,
                                      train_simulators)
from forensics.metrics import format_table
from forensics.perturb import resize
from forensics.training import train_detector

RECIPE = GeneralRecipe()
VARIANTS = ("recipe", "fixed-upsampling", "unaligned", "rgb-input", "oneclass",
            "recipe+oneclass")


def _fixed_upsampler(interpolation: str) -> Callable[[np.ndarray], np.ndarray]:
    def remake(image: np.ndarray) -> np.ndarray:
        small = resize(image, 0.5, interpolation, check=False)
        return np.ascontiguousarray(resize(small, 2.0, interpolation, check=False)[
            :image.shape[0], :image.shape[1]])
    return remake


class Ablation:
    """The shared simulators and pairs of every variant, made on first use in ``work``."""

    def __init__(self, work: Path, seed: int = 0):
        self.work, self.seed = work, seed
        self.sources = [source for source, _ in recipe_sources()]
        self._makers: dict[str, Callable] | None = None

    def makers(self) -> dict[str, Callable]:
        if self._makers is None:
            photos = [path for source, path in recipe_sources() if source.split == "train"]
            runs = train_simulators(self.work / "simulators", photos, RECIPE, seed=self.seed,
                                    progress=True)
            self._makers = dict(simulator_maker(run) for run in runs)
        return self._makers

    def pairs(self, name: str) -> Path:
        out = self.work / f"pairs-{name}"
        if not (out / "manifest.jsonl").is_file():
            makers = ({f"{m}-x2": _fixed_upsampler(m) for m in ("nearest", "bilinear")}
                      if name == "fixed" else self.makers())
            write_aligned_pairs(out, self.sources, makers,
                                crops_per_source=RECIPE.crops_per_photo, sizes=RECIPE.crop_sizes,
                                odds=RECIPE.odds, seed=self.seed, aligned=name != "unaligned")
        return out

    def train(self, variant: str) -> Path:
        """The variant's bundle (trained unless it is already there)."""
        if variant == "recipe":
            from forensics.detectors.general import general_detector_path
            return general_detector_path()
        bundle = self.work / variant / "bundle"
        if (bundle / "detector.json").is_file():
            return bundle
        cnn = {**RECIPE.detector, "progress": True}
        kind, pairs, params = {
            "fixed-upsampling": ("cnn", "fixed", cnn),
            "unaligned": ("cnn", "unaligned", cnn),
            "rgb-input": ("cnn", "aligned", {**cnn, "input": "rgb"}),
            "oneclass": ("oneclass", "aligned", {}),
            "recipe+oneclass": ("ensemble", "aligned", {"members": [
                {"name": "cnn", "kind": "cnn", "params": cnn},
                {"name": "oneclass", "kind": "oneclass", "params": {}}]}),
        }[variant]
        train_detector(kind, [self.pairs(pairs)], bundle, params=params)
        return bundle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True,
                        help="simulators, pairs and bundles of the variants (kept for reruns)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--wild", type=Path, default=DEFAULT_WILD)
    parser.add_argument("--jpeg", type=int, default=85)
    parser.add_argument("--out", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()
    ablation = Ablation(args.work)
    rows: list[dict[str, Any]] = []
    for variant in args.variants:
        start = time.perf_counter()
        bundle = ablation.train(variant)
        result = measure(str(bundle), args.wild, args.jpeg)
        rows.append({"variant": variant,
                     "mean_ap": result["mean_ap_groups_with_both_classes"],
                     "pooled_auc": result["pooled"]["roc_auc"],
                     f"pooled_ap_jpeg{args.jpeg}": result[f"pooled_jpeg{args.jpeg}"]["ap"],
                     "camera_false_alarms": result["camera_jpeg_false_alarm_rate"],
                     "fake_accuracy": result["pooled"]["fake_accuracy"],
                     "minutes": round((time.perf_counter() - start) / 60, 1)})
        print(format_table(rows[-1:], list(rows[-1])), flush=True)
    print("\n" + format_table(rows, list(rows[0])))
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
