"""DCGAN (Radford et al. 2016) as in pytorch/examples ``dcgan/main.py``, sized by resolution.

Generator: ConvT(nz -> ngf*m, 4, 1, 0) + BN + ReLU gives 4x4; each ConvT(k4, s2, p1) + BN + ReLU
doubles the size and halves the channels down to ngf; a last ConvT(k4, s2, p1) to 3 channels +
Tanh. With m = R / 8 a 64 px model has the example's ngf*8 -> ngf*4 -> ngf*2 -> ngf -> 3.

Discriminator: the mirror image: Conv(k4, s2, p1) + LeakyReLU(0.2) without BN, then
Conv(k4, s2, p1) + BN + LeakyReLU doubling channels down to 4x4, and Conv(-> 1, 4, 1, 0)
giving one logit per image (no sigmoid: the losses work on logits).

The transposed convolutions (k4, s2) are the upsampler whose checkerboard/spectral traces the
detectors look for; keep them as they are.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..registry import register_generator

DCGAN_DEFAULTS = {
    "resolution": 64,
    "nz": 100,
    "ngf": 64,
    "ndf": 64,
    "lr": 2e-4,
    "betas": (0.5, 0.999),
    "batch_size": 64,
    "loss": "nonsaturating",
}


def _num_doublings(resolution: int) -> int:
    """Number of stride-2 layers between 4x4 and ``resolution`` (a power of two >= 16)."""
    if (not isinstance(resolution, int) or isinstance(resolution, bool) or resolution < 16
            or resolution & (resolution - 1)):
        raise ValueError(f"DCGAN resolution must be a power of two >= 16, got {resolution!r}")
    return int(math.log2(resolution)) - 2


class DCGANGenerator(nn.Module):
    """Latents (N, nz) or (N, nz, 1, 1) -> images (N, 3, R, R) in [-1, 1]."""

    def __init__(self, resolution: int, nz: int, ngf: int):
        super().__init__()
        doublings = _num_doublings(resolution)
        channels = ngf * 2 ** (doublings - 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(nz, channels, 4, 1, 0, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        ]
        for _ in range(doublings - 1):
            layers += [
                nn.ConvTranspose2d(channels, channels // 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(channels // 2),
                nn.ReLU(inplace=True),
            ]
            channels //= 2
        layers += [nn.ConvTranspose2d(channels, 3, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.z_dim = nz
        self.resolution = resolution

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() == 2:
            z = z[:, :, None, None]
        return self.net(z)


class DCGANDiscriminator(nn.Module):
    """Images (N, 3, R, R) -> real/fake logits (N,)."""

    def __init__(self, resolution: int, ndf: int):
        super().__init__()
        doublings = _num_doublings(resolution)
        layers: list[nn.Module] = [
            nn.Conv2d(3, ndf, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        channels = ndf
        for _ in range(doublings - 1):
            layers += [
                nn.Conv2d(channels, channels * 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(channels * 2),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            channels *= 2
        layers.append(nn.Conv2d(channels, 1, 4, 1, 0, bias=False))
        self.net = nn.Sequential(*layers)
        self.resolution = resolution

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images).flatten()


def init_dcgan_weights(module: nn.Module) -> None:
    """DCGAN init: conv weights N(0, 0.02); BatchNorm weight N(1, 0.02), bias 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def _positive_int(config: dict, key: str) -> int:
    value = config[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"DCGAN {key} must be a positive integer, got {value!r}")
    return value


@register_generator("dcgan", DCGAN_DEFAULTS)
def build_dcgan(config: dict) -> tuple[DCGANGenerator, DCGANDiscriminator]:
    resolution = config["resolution"]
    _positive_int(config, "batch_size")
    if not isinstance(config["lr"], (int, float)) or not config["lr"] > 0:
        raise ValueError(f"DCGAN lr must be a positive number, got {config['lr']!r}")
    betas = config["betas"]
    if not (isinstance(betas, tuple) and len(betas) == 2 and all(0 <= b < 1 for b in betas)):
        raise ValueError(f"DCGAN betas must be two numbers in [0, 1), got {betas!r}")
    generator = DCGANGenerator(resolution, _positive_int(config, "nz"),
                               _positive_int(config, "ngf"))
    discriminator = DCGANDiscriminator(resolution, _positive_int(config, "ndf"))
    generator.apply(init_dcgan_weights)
    discriminator.apply(init_dcgan_weights)
    return generator, discriminator
