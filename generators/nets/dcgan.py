"""DCGAN (Radford et al. 2016) as in pytorch/examples ``dcgan/main.py``, sized by resolution, and
its class-conditional variant ``cgan``.

Generator: ConvT(nz -> ngf*m, 4, 1, 0) + BN + ReLU gives 4x4; each ConvT(k4, s2, p1) + BN + ReLU
doubles the size and halves the channels down to ngf; a last ConvT(k4, s2, p1) to 3 channels +
Tanh. With m = R / 8 a 64 px model has the example's ngf*8 -> ngf*4 -> ngf*2 -> ngf -> 3.

Discriminator: the mirror image: Conv(k4, s2, p1) + LeakyReLU(0.2) without normalisation, then
Conv(k4, s2, p1) + BN + LeakyReLU doubling channels down to 4x4 (``features``), and
Conv(-> 1, 4, 1, 0) (``head``) giving one logit per image (no sigmoid: the losses work on
logits). ``d_norm="none"`` drops the BatchNorms (needed by WGAN-GP, whose penalty is per
image); ``spectral_norm`` wraps every D convolution in spectral normalisation (Miyato et al.).

``cgan`` (Mirza & Osindero; projection D of Miyato & Koyama 2018): G takes z concatenated
with a learned class embedding (``embed_dim``); D adds <embed(y), mean of its 4x4 features> to
the logit. The classes are the training data's (corpus subfolders or a manifest field), so
``num_classes`` is set by the trainer from the data.

Defaults for small data (issue 15; the bundled corpus, about 1,400 train patches at 32 px, the
diagnostics of ``generators.diagnostics`` against 512 reals; 2 CPU threads):

- the paper's batch 64 and lr 2e-4 leave D winning and G near its start after a few hundred
  steps: DCGAN 140 steps (36 s) ended at diversity ratio 0.41 and 20% distinct neighbours,
  and 300 steps at 64 px at 0.20 / 11%. Batch 16 gives four times the updates for about the
  same time (560 steps, 0.65 / 48%); lr 5e-4 on both nets learns faster (0.91 / 66%), and an
  EMA of G (beta 0.995) smooths the swings between checkpoints (800 steps, 28 s: 1.01 / 61%);
- cGAN collapsed to one image per class with the 32-wide class embedding, whatever the loss,
  D normalisation or augmentation (0.11-0.41 / 3-9% after 560-800 steps): the class input
  swamps z. A 4-wide embedding and D's projection on the mean rather than the sum of its
  features keep z in charge (1000 steps: 0.76 / 58%);
- lowering D's lr (5e-5), spectral norm + hinge, R1 and DiffAugment all did worse at these
  budgets (140 steps at batch 64: 0.03-0.34 / 2-22%): D is not overfitting yet, G is
  learning too slowly.

The transposed convolutions (k4, s2) are the upsampler whose checkerboard/spectral traces the
detectors look for; keep them as they are.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ..losses import LOSSES
from ..registry import register_generator
from .validation import adam_betas, augment_policy, number_in, positive_int

DCGAN_DEFAULTS = {
    "resolution": 64,
    "nz": 100,
    "ngf": 64,
    "ndf": 64,
    "lr": 5e-4,  # the paper's 2e-4 and batch 64 learn too slowly on small data (see above)
    "lr_d": None,
    "betas": (0.5, 0.999),
    "batch_size": 16,
    "loss": "nonsaturating",
    "gp_weight": 10.0,
    "r1_gamma": 0.0,
    "r1_every": 16,
    "spectral_norm": False,
    "d_norm": "batch",
    "ema_beta": 0.995,
    "ema_rampup": True,
    "diffaugment": "",  # e.g. "color,translation,cutout" for small datasets (generators.augment)
}
CGAN_DEFAULTS = {**DCGAN_DEFAULTS, "resolution": 32, "num_classes": 10, "embed_dim": 4}
# AdversarialStep applies every loss (wgan-gp with its penalty); "none" drops D's BatchNorms.
DCGAN_CHOICES = {"loss": tuple(LOSSES), "d_norm": ("batch", "none")}


def _num_doublings(resolution: int) -> int:
    """Number of stride-2 layers between 4x4 and ``resolution`` (a power of two >= 16)."""
    if (not isinstance(resolution, int) or isinstance(resolution, bool) or resolution < 16
            or resolution & (resolution - 1)):
        raise ValueError(f"DCGAN resolution must be a power of two >= 16, got {resolution!r}")
    return int(math.log2(resolution)) - 2


class DCGANGenerator(nn.Module):
    """Latents (N, nz) or (N, nz, 1, 1) [and class indices (N,)] -> images (N, 3, R, R) in
    [-1, 1]."""

    def __init__(self, resolution: int, nz: int, ngf: int, num_classes: int = 0,
                 embed_dim: int = 0):
        super().__init__()
        doublings = _num_doublings(resolution)
        channels = ngf * 2 ** (doublings - 1)
        self.embed = nn.Embedding(num_classes, embed_dim) if num_classes else None
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(nz + (embed_dim if num_classes else 0), channels, 4, 1, 0,
                               bias=False),
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

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        z = z.flatten(1)
        if self.embed is not None:
            z = torch.cat([z, self.embed(require_labels(labels))], dim=1)
        return self.net(z[:, :, None, None])


class DCGANDiscriminator(nn.Module):
    """Images (N, 3, R, R) [and class indices (N,)] -> real/fake logits (N,)."""

    def __init__(self, resolution: int, ndf: int, num_classes: int = 0,
                 batch_norm: bool = True):
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
                *([nn.BatchNorm2d(channels * 2)] if batch_norm else []),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            channels *= 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Conv2d(channels, 1, 4, 1, 0, bias=False)
        self.embed = nn.Embedding(num_classes, channels) if num_classes else None
        self.resolution = resolution

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        features = self.features(images)
        logits = self.head(features).flatten()
        if self.embed is not None:
            pooled = features.mean(dim=(2, 3))
            logits = logits + (self.embed(require_labels(labels)) * pooled).sum(dim=1)
        return logits


def require_labels(labels: torch.Tensor | None) -> torch.Tensor:
    """``labels``, or a ValueError saying a conditional net (cgan, biggan) needs them."""
    if labels is None:
        raise ValueError("a conditional net needs class indices (N,) besides its input")
    return labels


def init_dcgan_weights(module: nn.Module) -> None:
    """DCGAN init: conv weights N(0, 0.02); BatchNorm weight N(1, 0.02), bias 0. Class
    embeddings keep PyTorch's N(0, 1), on the scale of z."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def _build(config: dict, num_classes: int = 0,
           embed_dim: int = 0) -> tuple[DCGANGenerator, DCGANDiscriminator]:
    family = "DCGAN"
    for key in ("batch_size", "r1_every"):
        positive_int(family, config, key)
    number_in(family, config, "lr", 0, low_open=True)
    if config["lr_d"] is not None:
        number_in(family, config, "lr_d", 0, low_open=True)
    for key in ("gp_weight", "r1_gamma"):
        number_in(family, config, key, 0)
    number_in(family, config, "ema_beta", 0, 1)  # 0: no EMA (1 is refused by the EMA itself)
    adam_betas(family, config)
    augment_policy(family, config)
    if config["loss"] == "wgan-gp" and config["d_norm"] == "batch":
        raise ValueError("WGAN-GP penalises each image's gradient, which BatchNorm in D couples "
                         "across the batch: set d_norm=none")
    resolution = config["resolution"]
    generator = DCGANGenerator(resolution, positive_int(family, config, "nz"),
                               positive_int(family, config, "ngf"), num_classes, embed_dim)
    discriminator = DCGANDiscriminator(resolution, positive_int(family, config, "ndf"),
                                       num_classes, batch_norm=config["d_norm"] == "batch")
    generator.apply(init_dcgan_weights)
    discriminator.apply(init_dcgan_weights)
    if discriminator.embed is not None:
        nn.init.normal_(discriminator.embed.weight, 0.0, 0.02)
    if config["spectral_norm"]:
        for conv in [m for m in discriminator.modules() if isinstance(m, nn.Conv2d)]:
            spectral_norm(conv)
    return generator, discriminator


@register_generator("dcgan", DCGAN_DEFAULTS, choices=DCGAN_CHOICES)
def build_dcgan(config: dict) -> tuple[DCGANGenerator, DCGANDiscriminator]:
    return _build(config)


@register_generator("cgan", CGAN_DEFAULTS, dataset="labelled", choices=DCGAN_CHOICES)
def build_cgan(config: dict) -> tuple[DCGANGenerator, DCGANDiscriminator]:
    return _build(config, positive_int("cgan", config, "num_classes"),
                  positive_int("cgan", config, "embed_dim"))
