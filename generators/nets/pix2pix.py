"""Pix2Pix (Isola et al. 2017): a U-Net generator and a conditional 70x70 PatchGAN, sized by
config, as in junyanz/pytorch-CycleGAN-and-pix2pix (``unet_256`` + ``basic`` D).

Generator (U-Net, ``num_downs`` levels; None: log2(resolution), down to a 1x1 bottleneck):
the encoder's 4x4 stride-2 convs widen ngf, 2 ngf, 4 ngf, then 8 ngf to the bottom (C64-C128-
C256-C512-...), each but the first after LeakyReLU(0.2) and each but the first and the last
followed by a norm; the decoder mirrors it with ReLU, 4x4 stride-2 transposed convs and a norm,
each level taking the encoder's features of its size concatenated to the level below (skip
connections), and ends in a transposed conv to RGB + tanh. The ``dropout_blocks`` decoder
levels just above the bottleneck (as many as a shallow net has, the first and the bottom level
never) apply dropout 0.5 in training (the paper's noise; samples are
drawn in eval mode, so they are deterministic).

``norm="instance"`` (default) is InstanceNorm with affine parameters: what the paper's
BatchNorm at batch size 1 computes, in training and (with test-batch statistics, as the paper
samples) at test time alike, and it stays so at any batch size; ``norm="batch"`` is BatchNorm
with running statistics for eval mode. Convs followed by a norm have no bias.

Discriminator: cyclegan's :class:`PatchDiscriminator` (70x70 receptive field at
``n_layers_d`` = 3, InstanceNorm) on the input and the real or generated output stacked into
6 channels, so it judges whether the output fits the input, one score per patch.

Weights start from N(0, 0.02), norm scales from N(1, 0.02) (BatchNorm), biases from 0.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..data_aligned import DIRECTIONS, TASKS
from ..registry import register_generator
from ..steps_pix2pix import Pix2PixStep
from .cyclegan import PatchDiscriminator
from .dcgan import init_dcgan_weights
from .validation import adam_betas, number_in, positive_int, power_of_two

PIX2PIX_DEFAULTS = {
    "resolution": 64,
    "ngf": 64,
    "ndf": 64,
    "num_downs": None,  # None: log2(resolution) levels, down to a 1x1 bottleneck
    "dropout_blocks": 3,  # decoder levels with dropout 0.5 above the bottleneck (0: none)
    "norm": "instance",
    "n_layers_d": 3,
    "batch_size": 1,
    "lr": 2e-4,
    "betas": (0.5, 0.999),
    "loss": "nonsaturating",  # the paper's BCE
    "l1_weight": 100.0,
    "task": "edges2photo",  # or "grey2colour" (from photos), "pairs" (side-by-side A|B files)
    "direction": "AtoB",  # "pairs": which half is the input
    "canny_low": 100.0,
    "canny_high": 200.0,
    "flip": True,  # mirror each training pair at random
}
# The losses Pix2PixStep applies: wgan-gp needs a gradient penalty, which it does not add.
PIX2PIX_CHOICES = {"loss": ("nonsaturating", "hinge", "lsgan"), "norm": ("instance", "batch"),
                   "task": TASKS, "direction": DIRECTIONS, "flip": (True, False)}
DROPOUT = 0.5


def _norm(kind: str, channels: int) -> nn.Module:
    return nn.InstanceNorm2d(channels, affine=True) if kind == "instance" \
        else nn.BatchNorm2d(channels)


class UNetGenerator(nn.Module):
    """Input images (N, 3, R, R) in [-1, 1] -> output images (N, 3, R, R) in [-1, 1];
    R a multiple of 2 ** ``levels``."""

    def __init__(self, levels: int, ngf: int, norm: str, dropout_blocks: int):
        super().__init__()
        widths = [ngf * min(2 ** level, 8) for level in range(levels)]
        inner = levels - 1
        self.down = nn.ModuleList()
        self.up = nn.ModuleList()
        for level, width in enumerate(widths):
            if level == 0:
                self.down.append(nn.Conv2d(3, width, 4, stride=2, padding=1))
            else:
                normed = level < inner
                self.down.append(nn.Sequential(
                    nn.LeakyReLU(0.2), nn.Conv2d(widths[level - 1], width, 4, stride=2,
                                                 padding=1, bias=not normed),
                    *([_norm(norm, width)] if normed else [])))
            # Level `level` of the decoder: its encoder features (and, above the bottleneck,
            # the decoder's output of the level below) back to the size of the level above.
            in_channels = width if level == inner else 2 * width
            if level == 0:
                self.up.append(nn.Sequential(
                    nn.ReLU(), nn.ConvTranspose2d(in_channels, 3, 4, stride=2, padding=1),
                    nn.Tanh()))
            else:
                dropout = inner - dropout_blocks <= level < inner  # level 0: never
                self.up.append(nn.Sequential(
                    nn.ReLU(), nn.ConvTranspose2d(in_channels, widths[level - 1], 4, stride=2,
                                                  padding=1, bias=False),
                    _norm(norm, widths[level - 1]),
                    *([nn.Dropout(DROPOUT)] if dropout else [])))
        self.levels = levels

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        skips = []
        x = images
        for down in self.down:
            x = down(x)
            skips.append(x)
        x = self.up[-1](skips.pop())
        for up in reversed(self.up[:-1]):
            x = up(torch.cat([skips.pop(), x], dim=1))
        return x


def _validate(config: dict) -> int:
    """Check the config; return the number of U-Net levels."""
    name = "pix2pix"
    for key in ("ngf", "ndf", "n_layers_d", "batch_size"):
        positive_int(name, config, key)
    # The PatchGAN needs 2 ** (n_layers_d + 2) px to leave a map of at least 2x2 patches.
    resolution = power_of_two(name, config, "resolution",
                              max(8, 2 ** (config["n_layers_d"] + 2)), 1024)
    number_in(name, config, "lr", 0, low_open=True)
    number_in(name, config, "l1_weight", 0)
    number_in(name, config, "canny_low", 0)
    number_in(name, config, "canny_high", config["canny_low"])
    adam_betas(name, config)
    most = int(math.log2(resolution))
    levels = most if config["num_downs"] is None else positive_int(name, config, "num_downs")
    if not 2 <= levels <= most:
        raise ValueError(f"pix2pix config 'num_downs' must be from 2 to log2(resolution) = "
                         f"{most}, got {levels}")
    dropout_blocks = config["dropout_blocks"]
    if not isinstance(dropout_blocks, int) or isinstance(dropout_blocks, bool) \
            or dropout_blocks < 0:
        raise ValueError(f"pix2pix config 'dropout_blocks' must be an integer >= 0, got "
                         f"{dropout_blocks!r}")
    return levels


@register_generator("pix2pix", PIX2PIX_DEFAULTS, step_class=Pix2PixStep, dataset="aligned",
                    choices=PIX2PIX_CHOICES, label=lambda config: f"pix2pix-{config['task']}")
def build_pix2pix(config: dict) -> tuple[UNetGenerator, PatchDiscriminator]:
    levels = _validate(config)
    generator = UNetGenerator(levels, config["ngf"], config["norm"], config["dropout_blocks"])
    discriminator = PatchDiscriminator(config["ndf"], config["n_layers_d"], in_channels=6)
    generator.apply(init_dcgan_weights)
    discriminator.apply(init_dcgan_weights)
    return generator, discriminator
