"""Generator checkpoints: a folder of ``config.json`` + ``*.safetensors``; no pickles.

Layout of a checkpoint (run) folder:

- ``config.json``: ``{"format", "version", "name", "config", "step", "extra"}``: the family
  name and its full config (architecture and hyperparameters; enough for
  ``create_generator(name, **config)``), the training step and caller-supplied extras
  (training options, dataset summary).
- ``weights.safetensors``: generator tensors under ``G.<state_dict key>``, discriminator
  tensors under ``D.<key>`` (parameters and BatchNorm buffers).
- ``optim.safetensors`` (when optimizers are given): each optimizer's per-parameter state as
  ``<prefix>.state.<param index>.<name>`` (Adam: ``step``, ``exp_avg``, ``exp_avg_sq``) and its
  param groups as JSON in the file's metadata; :func:`load_optimizer_state` restores them.

Each file is written atomically (temp file, fsync, os.replace), weights first and config last.
Loading parses JSON and safetensors only, so a checkpoint can never run code.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from .files import atomic_write_bytes, atomic_write_text
from .registry import GanPair, create_generator

CHECKPOINT_FORMAT = "gan-forensics/generator-checkpoint"
CHECKPOINT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
OPTIM_FILE = "optim.safetensors"


class CheckpointError(ValueError):
    """A checkpoint folder is missing, malformed or does not fit the model it describes."""


def _tensors_for_saving(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}{key}": value.detach().cpu().contiguous() for key, value in state.items()}


def save_checkpoint(run_dir: str | Path, pair: GanPair, step: int, extra_config: dict | None = None,
                    *, optimizers: Mapping[str, torch.optim.Optimizer] | None = None) -> Path:
    """Write ``pair`` (and ``optimizers``, e.g. ``{"G": opt_g, "D": opt_d}``) into ``run_dir``.

    Returns the folder. ``extra_config`` must be JSON-serialisable.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tensors = {**_tensors_for_saving(pair.generator.state_dict(), "G."),
               **_tensors_for_saving(pair.discriminator.state_dict(), "D.")}
    # One metadata key only: safetensors writes several in random order, and the weights'
    # SHA-256 must depend on the tensors alone.
    weights = save(tensors, metadata={"format": CHECKPOINT_FORMAT})
    atomic_write_bytes(run_dir / WEIGHTS_FILE, weights)
    if optimizers:
        atomic_write_bytes(run_dir / OPTIM_FILE, _optimizer_bytes(optimizers))
    document = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "name": pair.name,
        "config": pair.config,
        "step": int(step),
        "extra": extra_config or {},
    }
    atomic_write_text(run_dir / CONFIG_FILE, json.dumps(document, indent=2) + "\n")
    return run_dir


def read_checkpoint_config(run_dir: str | Path) -> dict:
    """The parsed ``config.json`` of a checkpoint folder, checked for format and version."""
    path = Path(run_dir) / CONFIG_FILE
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path} not found: {run_dir} is not a generator checkpoint "
                              "folder (train one with train_gan)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(document, dict) or document.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a generator checkpoint config "
                              f"(expected format {CHECKPOINT_FORMAT!r})")
    if document.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path} has checkpoint version {document.get('version')!r}; "
                              f"this code reads version {CHECKPOINT_VERSION}")
    return document


def _load_safetensors(path: Path, device: str | torch.device) -> dict[str, torch.Tensor]:
    try:
        return load_file(path, device=str(device))
    except FileNotFoundError:
        raise CheckpointError(f"{path} not found; the checkpoint folder is incomplete") from None
    except SafetensorError as exc:
        raise CheckpointError(f"{path} is not a valid safetensors file ({exc}); "
                              "checkpoints are never read with pickle") from exc


def load_checkpoint(run_dir: str | Path,
                    device: str | torch.device = "cpu") -> tuple[GanPair, dict]:
    """Rebuild the GanPair saved in ``run_dir`` and load its weights onto ``device``.

    Returns ``(pair, document)`` where ``document`` is the parsed ``config.json`` (with
    ``name``, ``config``, ``step``, ``extra``). Raises CheckpointError for a missing or
    malformed folder or weights that do not fit the config.
    """
    run_dir = Path(run_dir)
    document = read_checkpoint_config(run_dir)
    try:
        pair = create_generator(document["name"], **document["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{run_dir / CONFIG_FILE} describes no buildable generator: "
                              f"{exc}") from exc
    tensors = _load_safetensors(run_dir / WEIGHTS_FILE, device)
    for prefix, module in (("G.", pair.generator), ("D.", pair.discriminator)):
        state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{run_dir / WEIGHTS_FILE} does not match the config in "
                                  f"{run_dir / CONFIG_FILE}: {exc}") from exc
    return pair.to(device), document


def checkpoint_sha256(run_dir: str | Path) -> str:
    """Hex SHA-256 of the checkpoint's ``weights.safetensors`` (names the generator weights)."""
    digest = hashlib.sha256()
    with open(Path(run_dir) / WEIGHTS_FILE, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _optimizer_bytes(optimizers: Mapping[str, torch.optim.Optimizer]) -> bytes:
    tensors: dict[str, torch.Tensor] = {}
    groups: dict[str, list] = {}
    for prefix, optimizer in optimizers.items():
        state = optimizer.state_dict()
        for index, param_state in state["state"].items():
            for name, value in param_state.items():
                value = value if torch.is_tensor(value) else torch.tensor(value)
                tensors[f"{prefix}.state.{index}.{name}"] = value.detach().cpu().contiguous()
        groups[prefix] = state["param_groups"]
    return save(tensors, metadata={"param_groups": json.dumps(groups)})


def load_optimizer_state(run_dir: str | Path,
                         optimizers: Mapping[str, torch.optim.Optimizer]) -> None:
    """Restore the optimizers saved by :func:`save_checkpoint` (same prefixes, same models).

    The optimizers must have been built over the parameters of the loaded pair, in the same
    order as at saving; their state tensors move to those parameters' devices.
    """
    path = Path(run_dir) / OPTIM_FILE
    tensors = _load_safetensors(path, "cpu")
    with safe_open(path, framework="pt") as f:
        groups = json.loads((f.metadata() or {}).get("param_groups", "{}"))
    for prefix, optimizer in optimizers.items():
        if prefix not in groups:
            raise CheckpointError(f"{path} holds no optimizer {prefix!r} "
                                  f"(it has {sorted(groups)})")
        state: dict[int, dict[str, torch.Tensor]] = {}
        start = f"{prefix}.state."
        for key, value in tensors.items():
            if key.startswith(start):
                index, name = key[len(start):].split(".", 1)
                state.setdefault(int(index), {})[name] = value
        for group in groups[prefix]:
            if isinstance(group.get("betas"), list):
                group["betas"] = tuple(group["betas"])
        try:
            optimizer.load_state_dict({"state": state, "param_groups": groups[prefix]})
        except (ValueError, KeyError) as exc:
            raise CheckpointError(f"{path}: optimizer {prefix!r} does not fit: {exc}") from exc
