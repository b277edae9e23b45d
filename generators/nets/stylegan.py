"""StyleGAN2 (Karras et al. 2020, config F without the large-scale tricks), sized for a CPU.

Generator = mapping network + synthesis network:

- mapping: z (normalised to unit second moment) -> ``mapping_layers`` x (FC + leaky ReLU,
  equalised lr, lr multiplier 0.01) -> w; a running mean ``w_avg`` of w is tracked during
  training and truncation pulls w towards it: w' = w_avg + psi (w - w_avg).
- synthesis: a learned constant 4x4 input, then one block per resolution 4, 8, ..., R; each
  block (but the first) upsamples 2x in its first modulated 3x3 conv (transposed conv + FIR
  [1, 3, 3, 1] blur) and adds a second one; every conv gets per-pixel noise (strength starts at
  0), bias and leaky ReLU. Skip architecture: each block has a 1x1 modulated ToRGB (no
  demodulation) whose output is added to the FIR-upsampled RGB of the block before.
  Each layer reads its own w from ``ws`` (N, num_ws, w_dim), which is what style mixing uses.

Discriminator (resnet architecture): FromRGB 1x1 at R, then per resolution R, ..., 8 a residual
block (3x3 conv, 3x3 conv with FIR downsampling; 1x1 FIR-downsampled skip; sum scaled by
sqrt(0.5)), then at 4x4: minibatch std, 3x3 conv, FC, FC -> one logit.

Channels at resolution r: min(channel_base / r, channel_max) in both nets.

Defaults for small data (issue 15; the bundled corpus, about 1,400 train patches at 32 px,
the diagnostics of ``generators.diagnostics`` against 512 reals): with the paper's lr 0.0025
and no augmentation D wins within 150 steps and the samples drift to the data's dominant red
(diversity ratio 0.62, 33% distinct neighbours; R1 gamma 1: 0.67 / 38%). DiffAugment
(colour, translation, cutout; Zhao et al. 2020) keeps D from memorising the few patches
(0.72 / 34%, and with ``channel_max`` 64 for twice the steps, 350 steps: 0.65 / 47%), and lr
0.001 on top reached 0.74 / 50% at 350 steps. StyleGAN still needs far more steps than a CPU
demo gives it: early samples are noisy, and these figures sit near the collapse bars.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..layers import (EqualConv2d, EqualLinear, FIRResample2d, MinibatchStd, ModulatedConv2d,
                      NoiseInjection, bias_leaky_relu, normalize_2nd_moment)
from ..registry import register_generator
from ..steps_stylegan import StyleGANStep
from .validation import adam_betas, augment_policy, number_in, positive_int, power_of_two

STYLEGAN_DEFAULTS = {
    # architecture
    "resolution": 32,
    "z_dim": 128,
    "w_dim": 128,
    "mapping_layers": 2,
    "mapping_lr_mul": 0.01,
    "w_avg_beta": 0.995,
    "channel_base": 2048,  # channels at resolution r: min(channel_base / r, channel_max)
    "channel_max": 128,
    "mbstd_group": 4,
    # training: the small-resolution ("cifar") settings of stylegan2-ada with a CPU-sized batch,
    # a lower lr and DiffAugment for small data (issue 15; figures in the docstring)
    "batch_size": 16,
    "lr": 0.001,
    "betas": (0.0, 0.99),
    "loss": "nonsaturating",
    "r1_gamma": 0.01,
    "r1_interval": 16,
    "pl_weight": 0.0,  # 2.0 in the paper; off by default: it costs a double backward on a CPU
    "pl_interval": 4,
    "style_mixing": 0.9,
    "ema_kimg": 10.0,  # half-life of the generator EMA in thousands of images
    "ema_rampup": 0.05,  # the half-life is at most this fraction of the images seen so far
    "diffaugment": "color,translation,cutout",  # "" turns it off (generators.augment)
}
# The losses StyleGANStep applies: wgan-gp needs a gradient penalty, which it does not add.
STYLEGAN_CHOICES = {"loss": ("nonsaturating", "hinge", "lsgan")}


def channels_at(resolution: int, channel_base: int, channel_max: int) -> int:
    return max(1, min(channel_base // resolution, channel_max))


class MappingNetwork(nn.Module):
    """z (N, z_dim) -> w (N, w_dim); tracks ``w_avg`` for truncation."""

    def __init__(self, z_dim: int, w_dim: int, num_layers: int, lr_mul: float = 0.01,
                 w_avg_beta: float = 0.995):
        super().__init__()
        widths = [z_dim] + [w_dim] * num_layers
        self.layers = nn.Sequential(*(EqualLinear(a, b, lr_mul=lr_mul, activate=True)
                                      for a, b in zip(widths[:-1], widths[1:])))
        self.w_avg_beta = w_avg_beta
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor, truncation: float = 1.0, *,
                update_w_avg: bool = False) -> torch.Tensor:
        w = self.layers(normalize_2nd_moment(z))
        if update_w_avg:
            self.w_avg.copy_(w.detach().float().mean(0).lerp(self.w_avg, self.w_avg_beta))
        if truncation != 1.0:
            w = self.w_avg.lerp(w, truncation)
        return w


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (upsampling 2x to ``resolution`` with ``up``) + noise + bias + lrelu."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, *,
                 up: bool = False):
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, 3, w_dim,
                                    up_from=resolution // 2 if up else None)
        self.noise = NoiseInjection(resolution)
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return bias_leaky_relu(self.noise(self.conv(x, w)), self.bias)


class ToRGB(nn.Module):
    """Modulated 1x1 conv to RGB without demodulation, plus bias."""

    def __init__(self, in_channels: int, w_dim: int):
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, 3, 1, w_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(3))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.conv(x, w) + self.bias.view(1, -1, 1, 1)


class SynthesisBlock(nn.Module):
    """One resolution of the synthesis network: (x, rgb) at r/2 -> (x, rgb) at r.

    The 4x4 block starts from the learned constant; ``ws`` (N, num_conv + 1, w_dim) holds one
    w per conv and one for ToRGB (which shares its w with the next block's first conv).
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int):
        super().__init__()
        self.resolution = resolution
        if resolution == 4:
            self.const = nn.Parameter(torch.randn(out_channels, 4, 4))
            self.convs = nn.ModuleList([SynthesisLayer(out_channels, out_channels, w_dim, 4)])
            self.upsample_rgb = None
        else:
            self.convs = nn.ModuleList([
                SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=True),
                SynthesisLayer(out_channels, out_channels, w_dim, resolution),
            ])
            self.upsample_rgb = FIRResample2d.upsample(resolution // 2)
        self.torgb = ToRGB(out_channels, w_dim)
        self.num_conv = len(self.convs)

    def forward(self, x: torch.Tensor | None, rgb: torch.Tensor | None,
                ws: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.upsample_rgb is None:
            x = self.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
        for i, conv in enumerate(self.convs):
            x = conv(x, ws[:, i])
        y = self.torgb(x, ws[:, self.num_conv])
        rgb = y if rgb is None else self.upsample_rgb(rgb) + y
        return x, rgb


class SynthesisNetwork(nn.Module):
    """ws (N, num_ws, w_dim) -> images (N, 3, R, R)."""

    def __init__(self, resolution: int, w_dim: int, channel_base: int, channel_max: int):
        super().__init__()
        resolutions = [2 ** i for i in range(2, int(math.log2(resolution)) + 1)]
        widths = [channels_at(r, channel_base, channel_max) for r in resolutions]
        self.blocks = nn.ModuleList(
            SynthesisBlock(widths[max(i - 1, 0)], widths[i], w_dim, r)
            for i, r in enumerate(resolutions))
        self.num_ws = sum(block.num_conv for block in self.blocks) + 1

    def forward(self, ws: torch.Tensor) -> torch.Tensor:
        x = rgb = None
        index = 0
        for block in self.blocks:
            x, rgb = block(x, rgb, ws[:, index:index + block.num_conv + 1])
            index += block.num_conv
        return rgb


class StyleGenerator(nn.Module):
    """Latents z (N, z_dim) -> images (N, 3, R, R), about [-1, 1] (not clamped).

    ``forward(z, truncation)`` gives every layer the same (truncated) w. Training passes
    its options through ``forward`` too, so a DDP-wrapped generator syncs its gradients:
    ``mix=(z2, cutoff)`` gives the layers from ``cutoff`` on the w of z2 (style mixing),
    ``update_w_avg`` moves the tracked mean w, and ``return_ws`` also returns the per-layer
    ws (N, num_ws, w_dim) the image was made from (for the path-length penalty).
    """

    def __init__(self, resolution: int, z_dim: int, w_dim: int, mapping_layers: int,
                 channel_base: int, channel_max: int, mapping_lr_mul: float = 0.01,
                 w_avg_beta: float = 0.995):
        super().__init__()
        self.z_dim = z_dim
        self.w_dim = w_dim
        self.resolution = resolution
        self.mapping = MappingNetwork(z_dim, w_dim, mapping_layers, mapping_lr_mul, w_avg_beta)
        self.synthesis = SynthesisNetwork(resolution, w_dim, channel_base, channel_max)
        self.num_ws = self.synthesis.num_ws

    def broadcast(self, w: torch.Tensor) -> torch.Tensor:
        """(N, w_dim) -> (N, num_ws, w_dim): the same w for every layer."""
        return w.unsqueeze(1).expand(-1, self.num_ws, -1)

    def forward(self, z: torch.Tensor, truncation: float = 1.0, *,
                mix: tuple[torch.Tensor, int] | None = None, update_w_avg: bool = False,
                return_ws: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        ws = self.broadcast(self.mapping(z, truncation, update_w_avg=update_w_avg))
        if mix is not None:
            mix_z, cutoff = mix
            mixed = self.broadcast(self.mapping(mix_z, truncation))
            ws = torch.cat([ws[:, :cutoff], mixed[:, cutoff:]], dim=1)
        images = self.synthesis(ws)
        return (images, ws) if return_ws else images


class DiscriminatorBlock(nn.Module):
    """Residual block at ``resolution``: conv3x3, conv3x3 + FIR down; 1x1 FIR-down skip."""

    def __init__(self, in_channels: int, out_channels: int, resolution: int):
        super().__init__()
        self.conv0 = EqualConv2d(in_channels, in_channels, 3)
        self.conv1 = EqualConv2d(in_channels, out_channels, 3, down_from=resolution)
        self.skip = EqualConv2d(in_channels, out_channels, 1, bias=False, activate=False,
                                down_from=resolution)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.skip(x) + self.conv1(self.conv0(x))) * math.sqrt(0.5)


class StyleDiscriminator(nn.Module):
    """Images (N, 3, R, R) -> logits (N,)."""

    def __init__(self, resolution: int, channel_base: int, channel_max: int,
                 mbstd_group: int = 4):
        super().__init__()
        self.resolution = resolution
        resolutions = [2 ** i for i in range(int(math.log2(resolution)), 2, -1)]  # R, ..., 8
        width = {r: channels_at(r, channel_base, channel_max) for r in resolutions + [4]}
        self.from_rgb = EqualConv2d(3, width[resolution], 1)
        self.blocks = nn.Sequential(*(DiscriminatorBlock(width[r], width[r // 2], r)
                                      for r in resolutions))
        c = width[4]
        self.mbstd = MinibatchStd(mbstd_group)
        self.conv = EqualConv2d(c + 1, c, 3)
        self.fc = EqualLinear(c * 16, c, activate=True)
        self.out = EqualLinear(c, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.mbstd(self.blocks(self.from_rgb(images))))
        return self.out(self.fc(x.flatten(1))).flatten()


def _validate(config: dict) -> None:
    name = "StyleGAN"
    power_of_two(name, config, "resolution", 8, 1024)
    for key in ("z_dim", "w_dim", "mapping_layers", "channel_base", "channel_max",
                "mbstd_group", "batch_size", "r1_interval", "pl_interval"):
        positive_int(name, config, key)
    number_in(name, config, "lr", 0, low_open=True)
    number_in(name, config, "mapping_lr_mul", 0, low_open=True)
    number_in(name, config, "w_avg_beta", 0, 1)
    number_in(name, config, "style_mixing", 0, 1)
    number_in(name, config, "ema_rampup", 0)
    for key in ("r1_gamma", "pl_weight", "ema_kimg"):
        number_in(name, config, key, 0)
    adam_betas(name, config)
    augment_policy(name, config)


@register_generator("stylegan", STYLEGAN_DEFAULTS, step_class=StyleGANStep,
                    choices=STYLEGAN_CHOICES)
def build_stylegan(config: dict) -> tuple[StyleGenerator, StyleDiscriminator]:
    _validate(config)
    generator = StyleGenerator(config["resolution"], config["z_dim"], config["w_dim"],
                               config["mapping_layers"], config["channel_base"],
                               config["channel_max"], config["mapping_lr_mul"],
                               config["w_avg_beta"])
    discriminator = StyleDiscriminator(config["resolution"], config["channel_base"],
                                       config["channel_max"], config["mbstd_group"])
    return generator, discriminator
