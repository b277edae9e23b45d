"""The files of a robustness run folder, written and read here only (standard library only, so
the app reads them without loading the detectors).

* ``run.json``: what the run is over (:func:`write_run_manifest`, :func:`read_run_manifest`);
* ``shards/rank-NNNNN.jsonl``: append-only rows, one file per rank (:class:`ShardWriter`,
  :func:`shard_rows`); a last line cut off by a kill is ignored;
* ``results.jsonl``: all rows merged (:func:`write_results`, :func:`read_results`);
* ``metrics.csv``, ``metrics.json``, ``plots/`` and ``report.html``: the report
  (``forensics.report``) of the merged rows.

Shards and merged results hold the same rows: :func:`result_row`, with the fields
:data:`FIELDS` in that order. :class:`RobustnessResults` is what a viewer (the app) reads.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crashsafe.documents import read_document
from crashsafe.files import atomic_write_text, fsync_dir

__all__ = ["RUN_FORMAT", "RUN_FORMAT_VERSION", "RUN_FILE", "RESULTS_FILE", "SHARDS_DIR",
           "METRICS_CSV", "METRICS_JSON", "REPORT_FILE", "PLOTS_DIR", "FIELDS", "RobustnessError",
           "result_row", "write_run_manifest", "read_run_manifest", "has_run", "read_rows",
           "ShardWriter", "shard_rows", "has_shards", "discard_results", "write_results",
           "read_results", "RobustnessResults"]

RUN_FORMAT = "gan-forensics-robustness"
RUN_FORMAT_VERSION = 1
RUN_FILE = "run.json"
RESULTS_FILE = "results.jsonl"
SHARDS_DIR = "shards"
METRICS_CSV, METRICS_JSON = "metrics.csv", "metrics.json"
REPORT_FILE = "report.html"
PLOTS_DIR = "plots"
FIELDS = ("path", "label", "generator", "detector", "perturbation", "family", "level", "score",
          "error")


class RobustnessError(ValueError):
    """Inputs a robustness run cannot use; the message says which and what to do."""


def result_row(*, path: str, label: str, generator: str | None, detector: str,
               perturbation: str, family: str, level: Any, score: float | None,
               error: str) -> dict[str, Any]:
    """One result: an image (its label and generator) under one perturbation, scored by one
    detector; ``score`` is None when ``error`` says why it could not be scored."""
    return {"path": path, "label": label, "generator": generator, "detector": detector,
            "perturbation": perturbation, "family": family, "level": level, "score": score,
            "error": error}


# --- run.json -------------------------------------------------------------------------------

def write_run_manifest(out: str | os.PathLike, manifest: dict[str, Any]) -> None:
    """Write ``run.json`` atomically (before any shard, so a shard always has its run)."""
    atomic_write_text(Path(out) / RUN_FILE, json.dumps(manifest, indent=2) + "\n")
    fsync_dir(out)


def read_run_manifest(out: str | os.PathLike) -> dict[str, Any]:
    """The parsed ``run.json`` of ``out``; ``crashsafe.documents.DocumentError`` (a
    ValueError) when it is missing, not JSON, or of another format or version."""
    return read_document(Path(out) / RUN_FILE, format=RUN_FORMAT, version=RUN_FORMAT_VERSION,
                         version_key="format_version")


def has_run(out: str | os.PathLike) -> bool:
    """Whether ``out`` holds a run's ``run.json``."""
    return (Path(out) / RUN_FILE).is_file()


# --- rows -----------------------------------------------------------------------------------

