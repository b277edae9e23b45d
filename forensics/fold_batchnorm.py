"""Batch norms folded into the convolutions that feed them, for scoring on the CPU.

In eval mode a batch norm is a per-channel affine map, so a convolution followed by one is a
single convolution with scaled weights and a shifted bias (``torch.nn.utils.fusion``). Lite0
spent 14% of its CPU time in batch norm kernels; folded, that pass over every activation is
gone. timm's ``BatchNormAct2d`` keeps its dropout and activation. Which norm follows which
convolution is read from a probe forward pass, and the folded copy is kept only if it scores
the probe as the network does, so an architecture where a convolution's output also feeds
something else stays as it was.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["fold_batch_norms"]


def _replacement(norm: nn.Module) -> nn.Module | None:
    """What is left of ``norm`` once folded: nothing, or timm's dropout and activation; None
    for a norm this does not fold."""
    if type(norm) is nn.BatchNorm2d:
        return nn.Identity()
    if type(norm).__name__ == "BatchNormAct2d" and hasattr(norm, "act"):  # timm.layers
        return nn.Sequential(norm.drop, norm.act)
    return None


def _conv_norm_pairs(network: nn.Module, probe: torch.Tensor) -> list[tuple[str, str]]:
    """(convolution, norm) module names where the norm's input is the convolution's output."""
    names = {module: name for name, module in network.named_modules()}
    outputs: dict[int, tuple[torch.Tensor, nn.Module]] = {}  # the tensors kept: ids stay unique
    pairs: list[tuple[str, str]] = []

    def after_conv(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        outputs[id(output)] = (output, module)

    def before_norm(module: nn.Module, inputs: tuple) -> None:
        found = outputs.get(id(inputs[0]))
        if found is not None and _replacement(module) is not None:
            pairs.append((names[found[1]], names[module]))

    hooks = [m.register_forward_hook(after_conv) for m in network.modules()
             if isinstance(m, nn.Conv2d)]
    hooks += [m.register_forward_pre_hook(before_norm) for m in network.modules()
              if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    try:
        with torch.inference_mode():
            network(probe)
    finally:
        for hook in hooks:
            hook.remove()
    return pairs


def fold_batch_norms(network: nn.Module, probe: torch.Tensor) -> nn.Module:
    """A copy of ``network`` (in eval mode) with its batch norms folded into the convolutions
    before them, or ``network`` itself where the copy does not score ``probe`` alike."""
    network.eval()
    folded = copy.deepcopy(network)
    modules = dict(folded.named_modules())
    for conv_name, norm_name in _conv_norm_pairs(folded, probe):
        for name, module in ((conv_name, fuse_conv_bn_eval(modules[conv_name],
                                                            modules[norm_name])),
                             (norm_name, _replacement(modules[norm_name]))):
            parent, _, attribute = name.rpartition(".")
            setattr(folded.get_submodule(parent), attribute, module)
    with torch.inference_mode():
        expected, got = network(probe), folded(probe)
    scale = float(expected.abs().max()) + 1.0
    return folded if torch.allclose(got, expected, rtol=1e-3, atol=1e-4 * scale) else network
