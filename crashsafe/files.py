"""Crash-safe files: atomic writes, sets of files replaced as one unit, SHA-256 checks,
JSON-lines logs and the JSON encoding of nested training state; only the standard library.

Every file left behind (checkpoints, bundles, PNGs, manifests) is written so that an interrupted
run never leaves a half-written file under its final name: data goes to a temporary file in the
same folder, is fsynced, then moved into place with ``os.replace``. Sets of files that only make
sense together (a checkpoint, a detector bundle) are replaced as one unit by
:func:`replace_files`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import uuid
from pathlib import Path
from collections.abc import Mapping
from typing import Any, Callable, Iterable

__all__ = ["STAGING_DIR", "COMMIT_MARKER", "atomic_write_bytes", "atomic_write_text", "fsync_dir",
           "replace_files", "recover_files", "remove_orphaned_temp_files", "sha256_hex",
           "is_sha256_hex", "ChecksumError", "read_checked", "json_safe", "append_jsonl",
           "read_jsonl", "encode_tree", "LeafStore", "decode_tree"]

STAGING_DIR = ".pending"
COMMIT_MARKER = "COMMIT"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, os.replace);
    parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A hand-made name opened with "xb" keeps the umask's permissions (mkstemp would force 0600).
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` as UTF-8 to ``path`` atomically, like :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"))


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename durable; silently skipped where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def replace_files(folder: str | os.PathLike, write: Callable[[Path], None], *,
                  last: str) -> None:
    """Replace a set of files in ``folder`` as one unit: after a crash at any moment, readers
    that call :func:`recover_files` first see the old set or the new one, never a mix.

    ``write(stage)`` writes the new files (subfolders allowed) into the staging folder
    ``folder/.pending``; then a ``COMMIT`` marker is written there, every staged file is moved to
    the same place under ``folder`` with ``os.replace`` (``last``, the file that says the set is
    complete, at the end) and the staging folder is removed. Files of ``folder`` that the new set
    does not name are left alone.
    """
    folder = Path(folder)
    recover_files(folder)  # a commit an earlier crash cut short comes first
    stage = folder / STAGING_DIR
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    write(stage)
    if not (stage / last).is_file():
        raise ValueError(f"the staged set in {stage} has no {last}")
    atomic_write_text(stage / COMMIT_MARKER, last)  # the commit point; it names the last file
    _move_staged(folder, last)


def recover_files(folder: str | os.PathLike) -> None:
    """Finish or discard a :func:`replace_files` that a crash interrupted in ``folder``.

    With the ``COMMIT`` marker every new file was complete, so the move into place is redone;
    without it the old set was never touched and the staging folder is removed. Temp files that
    a killed :func:`atomic_write_bytes` left go too. Raises OSError when the folder cannot be
    changed (read-only).
    """
    folder = Path(folder)
    remove_orphaned_temp_files(folder)
    stage = folder / STAGING_DIR
    if not stage.is_dir():
        return
    marker = stage / COMMIT_MARKER
    if marker.is_file():
        _move_staged(folder, marker.read_text(encoding="utf-8"))
    else:
        shutil.rmtree(stage)
        fsync_dir(folder)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_orphaned_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the temp files of :func:`atomic_write_bytes` in ``folder`` whose writer is gone
    (a process killed mid-write leaves its ``.<name>.<pid>.<hex>.tmp``); return them. Files of
    live processes, this one included, are left alone."""
    removed = []
    for path in Path(folder).glob(".*.tmp"):
        pid = path.name.rsplit(".", 3)[-3] if path.name.count(".") >= 4 else ""
        if pid.isdigit() and int(pid) != os.getpid() and not _process_alive(int(pid)):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _move_staged(folder: Path, last: str) -> None:
    """Move the staged files into ``folder``, ``last`` at the end; every step can be redone."""
    stage = folder / STAGING_DIR
    staged = sorted(path.relative_to(stage) for path in stage.rglob("*")
                    if path.is_file() and not path.name.endswith(".tmp")
                    and path.relative_to(stage) not in (Path(COMMIT_MARKER), Path(last)))
    for relative in [*staged, Path(last)]:
        source = stage / relative
        if source.is_file():
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, folder / relative)
            fsync_dir((folder / relative).parent)
    shutil.rmtree(stage)  # the marker, and temp files of a write the crash cut
    fsync_dir(folder)


def sha256_hex(data: bytes) -> str:
    """The SHA-256 of ``data`` as 64 lowercase hex digits: what manifests record per file."""
    return hashlib.sha256(data).hexdigest()


