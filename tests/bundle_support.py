"""Helpers for tests that alter model files on purpose: flip one byte, or forge the SHA-256
records so that a deeper check (shapes, pickles, the probe) is the one that must refuse."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def flip_byte(path: Path, where: float = 0.5) -> None:
    """Flip the lowest bit of the byte at fraction ``where`` of ``path`` (0 first, 1 last)."""
    data = bytearray(path.read_bytes())
    data[min(int(len(data) * where), len(data) - 1)] ^= 0x01
    path.write_bytes(bytes(data))


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rehash_bundle(folder: Path) -> None:
    """Record the current SHA-256 of every file detector.json lists (a consistent forgery)."""
    manifest = json.loads((folder / "detector.json").read_text())
    names = set(manifest["sha256"]) | set(manifest["arrays"])
    manifest["sha256"] = {name: sha256_of(folder / name) for name in sorted(names)
                          if (folder / name).is_file()}
    (folder / "detector.json").write_text(json.dumps(manifest))


def rehash_checkpoint(run: Path, names: list[str] | None = None) -> None:
    """Record the current SHA-256 of a checkpoint's tensor files (those config.json lists, or
    ``names``) in its config.json (a consistent forgery)."""
    document = json.loads((run / "config.json").read_text())
    names = list(document["files"]) if names is None else names
    document["files"] = {name: sha256_of(run / name) for name in names}
    (run / "config.json").write_text(json.dumps(document))
