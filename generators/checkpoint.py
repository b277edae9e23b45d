"""Generator checkpoints: a folder of ``config.json`` + ``*.safetensors``; no pickles.

Layout of a checkpoint (run) folder:

- ``config.json``: ``{"format", "version", "name", "config", "step", "extra", "files"}``: the
  family name and its full config (architecture and hyperparameters; enough for
  ``create_generator(name, **config)``), the training step, caller-supplied extras (training
  options, dataset summary, class names) and the SHA-256 of each tensor file written with it.
- ``weights.safetensors``: each net's ``state_dict`` under a prefix: ``G.`` for ``generator``,
  ``D.`` for ``discriminator``, the net's own name for other nets (``G_A.``, ...), and
  ``G_ema.`` for the EMA generator when training keeps one.
- ``optim.safetensors`` (when training state is given): any nested tree of dicts, lists and
  tensors (optimizer and GradScaler state, EMA, RNG states, data position): tensors under
  dotted keys (``step.optimizers.G.state.0.exp_avg``), everything else as JSON in the file's
  metadata (``skeleton``), so :func:`load_train_state` rebuilds the tree with its exact key
  types (optimizers index their state by int).

A checkpoint is replaced as one unit (``crashsafe.files.replace_files``), so a crash at any
moment leaves either the previous checkpoint or the new one, never a mix: the new files are
staged in ``.pending/``, committed by a marker and moved into place (``config.json`` last);
whoever opens the folder next finishes that move when the marker is there and discards the
staging folder when it is not. The SHA-256 of each tensor file in ``config.json`` is checked
before the file is parsed, so a flipped byte, a truncated copy or a file swapped in by hand is
refused. Loading parses JSON and safetensors only, so it can never run code.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import nn

from crashsafe.documents import MISSING, NOT_JSON, WRONG_FORMAT, DocumentError, read_document
from crashsafe.files import (STAGING_DIR, ChecksumError, atomic_write_bytes, atomic_write_text,
                             is_sha256_hex, recover_files, replace_files, sha256_hex)
from crashsafe.tensors import decode_state, encode_state, load_checked

from .registry import GanPair, create_generator

CHECKPOINT_FORMAT = "gan-forensics/generator-checkpoint"
CHECKPOINT_VERSION = 2
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
OPTIM_FILE = "optim.safetensors"
EMA_PREFIX = "G_ema"
_NET_PREFIXES = {"generator": "G", "discriminator": "D"}


class CheckpointError(ValueError):
    """A checkpoint folder is missing, malformed or does not fit the model it describes."""


def _weights_prefix(net_name: str) -> str:
    return _NET_PREFIXES.get(net_name, net_name)


def _cpu_tensors(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{key}": value.detach().cpu().contiguous() for key, value in state.items()}


def save_checkpoint(run_dir: str | Path, pair: GanPair, step: int, extra_config: dict | None = None,
                    *, ema: nn.Module | None = None,
                    train_state: Mapping[str, Any] | None = None) -> Path:
    """Write ``pair`` (plus the EMA generator ``ema`` and a resumable ``train_state`` tree,
    see ``crashsafe.tensors.encode_state``) into ``run_dir``; return the folder.

    ``extra_config`` must be JSON-serialisable.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    for name, net in pair.nets.items():
        tensors.update(_cpu_tensors(net.state_dict(), _weights_prefix(name)))
    if ema is not None:
        tensors.update(_cpu_tensors(ema.state_dict(), EMA_PREFIX))
    # One metadata key only: safetensors writes several in random order, and the weights'
    # SHA-256 must depend on the tensors alone.
    files = {WEIGHTS_FILE: save(tensors, metadata={"format": CHECKPOINT_FORMAT})}
    if train_state is not None:
        state_tensors, skeleton = encode_state(train_state)
        files[OPTIM_FILE] = save(state_tensors, metadata={"skeleton": json.dumps(skeleton)})
    document = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "name": pair.name,
        "config": pair.config,
        "step": int(step),
        "extra": extra_config or {},
        "files": {filename: sha256_hex(data) for filename, data in files.items()},
    }
    def write(stage: Path) -> None:
        for filename, data in files.items():
            atomic_write_bytes(stage / filename, data)
        atomic_write_text(stage / CONFIG_FILE, json.dumps(document, indent=2) + "\n")

    replace_files(run_dir, write, last=CONFIG_FILE)
    return run_dir


def recover_checkpoint(run_dir: str | Path) -> None:
    """Finish or discard a checkpoint save that a crash interrupted in ``run_dir``."""
    try:
        recover_files(run_dir)
    except OSError as exc:
        raise CheckpointError(f"{Path(run_dir) / STAGING_DIR} holds a checkpoint save "
                              f"interrupted by a crash that cannot be finished ({exc}); make "
                              f"{run_dir} writable and run the command again") from exc


