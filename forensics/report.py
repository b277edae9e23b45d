"""Robustness reports: metrics per (detector, generator, perturbation), curves and an HTML page.

Reads the rows of a run (see :mod:`forensics.robustness`) and writes into the run folder, each
file atomically:

* ``metrics.csv`` and ``metrics.json``: one row per (detector, generator, perturbation) with the
  family and level, the counts, AP, ROC-AUC, EER, accuracy at the detector's saved threshold,
  real and fake accuracy, balanced accuracy and ECE. Generator "all" pools every image; a named
  generator pairs its fakes with all real images of the run.
* ``plots/<family>.png``: the metric vs level, one panel per detector, one line per generator.
* ``report.html``: self-contained (plots embedded as base64), with a few generated lines saying
  where each detector breaks, e.g. "AP falls below 0.8 at JPEG quality 70 (0.74)".
"""

from __future__ import annotations

import base64
import csv
import datetime
import html
import io
import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
import numpy as np  # noqa: E402

from crashsafe import atomic_write_bytes, atomic_write_text  # noqa: E402
from forensics.metrics import binary_metrics  # noqa: E402
from forensics.robustness import RUN_FILE, read_results  # noqa: E402

__all__ = ["METRIC_KEYS", "Report", "breaking_points", "describe_level", "robustness_metrics",
           "write_report"]

ALL = "all"  # the generator name of rows that pool every image
METRIC_KEYS = ["n", "n_real", "n_fake", "ap", "roc_auc", "eer", "accuracy", "real_accuracy",
               "fake_accuracy", "balanced_accuracy", "ece", "threshold"]
COLUMNS = ["detector", "generator", "family", "perturbation", "level", "n_errors", *METRIC_KEYS]
METRIC_LABELS = {"ap": "AP", "roc_auc": "ROC-AUC", "accuracy": "accuracy",
                 "balanced_accuracy": "balanced accuracy", "real_accuracy": "real accuracy",
                 "fake_accuracy": "fake accuracy"}
_LEVEL_NAMES = {"jpeg_pil": "JPEG quality", "jpeg_cv2": "OpenCV JPEG quality",
                "blur": "blur sigma", "resize": "downscale factor", "noise": "noise sigma",
                "crop": "crop fraction", "gamma": "gamma", "contrast": "contrast factor",
                "longest_side": "longest side"}
PLOTTED = ("ap", "accuracy")  # the rows of panels in each figure


# --- metrics --------------------------------------------------------------------------------

def _subset_metrics(rows: Sequence[dict[str, Any]], threshold: float) -> dict[str, Any]:
    """METRIC_KEYS of the scored rows (all None but the counts when none were scored)."""
    scored = [r for r in rows if r["score"] is not None]
    if not scored:
        return {**dict.fromkeys(METRIC_KEYS), "n": 0, "n_real": 0, "n_fake": 0,
                "threshold": threshold}
    labels = np.array([r["label"] == "fake" for r in scored], dtype=np.int64)
    metrics = binary_metrics(labels, np.array([r["score"] for r in scored]), threshold)
    return {key: metrics[key] for key in METRIC_KEYS}


def robustness_metrics(rows: Sequence[dict[str, Any]], thresholds: Mapping[str, float],
                       grid: Sequence[str]) -> list[dict[str, Any]]:
    """Metrics per (detector, generator, perturbation), ordered by detector, grid and generator.

    ``thresholds`` maps each detector to its saved threshold, in report order; ``grid`` lists
    the perturbation ids in grid order. Rows with an error are counted in ``n_errors`` and left
    out of the metrics.
    """
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["detector"], row["perturbation"]), []).append(row)
    out = []
    for detector, threshold in thresholds.items():
        for perturbation in grid:
            group = groups.get((detector, perturbation), [])
            if not group:
                continue
            reals = [r for r in group if r["label"] == "real"]
            subsets = {ALL: group}
            for generator in sorted({r["generator"] for r in group if r["label"] == "fake"}):
                subsets[generator] = reals + [r for r in group if r["generator"] == generator]
            for generator, subset in subsets.items():
                out.append({"detector": detector, "generator": generator,
                            "family": group[0]["family"], "perturbation": perturbation,
                            "level": group[0]["level"],
                            "n_errors": sum(bool(r["error"]) for r in subset),
                            **_subset_metrics(subset, threshold)})
    return out


# --- where detectors break ------------------------------------------------------------------

def _level_name(family: str) -> str:
    """What a family's level is: "JPEG quality", "downscale factor [interpolation=area]"."""
    name, _, options = family.partition("/")
    words = _LEVEL_NAMES.get(name, name)
    return f"{words} [{options.replace(',', ', ')}]" if options else words


