"""Progressive GAN (Karras et al. 2018, ``tkarras/progressive_growing_of_gans``), sized for a CPU.

Both nets hold the layers of every resolution 4, 8, ..., R from the start (a fixed parameter
set for checkpoints and DDP) and use those of their current growth stage, held in the buffers
``level`` (0: 4x4, 1: 8x8, ...) and ``alpha`` (the fade-in weight of that level's new layers,
1 once it is stable), which the training step sets (``set_stage``) and checkpoints keep.

Generator: z normalised to unit second moment (pixel norm), a dense layer to 4x4 feature maps,
then per resolution a block: nearest-neighbour 2x upsampling (from 8x8 on) and two 3x3 convs,
each conv followed by leaky ReLU and pixel norm (per-pixel unit mean square over channels);
each resolution has its own 1x1 toRGB (linear). While level l fades in, the output is
(1 - alpha) * upsample(toRGB_{l-1}(x)) + alpha * toRGB_l(block_l(x)). The image is then
nearest-upsampled to R, so the net always returns (N, 3, R, R) (as the reference does).

Discriminator: the mirror. The input (N, 3, R, R) is average-pooled to the stage's resolution;
a 1x1 fromRGB per resolution; per resolution above 4 a block of two 3x3 convs and 2x average
pooling; while level l fades in, its block's output is blended with fromRGB_{l-1} of the 2x
pooled input. At 4x4: minibatch standard deviation (one extra channel), a 3x3 conv, a dense
layer and a linear dense layer to one score.

Every layer has an equalised learning rate (``generators.layers``: weights stored N(0, 1) and
scaled by He's constant at run time); channels at resolution r are min(channel_base / r,
channel_max).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import EqualConv2d, EqualLinear, MinibatchStd, normalize_2nd_moment
from ..losses import LOSSES
from ..registry import register_generator
from ..steps_progan import ProGANStep, num_levels
from .stylegan import channels_at
from .validation import adam_betas, number_in, positive_int, power_of_two

PROGAN_DEFAULTS = {
    # architecture
    "resolution": 32,
    "latent_dim": 128,
    "channel_base": 2048,  # channels at resolution r: min(channel_base / r, channel_max)
    "channel_max": 128,
    "mbstd_group": 4,
    # growth schedule, in training steps
    "initial_resolution": 4,  # where growth starts (R: no growth)
    "stage_steps": 1000,  # steps at each resolution once it is stable
    "fade_steps": 1000,  # steps of the linear fade-in of each new resolution (0: at once)
    "reset_optimizer": True,  # clear Adam's moments when a fade-in starts and when it ends
    # training: the paper's WGAN-GP recipe with a CPU-sized batch
    "batch_size": 16,
    "lr": 1e-3,
    "betas": (0.0, 0.99),
    "loss": "wgan-gp",
    "gp_weight": 10.0,
    "drift": 0.001,  # eps * E[D(x)^2] keeps the critic's output near 0
    "ema_beta": 0.999,
    "ema_rampup": True,
}
# ProGANStep is AdversarialStep (which applies every loss, wgan-gp with its penalty) + growth.
PROGAN_CHOICES = {"loss": tuple(LOSSES)}


def pixel_norm(x: torch.Tensor) -> torch.Tensor:
    """Each pixel's feature vector (dim 1 of (N, C, H, W), or a row of (N, C)) scaled to unit
    mean square: the paper's pixelwise normalisation."""
    return normalize_2nd_moment(x)


def zero_touch(module: nn.Module) -> torch.Tensor:
    """0 times the sum of every parameter of ``module``: added to an output, it gives the layers
    of the resolutions not in use a zero gradient instead of none, so DistributedDataParallel
    (which expects a gradient for every parameter) trains a net that uses only some of them."""
    return torch.stack([p.sum() for p in module.parameters()]).sum() * 0.0


class GrowingNet(nn.Module):
    """The growth stage both nets share: buffers ``level`` and ``alpha``, kept in checkpoints."""

    def __init__(self, resolution: int):
        super().__init__()
        self.resolution = resolution
        self.num_levels = num_levels(resolution)
        self.register_buffer("level", torch.zeros((), dtype=torch.int64))
        self.register_buffer("alpha", torch.ones(()))

    def set_stage(self, level: int, alpha: float) -> None:
        """Use the layers up to ``level`` (resolution 4 * 2**level), its new ones weighted by
        ``alpha`` in [0, 1]."""
        if not 0 <= level < self.num_levels or not 0 <= alpha <= 1 or (level == 0 and alpha < 1):
            raise ValueError(f"no growth stage level={level}, alpha={alpha} in a net of "
                             f"{self.num_levels} levels (level 0 has nothing to fade in)")
        self.level.fill_(level)
        self.alpha.fill_(alpha)

    def stage(self) -> tuple[int, float]:
        return int(self.level), float(self.alpha)


