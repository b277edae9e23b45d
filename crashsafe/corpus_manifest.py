"""The manifest of a corpus folder, ``manifest.jsonl``: one JSON object per image, with its
``path`` (relative to the folder), ``label`` ("real" or "fake"), ``generator``, optional
``split`` and provenance fields.

``generators.sampling`` writes the zoo's fakes with it and ``forensics`` its bundled and
aligned corpora; ``forensics.corpus`` reads and checks it. It lives in this shared layer because
both packages write the same file and neither may import the other (standard library only).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from crashsafe.files import append_jsonl, atomic_write_text, read_jsonl

CORPUS_MANIFEST_NAME = "manifest.jsonl"


def manifest_path(folder: str | os.PathLike) -> Path:
    """Where the manifest of the corpus in ``folder`` lies."""
    return Path(folder) / CORPUS_MANIFEST_NAME


def has_manifest(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a corpus manifest."""
    return manifest_path(folder).is_file()


def write_manifest(folder: str | os.PathLike, rows: Iterable[dict]) -> Path:
    """Replace the manifest of ``folder`` with ``rows`` atomically; return its path."""
    path = manifest_path(folder)
    atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in rows))
    return path


def append_manifest(folder: str | os.PathLike, rows: Iterable[dict]) -> None:
    """Append ``rows`` to the manifest of ``folder``; they reach the disk before this returns."""
    append_jsonl(manifest_path(folder), rows)


def read_manifest_rows(folder: str | os.PathLike, *, repair: bool = False) -> list[dict]:
    """The rows a writer appended so far (none when there is no manifest); ``repair`` cuts a
    last line that an interrupted append left (``crashsafe.files.read_jsonl``)."""
    return read_jsonl(manifest_path(folder), repair=repair)