def describe_level(family: str, level: float | None) -> str:
    """Words for a setting: ("jpeg_pil", 70) -> "JPEG quality 70";
    ("resize/interpolation=area", 0.5) -> "downscale factor 0.5 [interpolation=area]"."""
    if level is None:
        return f"the {family} chain"
    words, _, options = _level_name(family).partition(" [")
    return f"{words} {level:g}" + (f" [{options}" if options else "")


def breaking_points(metrics: Sequence[dict[str, Any]], metric: str = "ap", below: float = 0.8,
                    generator: str = ALL) -> list[dict[str, Any]]:
    """For each (detector, family), the first level, in grid order, where ``metric`` < ``below``.

    Grids list levels from mild to strong, so that is where the detector breaks. Each entry has
    detector, family, level (None if it never breaks), value (the metric there, or the lowest
    one) and text, a sentence such as "AP falls below 0.8 at JPEG quality 70 (0.74)".
    """
    label = METRIC_LABELS.get(metric, metric)
    curves: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in metrics:
        if row["generator"] == generator:
            curves.setdefault((row["detector"], row["family"]), []).append(row)
    out = []
    for (detector, family), curve in curves.items():
        points = [(r["level"], r[metric]) for r in curve if r[metric] is not None]
        broken = next(((lv, v) for lv, v in points if v < below), None)
        entry = {"detector": detector, "family": family, "level": None, "value": None}
        if not points:
            text = f"{label} is undefined for {family} (it needs scored real and fake images)"
        elif curve[0]["level"] is None:  # a chain: one setting, no curve
            entry["value"] = points[0][1]
            verdict = f"below {below:g}" if points[0][1] < below else f"at or above {below:g}"
            text = f"{label} is {points[0][1]:.2f} after {describe_level(family, None)} ({verdict})"
        elif broken is None:
            entry["value"] = min(v for _, v in points)
            text = (f"{label} stays at or above {below:g} up to "
                    f"{describe_level(family, points[-1][0])} (lowest {entry['value']:.2f})")
        else:
            entry["level"], entry["value"] = broken
            opening = "is already below" if broken == points[0] else "falls below"
            text = (f"{label} {opening} {below:g} at {describe_level(family, broken[0])} "
                    f"({broken[1]:.2f})")
        out.append({**entry, "text": text})
    return out


# --- plots ----------------------------------------------------------------------------------

def _file_name(family: str) -> str:
    return family.replace("/", "_").replace("=", "-").replace(",", "_") + ".png"


def _plot_family(family: str, rows: Sequence[dict[str, Any]], detectors: Sequence[str],
                 below: float, metric: str) -> bytes:
    """PNG bytes: PLOTTED metrics (rows of panels) vs level, one column per detector."""
    fig, axes = plt.subplots(len(PLOTTED), len(detectors), squeeze=False, sharex=True,
                             sharey="row", figsize=(1 + 4 * len(detectors), 5.5), dpi=100)
    levels = [r["level"] for r in rows if r["detector"] == detectors[0] and r["generator"] == ALL]
    for column, detector in enumerate(detectors):
        mine = [r for r in rows if r["detector"] == detector]
        generators = [ALL] + sorted({r["generator"] for r in mine} - {ALL})
        for row_index, key in enumerate(PLOTTED):
            ax = axes[row_index][column]
            for generator in generators:
                line = [(r["level"], r[key]) for r in mine if r["generator"] == generator]
                x = [lv for lv, v in line]
                y = [np.nan if v is None else v for lv, v in line]
                style = {"color": "black", "ls": "--", "lw": 2} if generator == ALL else {}
                ax.plot(x, y, marker="o", ms=3, label=generator, **style)
            if key == metric:
                ax.axhline(below, color="red", lw=0.8, ls=":")
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
            ax.set_ylabel(METRIC_LABELS.get(key, key) if column == 0 else "")
            if row_index == 0:
                ax.set_title(detector)
            if row_index == len(PLOTTED) - 1:
                ax.set_xlabel(_level_name(family))
    if len(levels) > 1 and levels[0] > levels[-1]:
        axes[0][0].invert_xaxis()  # shared x: strongest perturbation on the right everywhere
    axes[0][-1].legend(fontsize="small", title="generator")
    fig.suptitle(family)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


# --- writing --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Report:
    """What :func:`write_report` found, and the files it wrote (``plots``: family -> PNG)."""

    metrics: list[dict[str, Any]]
    breaking_points: list[dict[str, Any]]
    csv: Path
    json: Path
    html: Path
    plots: dict[str, Path]


def _csv_text(rows: Sequence[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if row[k] is None else row[k] for k in COLUMNS} for row in rows)
    return buffer.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else html.escape(str(value))


