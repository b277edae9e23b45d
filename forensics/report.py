"""Robustness reports: metrics per (detector, generator, perturbation), curves and an HTML page.

Reads the rows of a run (see :mod:`forensics.robustness`) and writes into the run folder, each
file atomically:

* ``metrics.csv`` and ``metrics.json``: one row per (detector, generator, perturbation) with the
  family and level, the counts, AP, ROC-AUC, EER, accuracy at the detector's saved threshold,
  real and fake accuracy, balanced accuracy and ECE. Generator "all" pools every image; a named
  generator pairs its fakes with all real images of the run.
* ``plots/<family>.png``: AP, balanced accuracy and fake and real accuracy vs level, one column
  of panels per detector, one line per generator.
* ``report.html``: self-contained (plots embedded as base64), with a few generated lines saying
  where each detector breaks, and a table of every setting marking the figures below their bars.

A setting *breaks* a detector when its ranking figure (AP) falls below one bar or its balanced
accuracy at the saved threshold below another (:func:`break_bars`). Both are needed: JPEG can
leave the scores in the right order (AP 1.0) while moving every fake below the threshold
(balanced accuracy 0.5, every fake called real), and a report of AP alone hides that collapse.
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

from crashsafe.files import atomic_write_bytes, atomic_write_text  # noqa: E402
from forensics.metrics import binary_metrics, format_table  # noqa: E402
from forensics.robustness_results import (METRICS_CSV, METRICS_JSON, PLOTS_DIR,  # noqa: E402
                                          REPORT_FILE, read_results, read_run_manifest)

__all__ = ["BALANCED_BAR", "METRIC_KEYS", "RANKING_BAR", "RANKING_METRICS", "THRESHOLD_METRIC",
           "Report", "below_bars", "break_bars", "breaking_points", "describe_level",
           "robustness_metrics", "settings_table", "write_report"]

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
RANKING_METRICS = ("ap", "roc_auc")  # how well scores separate fakes, whatever the threshold
THRESHOLD_METRIC = "balanced_accuracy"  # how right the verdicts at the saved threshold are
RANKING_BAR = 0.8
BALANCED_BAR = 0.7  # chance is 0.5: a threshold every fake (or every real) falls under
CLASS_ACCURACIES = ("fake_accuracy", "real_accuracy")
_AT_THRESHOLD = {"accuracy", "balanced_accuracy", *CLASS_ACCURACIES}
_BOTH_CLASSES = {"accuracy", "balanced_accuracy"}  # figures that blend the class accuracies


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


def break_bars(metric: str = "ap", below: float = RANKING_BAR,
               balanced_below: float = BALANCED_BAR) -> dict[str, float]:
    """The bars a setting must clear: ranking figure ``metric`` (ap or roc_auc) >= ``below`` and
    balanced accuracy at the saved threshold >= ``balanced_below``.

    Raises ValueError naming the command-line option (``--break-metric``, ``--break-below``,
    ``--break-balanced-below``) that is out of range.
    """
    if metric not in RANKING_METRICS:
        raise ValueError(f"--break-metric must be one of {', '.join(RANKING_METRICS)} (balanced "
                         f"accuracy has its own bar, --break-balanced-below), got {metric!r}")
    for option, bar in (("--break-below", below), ("--break-balanced-below", balanced_below)):
        if not 0 < bar <= 1:
            raise ValueError(f"{option} must lie in (0, 1], got {bar:g}; pass a figure such as "
                             f"{RANKING_BAR} or {BALANCED_BAR}")
    return {metric: below, THRESHOLD_METRIC: balanced_below}


def below_bars(row: Mapping[str, Any], bars: Mapping[str, float]) -> list[str]:
    """The figures of a metrics row that fall below their bars (a missing figure never does)."""
    return [m for m, bar in bars.items() if row.get(m) is not None and row[m] < bar]


def _label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def _where(metric: str) -> str:
    return " at the saved threshold" if metric in _AT_THRESHOLD else ""


def _named(metric: str) -> str:
    """"AP", "balanced accuracy at the saved threshold"."""
    return _label(metric) + _where(metric)


def _figure(metric: str, value: float) -> str:
    """"AP 0.99", "balanced accuracy 0.50 at the saved threshold"."""
    return f"{_label(metric)} {value:.2f}{_where(metric)}"


def _class_accuracies(row: Mapping[str, Any]) -> str:
    """Which class a threshold fails: "fake accuracy 0.00: every fake called real, real ..."."""
    everyone = {"fake_accuracy": ": every fake called real",
                "real_accuracy": ": every real image called fake"}
    return ", ".join(f"{_label(key)} {row[key]:.2f}" + (everyone[key] if row[key] == 0 else "")
                     for key in CLASS_ACCURACIES if row.get(key) is not None)


def _setting_text(row: Mapping[str, Any], bars: Mapping[str, float]) -> str:
    """The bar figures at one setting, those below their bars first, saying by how much."""
    broken = below_bars(row, bars)
    parts = []
    for metric in sorted(bars, key=lambda m: m not in broken):
        if row.get(metric) is None:
            parts.append(f"{_label(metric)} undefined")
            continue
        text = _figure(metric, row[metric])
        if metric in broken:
            detail = _class_accuracies(row) if metric in _BOTH_CLASSES else ""
            text += f", below {bars[metric]:g}" + (f" ({detail})" if detail else "")
        parts.append(text)
    return "; ".join(parts)


def _lowest_text(curve: Sequence[Mapping[str, Any]], bars: Mapping[str, float]) -> str:
    """How each bar figure held over a curve that never broke: its bar and lowest value."""
    parts = []
    for metric, bar in bars.items():
        values = [r[metric] for r in curve if r.get(metric) is not None]
        parts.append(f"{_named(metric)} stays at or above {bar:g} (lowest {min(values):.2f})"
                     if values else f"{_label(metric)} undefined")
    return "; ".join(parts)


def breaking_points(metrics: Sequence[dict[str, Any]], bars: Mapping[str, float] | None = None,
                    generator: str = ALL) -> list[dict[str, Any]]:
    """For each (detector, family), the first level, in grid order, where a figure is below its bar.

    ``bars`` maps figures to bars (default :func:`break_bars`: AP 0.8 and balanced accuracy at
    the saved threshold 0.7); any one below breaks the setting, so a threshold that every fake
    falls under shows even while AP still ranks them well. Grids list levels from mild to
    strong. Each entry has detector, family, level (where it breaks; None if it never does and
    for chains), broken_by (the figures below their bars there), values (the bar figures there,
    or their lowest when it never breaks) and text, a predicate of the detector such as "breaks
    at JPEG quality 95: balanced accuracy 0.50 at the saved threshold, below 0.7 (fake accuracy
    0.00: every fake called real, real accuracy 1.00); AP 1.00".
    """
    bars = break_bars() if bars is None else bars
    curves: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in metrics:
        if row["generator"] == generator:
            curves.setdefault((row["detector"], row["family"]), []).append(row)
    out = []
    for (detector, family), curve in curves.items():
        judged = [r for r in curve if any(r.get(m) is not None for m in bars)]
        broken = next((r for r in judged if below_bars(r, bars)), None)
        entry = {"detector": detector, "family": family, "level": None, "broken_by": [],
                 "values": {}}
        if not judged:
            text = (f"has no {' or '.join(map(_label, bars))} for {family} (they need scored "
                    "real and fake images)")
        elif curve[0]["level"] is None:  # a chain: one setting, no curve
            row = judged[0]
            entry.update(broken_by=below_bars(row, bars), values={m: row.get(m) for m in bars})
            verdict = "breaks" if entry["broken_by"] else "holds"
            text = f"{verdict} after {describe_level(family, None)}: {_setting_text(row, bars)}"
        elif broken is None:
            entry["values"] = {m: min((r[m] for r in judged if r.get(m) is not None), default=None)
                               for m in bars}
            text = (f"holds up to {describe_level(family, judged[-1]['level'])}: "
                    f"{_lowest_text(judged, bars)}")
        else:
            entry.update(level=broken["level"], broken_by=below_bars(broken, bars),
                         values={m: broken.get(m) for m in bars})
            opening = "is already broken" if broken is judged[0] else "breaks"
            text = (f"{opening} at {describe_level(family, broken['level'])}: "
                    f"{_setting_text(broken, bars)}")
        out.append({**entry, "text": text})
    return out


def settings_table(metrics: Sequence[dict[str, Any]], bars: Mapping[str, float] | None = None,
                   generator: str = ALL) -> str:
    """Every setting of ``generator``'s rows as a text table: the bar figures, fake and real
    accuracy at the saved threshold, and the figures below their bars ("broken_by")."""
    bars = break_bars() if bars is None else bars
    columns = ["detector", "perturbation", *bars,
               *(k for k in CLASS_ACCURACIES if k not in bars), "broken_by"]
    rows = [{**r, "broken_by": ", ".join(f"{_label(m)} < {bars[m]:g}"
                                         for m in below_bars(r, bars))}
            for r in metrics if r["generator"] == generator]
    return format_table(rows, columns)


# --- plots ----------------------------------------------------------------------------------

def _file_name(family: str) -> str:
    return family.replace("/", "_").replace("=", "-").replace(",", "_") + ".png"


def _panel_label(key: str) -> str:
    if key in CLASS_ACCURACIES:
        return "fake accuracy (real: grey)\nat the saved threshold"
    return _label(key) + ("\nat the saved threshold" if key in _AT_THRESHOLD else "")


def _plot_family(family: str, rows: Sequence[dict[str, Any]], detectors: Sequence[str],
                 bars: Mapping[str, float]) -> bytes:
    """PNG bytes vs level, one column of panels per detector: each bar figure with its bar (red),
    then fake accuracy per generator with the real images' accuracy (grey), which show which
    class a falling balanced accuracy fails."""
    panels = [*bars, "fake_accuracy"]
    fig, axes = plt.subplots(len(panels), len(detectors), squeeze=False, sharex=True,
                             sharey="row", figsize=(1 + 4 * len(detectors), 2.2 + 2 * len(panels)),
                             dpi=100)
    levels = [r["level"] for r in rows if r["detector"] == detectors[0] and r["generator"] == ALL]
    for column, detector in enumerate(detectors):
        mine = [r for r in rows if r["detector"] == detector]
        generators = [ALL] + sorted({r["generator"] for r in mine} - {ALL})
        for row_index, key in enumerate(panels):
            ax = axes[row_index][column]
            lines = [(g, key, {"color": "black", "ls": "--", "lw": 2} if g == ALL else {})
                     for g in generators]
            if key == "fake_accuracy":
                lines.append((ALL, "real_accuracy", {"color": "grey", "lw": 2}))
            for generator, figure, style in lines:
                line = [(r["level"], r[figure]) for r in mine if r["generator"] == generator]
                label = "real images" if figure == "real_accuracy" else generator
                ax.plot([lv for lv, _ in line], [np.nan if v is None else v for _, v in line],
                        marker="o", ms=3, label=label, **style)
            if key in bars:
                ax.axhline(bars[key], color="red", lw=0.8, ls=":")
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
            ax.set_ylabel(_panel_label(key) if column == 0 else "")
            if row_index == 0:
                ax.set_title(detector)
            if row_index == len(panels) - 1:
                ax.set_xlabel(_level_name(family))
    if len(levels) > 1 and levels[0] > levels[-1]:
        axes[0][0].invert_xaxis()  # shared x: strongest perturbation on the right everywhere
    axes[0][-1].legend(fontsize="small", title="generator")
    axes[-1][-1].legend(fontsize="small")
    fig.suptitle(family)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


# --- writing --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Report:
    """What :func:`write_report` found with its ``bars``, and the files it wrote (``plots``:
    family -> PNG)."""

    metrics: list[dict[str, Any]]
    breaking_points: list[dict[str, Any]]
    bars: dict[str, float]
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


def _cell(value: Any, low: bool = False) -> str:
    """A table cell; ``low`` marks a figure below its bar."""
    text = "-" if value is None else (
        f"{value:.3f}" if isinstance(value, float) else html.escape(str(value)))
    return f'<td class="low">{text}</td>' if low else f"<td>{text}</td>"


def _table_row(row: Mapping[str, Any], shown: Sequence[str], bars: Mapping[str, float]) -> str:
    """A row of the metrics table: figures below their bars marked, and named in a last cell;
    under a broken accuracy, a class accuracy of 0 (every image of that class called wrong) too."""
    low = below_bars(row, bars)
    broken_by = ", ".join(f"{_label(m)} {row[m]:.2f} < {bars[m]:g}" for m in low)
    if _BOTH_CLASSES & set(low):
        low += [k for k in CLASS_ACCURACIES if row.get(k) == 0]
    return ("<tr>" + "".join(_cell(row[k], k in low) for k in shown)
            + _cell(broken_by, bool(broken_by)) + "</tr>")


def _html(manifest: dict[str, Any], metrics: Sequence[dict[str, Any]],
          points: Sequence[dict[str, Any]], plots: Mapping[str, bytes],
          rows: Sequence[dict[str, Any]], bars: Mapping[str, float]) -> str:
    """The report page; plots embedded, tables of the pooled metrics and of the errors."""
    e = html.escape
    detectors = "".join(
        f"<li><b>{e(d['name'])}</b>: threshold {manifest['thresholds'][d['name']]:.3f}, "
        f"sha256 <code>{d['sha256'][:16]}</code></li>" for d in manifest["detectors"])
    breaks = "".join(
        f"<li><b>{e(name)}</b><ul>"
        + "".join(f'<li class="broken">{e(p["text"])}</li>' if p["broken_by"]
                  else f"<li>{e(p['text'])}</li>" for p in points if p["detector"] == name)
        + "</ul></li>" for name in manifest["thresholds"])
    figures = "".join(
        f'<figure><img alt="{e(family)}" src="data:image/png;base64,'
        f'{base64.b64encode(data).decode()}"><figcaption>{e(family)}</figcaption></figure>'
        for family, data in plots.items())
    others = (*RANKING_METRICS, *CLASS_ACCURACIES, "accuracy", "ece")
    shown = ["detector", "perturbation", "n", "n_errors", *bars,
             *(k for k in others if k not in bars)]
    table = "".join(_table_row(r, shown, bars) for r in metrics if r["generator"] == ALL)
    bar_text = " or ".join(f"{_named(m)} falls below {bar:g}" for m, bar in bars.items())
    errors = Counter((r["path"], r["error"]) for r in rows if r["error"])
    error_items = "".join(f"<li><code>{e(path)}</code>: {e(error)} ({n} results)</li>"
                          for (path, error), n in sorted(errors.items())[:50])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Robustness report</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 80em; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
td, th {{ border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: right; }}
td:nth-child(-n+2), th:nth-child(-n+2), td:last-child {{ text-align: left; }}
td.low {{ background: #fdd; color: #900; font-weight: bold; }}
li.broken {{ color: #900; font-weight: bold; }}
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
<p>A setting breaks a detector where {e(bar_text)}, on all images pooled; levels read from
mild to strong in grid order. Both are checked: scores can still rank fakes above reals (high AP)
while the saved threshold calls every fake real (balanced accuracy 0.5).</p>
<ul>{breaks}</ul>
<h2>Curves</h2>
<p>Dashed black: all images; coloured: each generator's fakes against all real images; grey:
the real images. Balanced, fake and real accuracy are at each detector's saved threshold;
dotted red lines are the bars.</p>
{figures}
<h2>Metrics, all images pooled</h2>
<p>Per generator: <a href="{METRICS_CSV}">{METRICS_CSV}</a>,
<a href="{METRICS_JSON}">{METRICS_JSON}</a>.</p>
<p>Highlighted: figures below their bars.</p>
<table><tr>{''.join(f'<th>{k}</th>' for k in shown)}<th>broken by</th></tr>{table}</table>
<h2>Errors</h2>
{f'<ul>{error_items}</ul>' if errors else '<p>None.</p>'}
</body></html>
"""


