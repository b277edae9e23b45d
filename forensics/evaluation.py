"""The evaluation protocol: metrics per generator and their mean, leave-one-generator-out, and a
cross-generator matrix.

Per-generator figures pair a generator's fakes with the real images of the same set when the
corpus records one (CNNDetection layout: each set has its own reals, drawn from the generator's
training distribution; CNNDetection issue #14), and with all real images otherwise. Every
figure uses the threshold the detector chose on validation data; a threshold tuned on the test
labels appears only as ``oracle_accuracy``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from crashsafe.images import DEFAULT_LIMITS, ImageLimits
from forensics.corpus import FAKE, REAL, Corpus, CorpusItem
from forensics.detectors.base import Detector
from forensics.metrics import binary_metrics, bootstrap_intervals, format_table
from forensics.ranks import Ranks
from forensics.scoring import score_files
from forensics.training import decode_items, fit_detector

__all__ = ["TABLE_COLUMNS", "MEAN_KEYS", "PROTOCOL_COLUMNS", "resolve_split", "Scored", "mean_row",
           "group_metrics", "summarise", "score_corpora", "evaluate_corpora", "evaluation_rows",
           "evaluation_table", "ProtocolData", "leave_one_out", "cross_generator_matrix",
           "leave_one_out_table", "matrix_table"]

TABLE_COLUMNS = ["generator", "n_real", "n_fake", "ap", "ap_95ci", "roc_auc", "eer",
                 "tpr_at_fpr_5pct", "accuracy", "real_accuracy", "fake_accuracy", "ece"]
MEAN_KEYS = ["ap", "roc_auc", "eer", "tpr_at_fpr_1pct", "tpr_at_fpr_5pct", "accuracy",
             "real_accuracy", "fake_accuracy", "balanced_accuracy", "oracle_accuracy", "ece"]
# Images per predict_proba call when the protocols score decoded test images.
_BATCH = 256
PROTOCOL_COLUMNS = ["n_real", "n_fake", "ap", "roc_auc", "eer", "accuracy", "real_accuracy",
                    "fake_accuracy"]


def resolve_split(detector: Detector, corpora: Sequence[Corpus], split: str) -> str:
    """``auto`` means ``test`` if the detector was trained on any of these corpora, else ``all``."""
    if split != "auto":
        return split
    trained_on = {str(Path(c).resolve()) for c in detector.training_info_.get("corpora", [])}
    return "test" if any(str(c.root.resolve()) in trained_on for c in corpora) else "all"


def _set_of(item: CorpusItem) -> str | None:
    return item.meta.get("set")


@dataclass
class Scored:
    """Corpus items with their P(fake) scores (files that failed are not here)."""

    items: list[CorpusItem]
    scores: np.ndarray

    @property
    def labels(self) -> np.ndarray:
        return np.array([it.label for it in self.items], dtype=np.int64)

    @property
    def generators(self) -> list[str]:
        return sorted({it.generator for it in self.items if it.label == FAKE})

    def generator_mask(self, generator: str) -> np.ndarray:
        """The generator's fakes plus its own set's reals (all reals when there are no sets)."""
        sets = {_set_of(it) for it in self.items
                if it.label == FAKE and it.generator == generator} - {None}
        reals = np.array([it.label == REAL for it in self.items])
        own = reals & np.array([_set_of(it) in sets for it in self.items])
        fakes = np.array([it.label == FAKE and it.generator == generator for it in self.items])
        return fakes | (own if own.any() else reals)


def mean_row(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> dict[str, float | None]:
    """The mean of each key over the rows that have a value for it (None where none has)."""
    values = {key: [r[key] for r in rows if r.get(key) is not None] for key in keys}
    return {key: float(np.mean(v)) if v else None for key, v in values.items()}


def group_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float,
                  bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """``binary_metrics`` plus, when ``bootstrap`` > 0, 95% intervals under ``ci``."""
    metrics = binary_metrics(labels, scores, threshold)
    if bootstrap > 0:
        metrics["ci"] = bootstrap_intervals(labels, scores, threshold, n_resamples=bootstrap,
                                            seed=seed)
    return metrics


def summarise(scored: Scored, threshold: float, *, bootstrap: int = 1000,
              seed: int = 0) -> dict[str, Any]:
    """Metrics per generator (with its own reals), their mean over generators, and all pooled."""
    labels = scored.labels
    per_generator = []
    for gen in scored.generators:
        mask = scored.generator_mask(gen)
        per_generator.append({"generator": gen, **group_metrics(
            labels[mask], scored.scores[mask], threshold, bootstrap, seed)})
    mean = {"generator": "mean", **mean_row(per_generator, MEAN_KEYS)}
    overall = {"generator": "all",
               **group_metrics(labels, scored.scores, threshold, bootstrap, seed)}
    return {"per_generator": per_generator, "mean": mean, "overall": overall}


def score_corpora(detector: Detector, corpora: Sequence[Corpus], split: str, *,
                  batch_size: int = 64, workers: int = 2, progress: bool = True,
                  limits: ImageLimits = DEFAULT_LIMITS,
                  ranks: Ranks | None = None) -> tuple[Scored, list[dict[str, str]]]:
    """Score every image of ``split`` once: (the scored items, the files that failed, e.g.
    those over ``limits``); ``ranks`` shares the scoring among torchrun processes."""
    items = [it for c in corpora for it in c.select(split=split)]
    if not items:
        roots = ", ".join(str(c.root) for c in corpora)
        raise ValueError(f"no images in split {split!r} of {roots}; choose another --split "
                         "(all: every image)")
    rows = score_files([it.path for it in items], detector, batch_size=batch_size,
                       workers=workers, limits=limits, progress=progress, desc="evaluating",
                       ranks=ranks)
    good = [(it, r.p_fake) for it, r in zip(items, rows) if r.p_fake is not None]
    errors = [{"path": str(r.path), "error": r.error} for r in rows if r.p_fake is None]
    return Scored([it for it, _ in good], np.array([s for _, s in good])), errors


def evaluate_corpora(detector: Detector, corpora: Sequence[Corpus], *, split: str = "auto",
                     batch_size: int = 64, workers: int = 2, progress: bool = True,
                     bootstrap: int = 1000, seed: int = 0,
                     plots: str | os.PathLike | None = None,
                     limits: ImageLimits = DEFAULT_LIMITS,
                     ranks: Ranks | None = None) -> dict[str, Any]:
    """Score every image of the chosen split once, then compute metrics per generator and overall.

    ``bootstrap`` resamples (seeded by ``seed``; 0 turns them off) give 95% intervals of AP,
    ROC-AUC and accuracy. With ``plots`` a folder receives ROC and precision-recall curves per
    generator and a reliability diagram. Files that fail to decode (or are over ``limits``) are
    listed under ``errors`` and left out of the metrics; the limits are recorded under
    ``image_limits``. ``ranks``: see ``score_files`` (every rank gets the result).
    """
    split = resolve_split(detector, corpora, split)
    scored, errors = score_corpora(detector, corpora, split, batch_size=batch_size,
                                   workers=workers, progress=progress, limits=limits,
                                   ranks=ranks)
    result = {
        "detector": {"kind": detector.kind, "threshold": detector.threshold_},
        "corpora": [str(c.root) for c in corpora],
        "split": split,
        "image_limits": {"max_pixels": limits.max_pixels, "max_bytes": limits.max_bytes},
        "n_images": len(scored.items) + len(errors),
        "n_scored": len(scored.items),
        **summarise(scored, detector.threshold_, bootstrap=bootstrap, seed=seed),
        "errors": errors,
    }
    if plots is not None:
        result["plots"] = _write_plots(scored, Path(plots))
    return result


def _write_plots(scored: Scored, folder: Path) -> list[str]:
    from forensics.plots import plot_reliability, plot_roc_pr

    curves = {gen: (scored.labels[m], scored.scores[m])
              for gen in scored.generators for m in [scored.generator_mask(gen)]}
    written = [plot_roc_pr(curves, folder / "roc_pr.png"),
               plot_reliability(scored.labels, scored.scores, folder / "reliability.png")]
    return [str(p) for p in written]


def _with_ci_text(row: dict[str, Any]) -> dict[str, Any]:
    ci = (row.get("ci") or {}).get("ap")
    return {**row, "ap_95ci": f"{ci[0]:.3f}-{ci[1]:.3f}" if ci else None}


def evaluation_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The table's rows (TABLE_COLUMNS, None where a row has no value): one per generator, then
    the mean over generators and all pooled; what the CLI prints and the app shows."""
    rows = result["per_generator"] + [result["mean"], result["overall"]]
    return [{column: _with_ci_text(row).get(column) for column in TABLE_COLUMNS} for row in rows]