def _html(manifest: dict[str, Any], metrics: Sequence[dict[str, Any]],
          points: Sequence[dict[str, Any]], plots: Mapping[str, bytes],
          rows: Sequence[dict[str, Any]], metric: str, below: float) -> str:
    """The report page; plots embedded, tables of the pooled metrics and of the errors."""
    e = html.escape
    detectors = "".join(
        f"<li><b>{e(d['name'])}</b>: threshold {manifest['thresholds'][d['name']]:.3f}, "
        f"sha256 <code>{d['sha256'][:16]}</code></li>" for d in manifest["detectors"])
    breaks = "".join(
        f"<li><b>{e(name)}</b><ul>"
        + "".join(f"<li>{e(p['text'])}</li>" for p in points if p["detector"] == name)
        + "</ul></li>" for name in manifest["thresholds"])
    figures = "".join(
        f'<figure><img alt="{e(family)}" src="data:image/png;base64,'
        f'{base64.b64encode(data).decode()}"><figcaption>{e(family)}</figcaption></figure>'
        for family, data in plots.items())
    shown = ["detector", "perturbation", "n", "n_errors", "ap", "roc_auc", "accuracy",
             "real_accuracy", "fake_accuracy", "ece"]
    table = "".join("<tr>" + "".join(f"<td>{_cell(r[k])}</td>" for k in shown) + "</tr>"
                    for r in metrics if r["generator"] == ALL)
    errors = Counter((r["path"], r["error"]) for r in rows if r["error"])
    error_items = "".join(f"<li><code>{e(path)}</code>: {e(error)} ({n} results)</li>"
                          for (path, error), n in sorted(errors.items())[:50])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Robustness report</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 80em; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
td, th {{ border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: right; }}
td:nth-child(-n+2), th:nth-child(-n+2) {{ text-align: left; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>Robustness report</h1>
<p>{manifest['images']} images (split {e(manifest['split'])}) from
{e(', '.join(manifest['corpora']))}; {len(manifest['grid'])} perturbations; {len(rows)} results,
{sum(bool(r['error']) for r in rows)} with errors. Written
{datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')} by gan-forensics
{e(manifest['library_version'])}.</p>
<ul>{detectors}</ul>
<h2>Where each detector breaks</h2>
<p>{e(METRIC_LABELS.get(metric, metric))} below {below:g} on all images pooled, levels read from
mild to strong in grid order.</p>
<ul>{breaks}</ul>
<h2>Curves</h2>
<p>Dashed black: all images; coloured: each generator's fakes against all real images.
Accuracy is at each detector's saved threshold.</p>
{figures}
<h2>Metrics, all images pooled</h2>
<p>Per generator: <a href="metrics.csv">metrics.csv</a>,
<a href="metrics.json">metrics.json</a>.</p>
<table><tr>{''.join(f'<th>{k}</th>' for k in shown)}</tr>{table}</table>
<h2>Errors</h2>
{f'<ul>{error_items}</ul>' if errors else '<p>None.</p>'}
</body></html>
"""


def write_report(out: str | os.PathLike, *, metric: str = "ap", below: float = 0.8,
                 rows: Sequence[dict[str, Any]] | None = None) -> Report:
    """Write metrics.csv, metrics.json, plots/*.png and report.html into run folder ``out``.

    ``rows`` default to the folder's merged results; ``metric`` < ``below`` is where a
    detector "breaks" (``metric`` is one of METRIC_KEYS, e.g. "ap" or "accuracy").
    """
    if metric not in METRIC_KEYS:
        raise ValueError(f"metric must be one of {', '.join(METRIC_KEYS)}, got {metric!r}")
    out = Path(out)
    manifest = json.loads((out / RUN_FILE).read_text(encoding="utf-8"))
    rows = read_results(out) if rows is None else rows
    metrics = robustness_metrics(rows, manifest["thresholds"], manifest["grid"])
    points = breaking_points(metrics, metric, below)
    by_family: dict[str, list[dict[str, Any]]] = {}
    for row in metrics:
        by_family.setdefault(row["family"], []).append(row)
    detectors = list(manifest["thresholds"])
    plots = {family: _plot_family(family, fam_rows, detectors, below, metric)
             for family, fam_rows in by_family.items()
             if len({r["level"] for r in fam_rows}) > 1}
    report = Report(metrics, points, out / "metrics.csv", out / "metrics.json",
                    out / "report.html", {f: out / "plots" / _file_name(f) for f in plots})
    for family, data in plots.items():
        atomic_write_bytes(report.plots[family], data)
    atomic_write_text(report.csv, _csv_text(metrics))
    document = {"run": manifest, "break_metric": metric, "break_below": below,
                "breaking_points": points, "metrics": metrics}
    atomic_write_text(report.json, json.dumps(document, indent=2, allow_nan=False) + "\n")
    atomic_write_text(report.html, _html(manifest, metrics, points, plots, rows, metric, below))
    return report