def read_rows(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Rows of a JSONL file and the byte length of its whole lines.

    A last line without its newline, or that is not JSON, is what a kill during a write leaves:
    it is ignored. A bad line before the last is damage, and raises RobustnessError.
    """
    data = path.read_bytes()
    rows, end = [], 0
    lines = data.split(b"\n")
    for number, line in enumerate(lines[:-1], 1):  # lines[-1] is the text after the last newline
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines) - 1:
                raise RobustnessError(f"{path} line {number} is not JSON: the file is "
                                      "damaged; rerun with --fresh to start over") from None
            break
        end += len(line) + 1
    return rows, end


def _jsonl(rows: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


class ShardWriter:
    """Appends rows to one rank's shard: whole lines, one write per call, flushed and fsync'd."""

    def __init__(self, out: str | os.PathLike, rank: int) -> None:
        path = Path(out) / SHARDS_DIR / f"rank-{rank:05d}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        end = read_rows(path)[1] if path.exists() else 0
        self._file = open(path, "ab")
        self._file.truncate(end)  # drop a line cut off by a kill before appending after it

    def append(self, rows: Iterable[dict[str, Any]]) -> None:
        self._file.write(_jsonl(rows).encode("utf-8"))
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def shard_rows(out: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of every shard in ``out`` (from any earlier number of ranks)."""
    return [row for path in sorted((Path(out) / SHARDS_DIR).glob("rank-*.jsonl"))
            for row in read_rows(path)[0]]


def has_shards(out: str | os.PathLike) -> bool:
    """Whether ``out`` holds shards (results of a run, finished or not)."""
    return (Path(out) / SHARDS_DIR).exists()


def discard_results(out: str | os.PathLike) -> None:
    """Remove the shards and merged results of ``out`` (a run started over)."""
    shutil.rmtree(Path(out) / SHARDS_DIR, ignore_errors=True)
    (Path(out) / RESULTS_FILE).unlink(missing_ok=True)


def write_results(out: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> None:
    """Write the merged ``results.jsonl`` atomically."""
    atomic_write_text(Path(out) / RESULTS_FILE, _jsonl(rows))


def read_results(out: str | os.PathLike) -> list[dict[str, Any]]:
    """The merged rows of a finished run folder (its ``results.jsonl``)."""
    return read_rows(Path(out) / RESULTS_FILE)[0]


# --- what a viewer reads --------------------------------------------------------------------

def _number(text: str) -> Any:
    """A CSV cell as the JSON value it was written from: a number, None when empty, else text."""
    if text == "":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


@dataclass(frozen=True)
class RobustnessResults:
    """A robustness output folder as a viewer reads it: the report's metrics table, the run,
    the merged rows and the plots."""

    folder: Path

    @staticmethod
    def is_results(folder: str | os.PathLike) -> bool:
        """Whether ``folder`` holds a report's metrics table (JSON or CSV)."""
        return RobustnessResults(Path(folder)).metrics_path is not None

    @property
    def metrics_path(self) -> Path | None:
        """The metrics table: ``metrics.json`` first, else ``metrics.csv``; None when neither."""
        for name in (METRICS_JSON, METRICS_CSV):
            if (self.folder / name).is_file():
                return self.folder / name
        return None

    def metrics(self) -> list[dict[str, Any]]:
        """Rows of the metrics table, one per (detector, generator, perturbation), from JSON
        (``{"metrics": [...]}`` or a list of rows) or CSV; a row without a ``family`` gets the
        perturbation id's name (``jpeg_pil/q=90`` -> ``jpeg_pil``)."""
        path = self.metrics_path
        if path is None:
            raise FileNotFoundError(f"{self.folder} holds no {METRICS_JSON} or {METRICS_CSV}; "
                                    "write them with `forensics robustness`")
        if path.name == METRICS_CSV:
            with path.open(encoding="utf-8", newline="") as f:
                rows = [{key: _number(value) for key, value in row.items()}
                        for row in csv.DictReader(f)]
        else:
            data = json.loads(path.read_text(encoding="utf-8"))
            rows = data.get("metrics", []) if isinstance(data, dict) else data
        for row in rows:
            if "family" not in row and "perturbation" in row:
                row["family"] = str(row["perturbation"]).split("/")[0]
        return rows

    def run(self) -> dict[str, Any]:
        """What the run was over (``run.json``)."""
        return read_run_manifest(self.folder)

    def rows(self) -> list[dict[str, Any]]:
        """The merged result rows (``results.jsonl``)."""
        return read_results(self.folder)

    def plots(self) -> list[Path]:
        """The report's plots, and any other PNG beside the results."""
        return sorted([*self.folder.glob("*.png"), *(self.folder / PLOTS_DIR).glob("*.png")])