def is_sha256_hex(value: object) -> bool:
    """Whether ``value`` is a SHA-256 as :func:`sha256_hex` writes it."""
    return (isinstance(value, str) and len(value) == 64
            and all(c in "0123456789abcdef" for c in value))


class ChecksumError(ValueError):
    """A file whose bytes do not hash to the SHA-256 its manifest records."""


def read_checked(path: str | os.PathLike, expected_sha256: str) -> bytes:
    """The bytes of ``path`` after checking them against ``expected_sha256``.

    One read serves both the check and the caller, so the bytes used are the bytes checked.
    Raises ChecksumError on a mismatch (a flipped bit, a truncated copy, a file swapped in by
    hand) and OSError when the file cannot be read.
    """
    data = Path(path).read_bytes()
    actual = sha256_hex(data)
    if actual != expected_sha256:
        raise ChecksumError(f"{os.fspath(path)}: SHA-256 {actual[:12]}... differs from the "
                            f"{str(expected_sha256)[:12]}... recorded for it")
    return data


def json_safe(value: Any) -> Any:
    """Replace non-finite floats (NaN, inf) with None so the output stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def append_jsonl(path: str | os.PathLike, rows: Iterable[dict], *, fsync: bool = True) -> None:
    """Append one JSON object per line; the lines reach the disk before this returns."""
    lines = "".join(json.dumps(json_safe(row), allow_nan=False) + "\n" for row in rows)
    if not lines:
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write(lines)
        f.flush()
        if fsync:
            os.fsync(f.fileno())


def read_jsonl(path: str | os.PathLike, *, repair: bool = False) -> list[dict]:
    """Read a JSON-lines file; a missing file reads as no rows.

    A last line without its newline is the trace of an interrupted append: it is ignored, and
    with ``repair=True`` cut from the file so that later appends start on a clean line.
    A malformed line anywhere else is an error.
    """
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    complete_end = data.rfind(b"\n") + 1
    if repair and complete_end < len(data):
        with open(path, "r+b") as f:
            f.truncate(complete_end)
            f.flush()
            os.fsync(f.fileno())
    rows = []
    for number, line in enumerate(data[:complete_end].decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: line {number} is not valid JSON ({exc}); "
                             "fix or remove that line") from exc
    return rows


def encode_tree(tree: Any, leaf: Callable[[Any, str], Any]) -> Any:
    """The JSON skeleton of a tree of dicts (JSON-scalar keys of any type), lists, tuples and
    JSON scalars, with key types kept (optimizers index their state by int).

    Every other node goes to ``leaf(node, dotted_path)``, which stores it elsewhere (a tensor
    file) and returns its JSON stand-in, a dict with one ``"$name"`` key of its own (or raises
    TypeError for what it cannot store). :func:`decode_tree` inverts it.
    """
    def walk(node: Any, where: str) -> Any:
        child = (lambda key: f"{where}.{key}" if where else str(key))
        if isinstance(node, Mapping):
            return {"$dict": [[key, walk(value, child(key))] for key, value in node.items()]}
        if isinstance(node, (list, tuple)):
            tag = "$tuple" if isinstance(node, tuple) else "$list"
            return {tag: [walk(value, child(i)) for i, value in enumerate(node)]}
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        return leaf(node, where)

    return walk(tree, "")


class LeafStore(dict):
    """A ``leaf`` for :func:`encode_tree` keeping each leaf under its dotted path; its JSON
    stand-in is ``{"$tensor": path}``. ``copy(node)`` gives the copy to keep, or None for a
    node that cannot be stored."""

    def __init__(self, copy: Callable[[Any], Any], allowed: str):
        super().__init__()
        self.copy, self.allowed = copy, allowed

    def __call__(self, node: Any, where: str) -> dict:
        kept = self.copy(node)
        if kept is None:
            raise TypeError(f"cannot store {type(node).__name__} at {where or 'the root'} of "
                            f"the training state (use {self.allowed})")
        if where in self:
            raise ValueError(f"two tensors of the training state share the key {where!r}")
        self[where] = kept
        return {"$tensor": where}


def decode_tree(skeleton: Any, leaf: Callable[[dict], Any]) -> Any:
    """The tree :func:`encode_tree` described by ``skeleton``; ``leaf(stand_in)`` rebuilds
    each stored node from its JSON stand-in."""
    if isinstance(skeleton, dict):
        if "$dict" in skeleton:
            return {key: decode_tree(value, leaf) for key, value in skeleton["$dict"]}
        if "$tuple" in skeleton:
            return tuple(decode_tree(value, leaf) for value in skeleton["$tuple"])
        if "$list" in skeleton:
            return [decode_tree(value, leaf) for value in skeleton["$list"]]
        return leaf(skeleton)
    return skeleton
