"""Resumable detector training: a folder holding the state after the last finished epoch.

Layout of a state folder (``forensics detector train`` keeps it in ``<out>/.train-state/``):

- ``state.safetensors``: every tensor of the state (network weights, optimizer moments, RNG
  states, ...) under a dotted key (``optimiser.state.0.exp_avg``);
- ``state.json``: the format, the SHA-256 of ``state.safetensors`` (checked before it is
  parsed), the fingerprint of the training inputs and parameters, and the
  rest of the state tree as a JSON skeleton whose ``{"$tensor": key}`` leaves point into the
  safetensors file, with dict keys kept with their types (optimizers index their state by int).

The two files are replaced as one unit after every epoch (``crashsafe.files.replace_files``,
``state.json`` last), so a kill at any moment leaves the previous state or the new one. Loading
reads JSON and safetensors only: no pickle, nothing from the files is executed. Torch is
imported on first use, so that importing this module (as ``forensics.training`` does) stays cheap.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from crashsafe.documents import MISSING, NOT_JSON, WRONG_FORMAT, DocumentError, read_document
from crashsafe.files import (ChecksumError, atomic_write_bytes, fsync_dir, recover_files,
                             replace_files, sha256_hex)
from crashsafe.tensors import decode_state, encode_state, load_checked

__all__ = [
    "TRAIN_STATE_DIR",
    "TrainStateError",
    "discard_train_state",
    "fingerprint_data",
    "load_train_state",
    "save_train_state",
]

TRAIN_STATE_DIR = ".train-state"
STATE_FORMAT = "gan-forensics-detector-train-state"
STATE_VERSION = 2  # 2: state.json records the SHA-256 of state.safetensors
STATE_JSON = "state.json"
STATE_TENSORS = "state.safetensors"


class TrainStateError(ValueError):
    """A training state that cannot be resumed: unreadable, or written for other inputs."""


def fingerprint_data(images: Sequence[np.ndarray], labels: np.ndarray,
                     validation: tuple[Sequence[np.ndarray], np.ndarray] | None) -> str:
    """SHA-256 over the training images (shape, type, pixels), labels and validation data."""
    digest = hashlib.sha256()

    def add(batch: Sequence[np.ndarray], y: np.ndarray) -> None:
        digest.update(f"{len(batch)} images\n".encode())
        for image in batch:
            digest.update(f"{image.shape} {image.dtype}\n".encode())
            digest.update(np.ascontiguousarray(image).tobytes())
        digest.update(np.asarray(y, dtype=np.int64).tobytes())

    add(images, labels)
    if validation is None:
        digest.update(b"no validation\n")
    else:
        add(*validation)
    return digest.hexdigest()


def _unreadable(folder: Path, why: str) -> TrainStateError:
    return TrainStateError(f"the training state in {os.fspath(folder)!r} cannot be resumed "
                           f"({why}); delete that folder, or rerun without --resume, to train "
                           "from scratch")


def save_train_state(folder: str | os.PathLike, state: Mapping[str, Any], *,
                     fingerprint: Mapping[str, Any]) -> None:
    """Replace the state in ``folder`` (created if missing) as one unit.

    ``fingerprint`` (JSON-ready: a data hash, the parameters) is what a resume must match.
    """
    from safetensors.torch import save

    tensors, skeleton = encode_state(dict(state))
    data = save(tensors)
    document = {"format": STATE_FORMAT, "version": STATE_VERSION,
                "files": {STATE_TENSORS: sha256_hex(data)},
                "fingerprint": dict(fingerprint), "state": skeleton}
    text = json.dumps(document, indent=1) + "\n"  # NaN/inf allowed: json reads them back

    def write(stage: Path) -> None:
        atomic_write_bytes(stage / STATE_TENSORS, data)
        atomic_write_bytes(stage / STATE_JSON, text.encode("utf-8"))

    replace_files(folder, write, last=STATE_JSON)


def load_train_state(folder: str | os.PathLike,
                     fingerprint: Mapping[str, Any]) -> dict[str, Any] | None:
    """The state saved in ``folder``, or None when there is none (no folder, no state.json).

    Raises TrainStateError when the state is unreadable, or was written for other training
    data or parameters than ``fingerprint`` (``{"data": hash, "params": {...}}``) says; the
    message names the parameters that differ.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None
    try:
        recover_files(folder)  # a state save that a kill cut short: finish it or drop it
    except OSError as error:
        raise _unreadable(folder, f"an interrupted save cannot be finished: {error}") from None
    path = folder / STATE_JSON
    if not path.is_file():
        return None
    try:
        document = read_document(path, format=STATE_FORMAT, version=STATE_VERSION)
    except DocumentError as error:
        if error.problem == MISSING:
            return None
        raise _unreadable(folder, {
            NOT_JSON: f"{STATE_JSON} is not valid JSON: {error.detail}",
            WRONG_FORMAT: f"{STATE_JSON} does not declare format {STATE_FORMAT!r}",
        }.get(error.problem, f"state version {error.version!r} is not {STATE_VERSION}")) from None
    saved = document.get("fingerprint") or {}
    if saved.get("params") != fingerprint.get("params"):
        ours, theirs = fingerprint.get("params") or {}, saved.get("params") or {}
        differ = ", ".join(f"{key} {theirs.get(key)!r} then, {ours.get(key)!r} now"
                           for key in sorted(set(ours) | set(theirs))
                           if ours.get(key) != theirs.get(key))
        raise TrainStateError(
            f"the training state in {os.fspath(folder)!r} was written with other detector "
            f"parameters ({differ}); resume with the same --set options, or rerun without "
            "--resume to train from scratch")
    if saved.get("data") != fingerprint.get("data"):
        raise TrainStateError(
            f"the training state in {os.fspath(folder)!r} was written for other training or "
            "validation images (their SHA-256 differs); resume with the same corpora, or rerun "
            "without --resume to train from scratch")
    from safetensors import SafetensorError

    try:
        expected = (document.get("files") or {})[STATE_TENSORS]
        tensors = load_checked(folder / STATE_TENSORS, expected)
    except (KeyError, TypeError):
        raise _unreadable(folder, f"{STATE_JSON} records no SHA-256 for {STATE_TENSORS}") from None
    except ChecksumError:
        raise _unreadable(folder, f"{STATE_TENSORS} does not match the SHA-256 recorded in "
                                  f"{STATE_JSON} (a corrupted or altered file)") from None
    except (SafetensorError, OSError, ValueError) as error:
        raise _unreadable(folder, f"{STATE_TENSORS} is not a valid .safetensors file: "
                                  f"{error}") from None
    try:
        state = decode_state(tensors, document.get("state"))
    except (KeyError, TypeError, AttributeError) as error:
        raise _unreadable(folder, f"{STATE_JSON} and {STATE_TENSORS} do not match: "
                                  f"{error!r}") from None
    if not isinstance(state, dict):
        raise _unreadable(folder, f"{STATE_JSON} holds no state")
    return state


def discard_train_state(folder: str | os.PathLike) -> None:
    """Remove a state folder; a kill midway leaves no state that could be resumed (every
    ``state.json``, the file that makes a state, goes first)."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for marker in sorted(folder.rglob(STATE_JSON)):
        marker.unlink(missing_ok=True)
    shutil.rmtree(folder)
    fsync_dir(folder.parent)