def evaluation_table(result: dict[str, Any]) -> str:
    """The printed table: one line per generator, then the mean over generators and all pooled."""
    return format_table(evaluation_rows(result), TABLE_COLUMNS)


# ----------------------------------------------------------------------------- protocols


class ProtocolData:
    """Every train, val and test image of some corpora, decoded once for repeated training."""

    def __init__(self, corpora: Sequence[Corpus], *, workers: int = 2, progress: bool = True,
                 limits: ImageLimits = DEFAULT_LIMITS):
        items = [it for c in corpora for it in c.select(split="all")]
        self.roots = [str(c.root) for c in corpora]
        self.items, self.images, _ = decode_items(
            items, desc="protocol images", workers=workers, progress=progress, limits=limits)
        self.generators = sorted({it.generator for it in self.items if it.label == FAKE})

    def select(self, split: str, keep: Callable[[CorpusItem], bool]
               ) -> tuple[list[np.ndarray], np.ndarray]:
        """(images, labels) of the items in ``split`` that ``keep`` accepts."""
        chosen = [i for i, it in enumerate(self.items) if it.split == split and keep(it)]
        return ([self.images[i] for i in chosen],
                np.array([self.items[i].label for i in chosen], dtype=np.int64))

    def test_scores(self, detector: Detector, generators: Sequence[str] | None = None) -> Scored:
        """The detector's scores on the test split: every real, and the fakes of ``generators``
        (all generators by default)."""
        index = [i for i, it in enumerate(self.items) if it.split == "test" and (
            it.label == REAL or generators is None or it.generator in generators)]
        images = [self.images[i] for i in index]
        scores = [detector.predict_proba(images[start:start + _BATCH])
                  for start in range(0, len(images), _BATCH)]
        return Scored([self.items[i] for i in index], np.concatenate(scores or [np.empty(0)]))

    def own_sets(self, generator: str) -> set[str]:
        """The sets (CNNDetection folders) holding this generator's fakes; empty without sets."""
        return {_set_of(it) for it in self.items
                if it.generator == generator and _set_of(it) is not None}