def write_report(out: str | os.PathLike, *, bars: Mapping[str, float] | None = None,
                 rows: Sequence[dict[str, Any]] | None = None) -> Report:
    """Write metrics.csv, metrics.json, plots/*.png and report.html into run folder ``out``.

    ``rows`` default to the folder's merged results; ``bars`` (default :func:`break_bars`: AP
    0.8, balanced accuracy at the saved threshold 0.7) say where a detector "breaks": any figure
    below its bar.
    """
    bars = dict(break_bars() if bars is None else bars)
    unknown = [m for m in bars if m not in METRIC_KEYS]
    if unknown:
        raise ValueError(f"bars must be figures among {', '.join(METRIC_KEYS)}, got {unknown}")
    out = Path(out)
    manifest = read_run_manifest(out)
    rows = read_results(out) if rows is None else rows
    metrics = robustness_metrics(rows, manifest["thresholds"], manifest["grid"])
    points = breaking_points(metrics, bars)
    by_family: dict[str, list[dict[str, Any]]] = {}
    for row in metrics:
        by_family.setdefault(row["family"], []).append(row)
    detectors = list(manifest["thresholds"])
    plots = {family: _plot_family(family, fam_rows, detectors, bars)
             for family, fam_rows in by_family.items()
             if len({r["level"] for r in fam_rows}) > 1}
    report = Report(metrics, points, bars, out / METRICS_CSV, out / METRICS_JSON,
                    out / REPORT_FILE, {f: out / PLOTS_DIR / _file_name(f) for f in plots})
    for family, data in plots.items():
        atomic_write_bytes(report.plots[family], data)
    atomic_write_text(report.csv, _csv_text(metrics))
    document = {"run": manifest, "break_bars": bars, "breaking_points": points,
                "metrics": metrics}
    atomic_write_text(report.json, json.dumps(document, indent=2, allow_nan=False) + "\n")
    atomic_write_text(report.html, _html(manifest, metrics, points, plots, rows, bars))
    return report
