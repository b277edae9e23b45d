"""Evaluate a detector on labelled corpora: metrics per generator, overall, and their mean.

Per-generator figures pair a generator's fakes with the real images of the same set when the
corpus records one (CNNDetection layout: each set has its own reals, drawn from the generator's
training distribution), and with all real images otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from forensics.corpus import FAKE, REAL, Corpus, CorpusItem
from forensics.detectors.base import Detector
from forensics.metrics import binary_metrics, format_table
from forensics.scoring import score_files

TABLE_COLUMNS = ["generator", "n_real", "n_fake", "ap", "roc_auc", "accuracy",
                 "real_accuracy", "fake_accuracy"]
MEAN_KEYS = ["ap", "roc_auc", "accuracy", "real_accuracy", "fake_accuracy", "balanced_accuracy"]


def resolve_split(detector: Detector, corpora: Sequence[Corpus], split: str) -> str:
    """``auto`` means ``test`` if the detector was trained on any of these corpora, else ``all``."""
    if split != "auto":
        return split
    trained_on = {str(Path(c).resolve()) for c in detector.training_info_.get("corpora", [])}
    return "test" if any(str(c.root.resolve()) in trained_on for c in corpora) else "all"


def _reals_for(generator: str, fakes: list[CorpusItem], reals: list[CorpusItem]) -> list[CorpusItem]:
    sets = {it.meta.get("set") for it in fakes} - {None}
    own = [it for it in reals if it.meta.get("set") in sets]
    return own or reals


def evaluate_corpora(detector: Detector, corpora: Sequence[Corpus], *, split: str = "auto",
                     batch_size: int = 64, workers: int = 2, progress: bool = True
                     ) -> dict[str, Any]:
    """Score every image of the chosen split once, then compute metrics per generator and overall.

    Files that fail to decode are listed under ``errors`` and left out of the metrics.
    """
    split = resolve_split(detector, corpora, split)
    items = [it for c in corpora for it in c.select(split=split)]
    if not items:
        raise ValueError(f"no images in split {split!r} of the given corpora")
    rows = score_files([it.path for it in items], detector, batch_size=batch_size,
                       workers=workers, progress=progress, desc="evaluating")
    scored = [(it, r.p_fake) for it, r in zip(items, rows) if r.p_fake is not None]
    errors = [{"path": str(r.path), "error": r.error} for r in rows if r.p_fake is None]
    threshold = detector.threshold_

    def metrics(subset: list[tuple[CorpusItem, float]]) -> dict[str, Any]:
        labels = np.array([it.label for it, _ in subset])
        scores = np.array([s for _, s in subset])
        return binary_metrics(labels, scores, threshold)

    reals = [(it, s) for it, s in scored if it.label == REAL]
    per_generator = []
    for gen in sorted({it.generator for it, _ in scored if it.label == FAKE}):
        fakes = [(it, s) for it, s in scored if it.label == FAKE and it.generator == gen]
        own_reals = _reals_for(gen, [it for it, _ in fakes], [it for it, _ in reals])
        own_set = {it.path for it in own_reals}
        subset = [(it, s) for it, s in reals if it.path in own_set] + fakes
        per_generator.append({"generator": gen, **metrics(subset)})
    overall = {"generator": "all", **metrics(scored)}
    mean = {"generator": "mean"}
    for key in MEAN_KEYS:
        vals = [g[key] for g in per_generator if g.get(key) is not None]
        mean[key] = float(np.mean(vals)) if vals else None
    return {
        "detector": {"kind": detector.kind, "threshold": threshold},
        "corpora": [str(c.root) for c in corpora],
        "split": split,
        "n_images": len(items),
        "n_scored": len(scored),
        "per_generator": per_generator,
        "mean": mean,
        "overall": overall,
        "errors": errors,
    }


def evaluation_table(result: dict[str, Any]) -> str:
    """The printed table: one line per generator, then the mean over generators and all pooled."""
    rows = result["per_generator"] + [result["mean"], result["overall"]]
    return format_table(rows, TABLE_COLUMNS)