class ProGenerator(GrowingNet):
    """Latents (N, latent_dim) -> images (N, 3, R, R) of the current stage, about [-1, 1]."""

    def __init__(self, resolution: int, latent_dim: int, channel_base: int, channel_max: int):
        super().__init__(resolution)
        self.z_dim = latent_dim
        widths = [channels_at(4 << i, channel_base, channel_max) for i in range(self.num_levels)]
        self.dense = EqualLinear(latent_dim, widths[0] * 16, activate=True)
        self.blocks = nn.ModuleList([nn.ModuleList([EqualConv2d(widths[0], widths[0], 3)])])
        for i in range(1, self.num_levels):
            self.blocks.append(nn.ModuleList([EqualConv2d(widths[i - 1], widths[i], 3),
                                              EqualConv2d(widths[i], widths[i], 3)]))
        self.to_rgb = nn.ModuleList(EqualConv2d(w, 3, 1, activate=False) for w in widths)

    def _block(self, i: int, x: torch.Tensor) -> torch.Tensor:
        if i > 0:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        for conv in self.blocks[i]:
            x = pixel_norm(conv(x))
        return x

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        level, alpha = self.stage()
        x = pixel_norm(self.dense(pixel_norm(z.flatten(1))).view(z.shape[0], -1, 4, 4))
        x = self._block(0, x)
        for i in range(1, level):
            x = self._block(i, x)
        if level == 0:
            images = self.to_rgb[0](x)
        else:
            images = self.to_rgb[level](self._block(level, x))
            if alpha < 1:
                previous = F.interpolate(self.to_rgb[level - 1](x), scale_factor=2,
                                         mode="nearest")
                images = torch.lerp(previous, images, alpha)
        factor = self.resolution >> (level + 2)
        if factor > 1:
            images = F.interpolate(images, scale_factor=factor, mode="nearest")
        return images + zero_touch(self) if self.training else images


class ProDiscriminator(GrowingNet):
    """Images (N, 3, R, R) -> scores (N,), judged at the current stage's resolution."""

    def __init__(self, resolution: int, channel_base: int, channel_max: int,
                 mbstd_group: int = 4):
        super().__init__(resolution)
        widths = [channels_at(4 << i, channel_base, channel_max) for i in range(self.num_levels)]
        self.from_rgb = nn.ModuleList(EqualConv2d(3, w, 1) for w in widths)
        self.blocks = nn.ModuleList([nn.Identity()])  # level 0 has only the epilogue below
        for i in range(1, self.num_levels):
            self.blocks.append(nn.Sequential(EqualConv2d(widths[i], widths[i], 3),
                                             EqualConv2d(widths[i], widths[i - 1], 3),
                                             nn.AvgPool2d(2)))
        c = widths[0]
        self.mbstd = MinibatchStd(mbstd_group)
        self.conv = EqualConv2d(c + 1, c, 3)
        self.fc = EqualLinear(c * 16, c, activate=True)
        self.out = EqualLinear(c, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        level, alpha = self.stage()
        factor = images.shape[-1] >> (level + 2)
        x = F.avg_pool2d(images, factor) if factor > 1 else images
        h = self.from_rgb[level](x)
        if level > 0:
            h = self.blocks[level](h)
            if alpha < 1:
                h = torch.lerp(self.from_rgb[level - 1](F.avg_pool2d(x, 2)), h, alpha)
            for i in range(level - 1, 0, -1):
                h = self.blocks[i](h)
        h = self.conv(self.mbstd(h))
        scores = self.out(self.fc(h.flatten(1))).flatten()
        return scores + zero_touch(self) if self.training else scores


def _validate(config: dict) -> None:
    name = "ProGAN"
    resolution = power_of_two(name, config, "resolution", 8, 1024)
    initial = power_of_two(name, config, "initial_resolution", 4, 1024)
    if initial > resolution:
        raise ValueError(f"{name} config 'initial_resolution' ({initial}) must not exceed "
                         f"'resolution' ({resolution})")
    for key in ("latent_dim", "channel_base", "channel_max", "mbstd_group", "batch_size",
                "stage_steps"):
        positive_int(name, config, key)
    if not isinstance(config["fade_steps"], int) or isinstance(config["fade_steps"], bool) \
            or config["fade_steps"] < 0:
        raise ValueError(f"{name} config 'fade_steps' must be an integer >= 0, got "
                         f"{config['fade_steps']!r}")
    if not isinstance(config["reset_optimizer"], bool):
        raise ValueError(f"{name} config 'reset_optimizer' must be true or false, got "
                         f"{config['reset_optimizer']!r}")
    number_in(name, config, "lr", 0, low_open=True)
    for key in ("gp_weight", "drift"):
        number_in(name, config, key, 0)
    number_in(name, config, "ema_beta", 0, 1)  # 0: no EMA (1 is refused by the EMA itself)
    adam_betas(name, config)


@register_generator("progan", PROGAN_DEFAULTS, step_class=ProGANStep, choices=PROGAN_CHOICES)
def build_progan(config: dict) -> tuple[ProGenerator, ProDiscriminator]:
    _validate(config)
    generator = ProGenerator(config["resolution"], config["latent_dim"], config["channel_base"],
                             config["channel_max"])
    discriminator = ProDiscriminator(config["resolution"], config["channel_base"],
                                     config["channel_max"], config["mbstd_group"])
    return generator, discriminator
