"""Scan results as files: one row per scored file, written as CSV or JSON lines atomically, so
an interrupted scan never leaves a half-written table under its final name.

The rows of ``forensics scan`` are :func:`scan_records`: ``path``, ``p_fake``, ``verdict``,
each stability copy's P(fake) when scored (``forensics.verdict.STABILITY_COPIES``), each
ensemble member's ``p_fake_<member>``, and ``error``. :func:`results_csv` is the one CSV
writer of result rows, also of the app's downloads (its batch table, robustness rows).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crashsafe.files import atomic_write_bytes
from forensics.verdict import STABILITY_COPIES, verdict

__all__ = ["SCAN_FORMATS", "scan_records", "results_csv", "results_jsonl", "write_results"]

if TYPE_CHECKING:
    from forensics.scoring import ScoreRow

SCAN_FORMATS = ("csv", "jsonl")


def scan_records(rows: Sequence[ScoreRow], threshold: float, band: float,
                 stability: bool) -> list[dict[str, Any]]:
    """The table of a scan: one record per file, in order, with the same columns for all
    (empty strings where a figure is missing: a file that failed, a copy not scored)."""
    members = sorted({name for r in rows for name in r.members})  # ensembles only
    copies = STABILITY_COPIES if stability else ()
    return [{"path": str(r.path),
             "p_fake": "" if r.p_fake is None else round(r.p_fake, 6),
             "verdict": verdict(r, threshold, band),
             **{c.column: round(r.copies[c.label], 6) if c.label in r.copies else ""
                for c in copies},
             **{f"p_fake_{m}": round(r.members[m], 6) if m in r.members else ""
                for m in members},
             "error": r.error} for r in rows]


def results_csv(records: Sequence[Mapping[str, Any]],
                columns: Sequence[str] | None = None) -> str:
    """``records`` as CSV text with a header row: ``columns`` (other keys ignored), by default
    the first record's keys."""
    buffer = io.StringIO(newline="")
    fields = list(columns) if columns is not None else list(records[0]) if records else []
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()


def results_jsonl(records: Sequence[Mapping[str, Any]]) -> str:
    """``records`` as JSON lines; a missing figure (an empty string) is null, except the
    ``error`` text."""
    return "".join(json.dumps({k: None if v == "" and k != "error" else v
                               for k, v in record.items()}) + "\n" for record in records)


def write_results(path: str | os.PathLike, records: Sequence[Mapping[str, Any]],
                  fmt: str = "csv") -> Path:
    """Write ``records`` to ``path`` as ``fmt`` (``csv`` or ``jsonl``) atomically; parent
    folders are created. A non-UTF-8 file name in a row is written back as its original bytes
    (surrogateescape) instead of failing."""
    if fmt not in SCAN_FORMATS:
        raise ValueError(f"results format must be one of {', '.join(SCAN_FORMATS)}, got {fmt!r}")
    text = results_csv(records) if fmt == "csv" else results_jsonl(records)
    atomic_write_bytes(path, text.encode("utf-8", "surrogateescape"))
    return Path(path)
