"""A generator's run folder as one object: what ``forensics zoo train`` leaves, read by
:meth:`GeneratorRun.from_pretrained` and written by :meth:`GeneratorRun.save_pretrained`.

The folder holds the checkpoint (``generators.checkpoint``: ``config.json`` and the
safetensors files) and what the trainer adds beside it: ``stats.jsonl`` (a row per step),
``samples.png`` (the grid on fixed seeds) and ``curves.png`` (the training curves). Code outside
``generators`` reaches these files through this class, never by their names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from crashsafe.files import read_jsonl

from .checkpoint import CONFIG_FILE, load_checkpoint, read_checkpoint_config, save_checkpoint
from .registry import GanPair

STATS_FILE = "stats.jsonl"
SAMPLES_FILE = "samples.png"
CURVES_FILE = "curves.png"


def read_stats(run_dir: str | Path) -> list[dict]:
    """The rows of a run's ``stats.jsonl``, in step order."""
    return read_jsonl(Path(run_dir) / STATS_FILE)


@dataclass(frozen=True)
class GeneratorRun:
    """A run folder and its checkpoint's ``config.json`` (``document``: ``name``, ``config``,
    ``step``, ``extra``)."""

    folder: Path
    document: dict[str, Any]

    @classmethod
    def from_pretrained(cls, folder: str | Path, *, recover: bool = True) -> GeneratorRun:
        """The run in ``folder``; raises CheckpointError when it holds no readable checkpoint.

        ``recover=False`` leaves the folder untouched (for viewers such as the app: a save in
        progress of a training beside them is not theirs to finish or discard).
        """
        return cls(Path(folder), read_checkpoint_config(folder, recover=recover))

    @classmethod
    def save_pretrained(cls, folder: str | Path, pair: GanPair, step: int,
                        extra: dict | None = None, *, ema: nn.Module | None = None,
                        train_state: Mapping[str, Any] | None = None) -> GeneratorRun:
        """Write the checkpoint of ``pair`` at ``step`` into ``folder``
        (``generators.checkpoint.save_checkpoint``) and return the run."""
        save_checkpoint(folder, pair, step, extra, ema=ema, train_state=train_state)
        return cls.from_pretrained(folder)

    @staticmethod
    def is_run(folder: str | Path) -> bool:
        """Whether ``folder`` looks like a run of ``forensics zoo train`` (a checkpoint config
        and its statistics); a cheap test for listings, which does not parse anything."""
        folder = Path(folder)
        return (folder / STATS_FILE).is_file() and (folder / CONFIG_FILE).is_file()

    @property
    def name(self) -> str:
        """The generator family."""
        return self.document["name"]

    @property
    def config(self) -> dict[str, Any]:
        """The family's full config (``create_generator(name, **config)``)."""
        return self.document["config"]

    @property
    def step(self) -> int:
        """The training step of the checkpoint."""
        return int(self.document["step"])

    @property
    def health(self) -> dict[str, Any]:
        """What the run's health watch recorded (``collapsed``, ``last_diagnostics``,
        ``warnings``); empty when it recorded nothing."""
        return self.document["extra"].get("health") or {}

    @property
    def config_path(self) -> Path:
        """The checkpoint's ``config.json``."""
        return self.folder / CONFIG_FILE

    @property
    def stats_path(self) -> Path:
        """The per-step statistics, ``stats.jsonl``."""
        return self.folder / STATS_FILE

    @property
    def samples_path(self) -> Path:
        """The sample grid on fixed seeds, ``samples.png``."""
        return self.folder / SAMPLES_FILE

    @property
    def curves_path(self) -> Path:
        """The training curves, ``curves.png``."""
        return self.folder / CURVES_FILE

    def stats(self) -> list[dict]:
        """The rows of ``stats.jsonl``, in step order."""
        return read_stats(self.folder)

    def load(self, device: str | torch.device = "cpu") -> GanPair:
        """The trained nets, with their weights, on ``device``."""
        return load_checkpoint(self.folder, device)[0]