def has_checkpoint(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a complete checkpoint (after finishing an interrupted save)."""
    recover_checkpoint(run_dir)
    return (Path(run_dir) / CONFIG_FILE).is_file()


def read_checkpoint_config(run_dir: str | Path, *, recover: bool = True) -> dict:
    """The parsed ``config.json`` of a checkpoint folder, checked for format and version.

    ``recover=False`` leaves the folder untouched (for viewers such as the app: the save in
    progress of a training beside them is not theirs to finish or discard) and reads the
    last complete checkpoint's config.
    """
    if recover:
        recover_checkpoint(run_dir)
    path = Path(run_dir) / CONFIG_FILE
    try:
        return read_document(path, format=CHECKPOINT_FORMAT, version=CHECKPOINT_VERSION)
    except DocumentError as exc:
        if exc.problem == MISSING:
            message = (f"{path} not found: {run_dir} is not a generator checkpoint folder "
                       "(train one with `forensics zoo train`)")
        elif exc.problem == NOT_JSON:
            message = f"{path} is not valid JSON ({exc.detail}); restore the folder or retrain"
        elif exc.problem == WRONG_FORMAT:
            message = (f"{path} is not a generator checkpoint config (expected format "
                       f"{CHECKPOINT_FORMAT!r}); point at a run folder of `forensics zoo train`")
        else:
            message = (f"{path} has checkpoint version {exc.version!r}; this code reads version "
                       f"{CHECKPOINT_VERSION} (retrain the generator with this version)")
        raise CheckpointError(message) from None


def _load_tensor_file(run_dir: Path, filename: str, document: dict) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, parsed only after its bytes matched the SHA-256
    ``config.json`` records for it; a file without a recorded SHA-256 is refused."""
    path = run_dir / filename
    files = document.get("files")
    expected = files.get(filename) if isinstance(files, dict) else None
    if not is_sha256_hex(expected):
        raise CheckpointError(f"{run_dir / CONFIG_FILE} records no SHA-256 for {filename}, so "
                              "the file cannot be checked; restore the folder or retrain")
    try:
        return load_checked(path, expected)
    except FileNotFoundError:
        raise CheckpointError(f"{path} not found; the checkpoint folder is incomplete: "
                              "restore the folder or retrain") from None
    except ChecksumError:
        raise CheckpointError(f"{path} does not match the SHA-256 in {run_dir / CONFIG_FILE} "
                              "(a corrupted file, or one copied from elsewhere); restore the "
                              "folder or retrain") from None
    except SafetensorError as exc:
        raise CheckpointError(f"{path} is not a valid safetensors file ({exc}); "
                              "checkpoints are never read with pickle; restore the folder or "
                              "retrain") from exc


def _load_net(module: nn.Module, tensors: Mapping[str, torch.Tensor], prefix: str,
              where: Path) -> None:
    start = prefix + "."
    state = {key[len(start):]: value for key, value in tensors.items() if key.startswith(start)}
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())  # torch lists each mismatch on a line of its own
        raise CheckpointError(f"{where / WEIGHTS_FILE} does not match the config in "
                              f"{where / CONFIG_FILE}: {detail}; restore the folder or "
                              "retrain") from exc


def load_checkpoint(run_dir: str | Path,
                    device: str | torch.device = "cpu") -> tuple[GanPair, dict]:
    """Rebuild the GanPair saved in ``run_dir`` and load its weights onto ``device``.

    The EMA generator, when saved, becomes ``pair.generator_ema``. Returns ``(pair,
    document)`` where ``document`` is the parsed ``config.json`` (``name``, ``config``,
    ``step``, ``extra``). Raises CheckpointError for a missing, torn or malformed folder or
    weights that do not fit the config.
    """
    run_dir = Path(run_dir)
    document = read_checkpoint_config(run_dir)
    try:
        pair = create_generator(document["name"], **document["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{run_dir / CONFIG_FILE} describes no buildable generator "
                              f"({exc}); restore the folder or retrain") from exc
    tensors = _load_tensor_file(run_dir, WEIGHTS_FILE, document)
    prefixes = {_weights_prefix(name) for name in pair.net_names} | {EMA_PREFIX}
    stray = sorted({key.split(".", 1)[0] for key in tensors} - prefixes)
    if stray:
        raise CheckpointError(f"{run_dir / WEIGHTS_FILE} holds tensors for unknown nets "
                              f"{stray}; {document['name']!r} has {sorted(prefixes)}: restore "
                              "the folder or retrain")
    for name, net in pair.nets.items():
        _load_net(net, tensors, _weights_prefix(name), run_dir)
    if any(key.startswith(EMA_PREFIX + ".") for key in tensors):
        ema = copy.deepcopy(pair.generator).eval().requires_grad_(False)
        _load_net(ema, tensors, EMA_PREFIX, run_dir)
        pair.generator_ema = ema
    return pair.to(device), document


def load_train_state(run_dir: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """The training-state tree saved with the checkpoint in ``run_dir`` (tensors on ``device``)."""
    run_dir = Path(run_dir)
    document = read_checkpoint_config(run_dir)
    tensors = _load_tensor_file(run_dir, OPTIM_FILE, document)
    path = run_dir / OPTIM_FILE
    with safe_open(path, framework="pt") as f:
        skeleton = (f.metadata() or {}).get("skeleton")
    if skeleton is None:
        raise CheckpointError(f"{path} holds no training state skeleton; resume is not "
                              "possible from it: train into a new --out")
    return decode_state({key: value.to(device) for key, value in tensors.items()},
                        json.loads(skeleton))


def checkpoint_sha256(run_dir: str | Path) -> str:
    """Hex SHA-256 of the checkpoint's ``weights.safetensors`` (names the generator weights)."""
    digest = hashlib.sha256()
    with open(Path(run_dir) / WEIGHTS_FILE, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
