"""The one reader of a weights file into a state dict, never executing code from it.

``.safetensors`` files are read by safetensors; any other file (``.pth``, ``.pt``) by
``torch.load(weights_only=True)``, which refuses pickled code. Used for the ImageNet backbones
of ``forensics.backbones`` and the Inception-v3 of ``generators.quality``; imports torch.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import torch
from safetensors.torch import load_file

STATE_DICT_ADVICE = ("pass a state dict of tensors (.safetensors, or a .pth/.pt file that "
                     "torch.load(weights_only=True) reads)")


class WeightsError(ValueError):
    """A weights file that cannot be read as a state dict of tensors; the message names the
    file, says why and what to pass instead."""


def read_state_dict(path: str | os.PathLike, *, advice: str = STATE_DICT_ADVICE
                    ) -> OrderedDict[str, torch.Tensor]:
    """The tensors of the weights file ``path`` by name, in the file's order, on the CPU.

    A torch checkpoint that wraps them as ``{"state_dict": ...}`` is unwrapped. Raises
    FileNotFoundError for a missing file and :class:`WeightsError` (ending with ``advice``)
    for one that is not a state dict of tensors.
    """
    path = Path(path)
    try:
        state = (load_file(path) if path.suffix == ".safetensors"
                 else torch.load(path, map_location="cpu", weights_only=True))
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoding failure means "not a state dict"
        raise WeightsError(f"{path} could not be read as a state dict ({exc}); {advice}") from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not (isinstance(state, dict)
            and all(isinstance(tensor, torch.Tensor) for tensor in state.values())):
        raise WeightsError(f"{path} does not hold a state dict of tensors; {advice}")
    return OrderedDict(state)