def _test_row(scored: Scored, generator: str, threshold: float) -> dict[str, Any]:
    mask = scored.generator_mask(generator)
    return binary_metrics(scored.labels[mask], scored.scores[mask], threshold)


def leave_one_out(kind: str, params: dict[str, Any], data: ProtocolData) -> dict[str, Any]:
    """For each generator g: train a fresh detector on all other generators and the reals that
    are not g's own (train split; val calibrates), then test on g's test fakes with their reals.

    Needs at least two generators. Returns ``per_generator`` (one row per held-out generator)
    and their ``mean``.
    """
    if len(data.generators) < 2:
        raise ValueError(f"leave-one-out needs at least two generators, found "
                         f"{data.generators} in {', '.join(data.roots)}; pass corpora with the "
                         "fakes of two or more generators")
    rows = []
    for gen in data.generators:
        own = data.own_sets(gen)

        def keep(it: CorpusItem, gen: str = gen, own: set[str] = own) -> bool:
            return it.generator != gen and not (it.label == REAL and _set_of(it) in own)

        detector = fit_detector(kind, params, data.select("train", keep), data.select("val", keep))
        rows.append({"held_out": gen,
                     "train_generators": [g for g in data.generators if g != gen],
                     **_test_row(data.test_scores(detector, [gen]), gen, detector.threshold_)})
    return {"per_generator": rows, "mean": {"held_out": "mean", **mean_row(rows, MEAN_KEYS)}}


def cross_generator_matrix(kind: str, params: dict[str, Any], data: ProtocolData
                           ) -> dict[str, Any]:
    """Train a fresh detector on each generator (its fakes and reals), test it on every one.

    Returns ``generators`` and, for each metric in PROTOCOL_COLUMNS, a matrix whose row i is
    the detector trained on generator i and column j its test on generator j.
    """
    if not data.generators:
        raise ValueError(f"the cross-generator matrix needs fake images and "
                         f"{', '.join(data.roots)} hold none; pass corpora with fake images "
                         "(fake/<generator>/ or manifest rows labelled fake)")
    cells: list[list[dict[str, Any]]] = []
    for gen in data.generators:
        own = data.own_sets(gen)

        def keep(it: CorpusItem, gen: str = gen, own: set[str] = own) -> bool:
            if it.label == FAKE:
                return it.generator == gen
            return not own or _set_of(it) in own

        detector = fit_detector(kind, params, data.select("train", keep), data.select("val", keep))
        scored = data.test_scores(detector)
        cells.append([_test_row(scored, test, detector.threshold_) for test in data.generators])
    return {"generators": data.generators,
            **{key: [[cell[key] for cell in row] for row in cells] for key in PROTOCOL_COLUMNS}}


def leave_one_out_table(result: dict[str, Any]) -> str:
    """The leave-one-out table: one line per held-out generator, then their mean."""
    return format_table(result["per_generator"] + [result["mean"]],
                        ["held_out", *PROTOCOL_COLUMNS])


def matrix_table(matrix: dict[str, Any], metric: str = "ap") -> str:
    """One line per training generator, one column per test generator."""
    gens = matrix["generators"]
    rows = [{"train \\ test": g, **dict(zip(gens, values))}
            for g, values in zip(gens, matrix[metric])]
    return format_table(rows, ["train \\ test", *gens])
