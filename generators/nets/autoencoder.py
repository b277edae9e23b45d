"""Upsampler autoencoders: GAN artifact simulators (AutoGAN, Zhang et al. WIFS 2019).

An autoencoder trained on real photos whose decoder upsamples the way a GAN generator does.
Its reconstruction of a real photo is an aligned fake: the photo's content, size and history
with an upsampler's trace on top, so a detector trained on (photo, reconstruction) pairs can
only learn the trace. ``upsample`` picks the operator, so a zoo of simulators covers the
upsamplers of real GANs (AutoGAN, with one, misses StyleGAN's FIR upsampler: issue #3).

Generator (:class:`UpsamplerAutoencoder`): a 3x3 conv to ``channels[0]``; per stage a 4x4
stride-2 conv and a 3x3 conv, one width further down ``channels``; per stage back up a 2x
upsampler (:data:`UPSAMPLERS`) and a 3x3 conv; a 3x3 conv to RGB and tanh. LeakyReLU(0.2)
after every conv but the last and after learned upsamplers. No normalisation (per-image
statistics would make a tiled reconstruction differ from a whole one) and no skip connections
(they would carry the photo's fine detail past the upsamplers, whose trace is the point). Fully
convolutional: any image size goes in (reflection-padded to a multiple of 2**stages) and comes
out at that size, whole or in tiles.

Discriminator: CycleGAN's PatchGAN (``ndf``, ``n_layers_d``), built only when ``adv_weight`` >
0 (training: ``generators.steps_autoencoder``). Samples are named ``autoencoder-<upsample>-
x<2**stages>``: each simulator is a generator of its own in evaluation.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import LRELU_SLOPE, FIRBlur2d
from ..registry import register_generator
from ..steps_autoencoder import AutoencoderStep
from .cyclegan import PatchDiscriminator, init_weights
from .validation import adam_betas, number_in, positive_int

# Sized to train on 2 CPU cores in minutes: 2 stages (x4, as CycleGAN's generator) learn to
# reconstruct several times faster than 3 or 4, which want longer runs (a GPU).
AUTOENCODER_DEFAULTS = {
    "resolution": 64,  # side of the random training crops (images are never resized)
    "stages": 2,
    "upsample": "convT4",
    # Width per level, full resolution first; the first stages + 1 are used. A position of
    # level k covers 3 * 4**k image values: a code at least that wide can keep all detail.
    "channels": (32, 64, 128, 256, 512),
    "ndf": 32,
    "n_layers_d": 3,
    "batch_size": 4,
    "lr": 5e-4,
    "betas": (0.5, 0.999),
    "loss": "lsgan",
    "adv_weight": 0.05,  # times the adversarial loss, added to the L1 reconstruction loss
}


def _activation() -> nn.Module:
    return nn.LeakyReLU(LRELU_SLOPE, inplace=True)


def _conv3(channels_in: int, channels_out: int) -> list[nn.Module]:
    return [nn.Conv2d(channels_in, channels_out, 3, padding=1), _activation()]


def _interpolation(mode: str) -> Callable[[int, int], tuple[nn.Module, int]]:
    corners = {} if mode == "nearest" else {"align_corners": False}
    return lambda channels_in, _: (nn.Upsample(scale_factor=2, mode=mode, **corners),
                                   channels_in)


def _learned(make: Callable[[int, int], list[nn.Module]]
             ) -> Callable[[int, int], tuple[nn.Module, int]]:
    return lambda channels_in, channels_out: (
        nn.Sequential(*make(channels_in, channels_out), _activation()), channels_out)


# upsample name -> (channels in, channels out) -> (a 2x upsampler, the width it outputs).
UPSAMPLERS: dict[str, Callable[[int, int], tuple[nn.Module, int]]] = {
    "nearest": _interpolation("nearest"),
    "bilinear": _interpolation("bilinear"),
    "bicubic": _interpolation("bicubic"),
    # CycleGAN's transposed conv
    "convT3": _learned(lambda i, o: [nn.ConvTranspose2d(i, o, 3, 2, 1, output_padding=1)]),
    # DCGAN's
    "convT4": _learned(lambda i, o: [nn.ConvTranspose2d(i, o, 4, 2, 1)]),
    # StyleGAN's: zero-stuffing transposed conv, then the [1, 3, 3, 1] blur (pads as upfirdn2d)
    "convT4_blur": _learned(lambda i, o: [nn.ConvTranspose2d(i, o, 4, 2, 1),
                                          FIRBlur2d(o, pad=(2, 1), gain=2.0)]),
    # sub-pixel convolution (Shi et al. 2016)
    "pixelshuffle": _learned(lambda i, o: [nn.Conv2d(i, 4 * o, 3, padding=1),
                                           nn.PixelShuffle(2)]),
}


def halo(stages: int) -> int:
    """Pixels around a tile that can change its reconstruction (a bound on the receptive field's
    radius over every upsampler), rounded up to a multiple of 2**stages.

    Per level k (scale 2**k): the stride-2 conv reaches 2 px of its input, each 3x3 conv 1 px
    of its scale, an upsampler at most 2 px of the coarser scale plus the blur's 2 fine px;
    stem and RGB convs 1 px each: 2 + sum_k 11 * 2**k.
    """
    multiple = 2 ** stages
    reach = 2 + 11 * (multiple - 1)
    return math.ceil(reach / multiple) * multiple


class UpsamplerAutoencoder(nn.Module):
    """Images (N, 3, H, W) in [-1, 1], any H and W -> reconstructions of the same size."""

    def __init__(self, stages: int, upsample: str, channels: tuple[int, ...]):
        super().__init__()
        widths = channels[:stages + 1]
        encoder: list[nn.Module] = _conv3(3, widths[0])
        for width_in, width_out in zip(widths, widths[1:]):
            encoder += [nn.Conv2d(width_in, width_out, 4, 2, 1), _activation(),
                        *_conv3(width_out, width_out)]
        decoder: list[nn.Module] = []
        for width_in, width_out in zip(widths[:0:-1], widths[-2::-1]):
            upsampler, width = UPSAMPLERS[upsample](width_in, width_out)
            decoder += [upsampler, *_conv3(width, width_out)]
        decoder += [nn.Conv2d(widths[0], 3, 3, padding=1), nn.Tanh()]
        self.encoder = nn.Sequential(*encoder)
        self.decoder = nn.Sequential(*decoder)
        self.multiple = 2 ** stages
        self.halo = halo(stages)

    def _reconstruct_padded(self, images: torch.Tensor) -> torch.Tensor:
        """The nets on images whose sides are multiples of ``multiple``."""
        return self.decoder(self.encoder(images))

    def forward(self, images: torch.Tensor, tile: int | None = None) -> torch.Tensor:
        """The reconstruction of ``images``, cropped back to their size.

        With ``tile`` (a multiple of ``multiple``) images larger than it go through in tiles of
        ``tile`` px a side, each with ``halo`` px of context, in memory bounded by the tile
        instead of the image: the same result as whole, up to float rounding.
        """
        height, width = images.shape[-2:]
        padded = _pad_to_multiple(images, self.multiple)
        if tile is None or max(padded.shape[-2:]) <= tile:
            return self._reconstruct_padded(padded)[..., :height, :width]
        if tile % self.multiple:
            raise ValueError(f"tile must be a multiple of {self.multiple} (2**stages), got "
                             f"{tile}")
        out = torch.empty_like(padded)
        padded_height, padded_width = padded.shape[-2:]
        for top in range(0, padded_height, tile):
            for left in range(0, padded_width, tile):
                y0, x0 = max(top - self.halo, 0), max(left - self.halo, 0)
                y1 = min(top + tile + self.halo, padded_height)
                x1 = min(left + tile + self.halo, padded_width)
                window = self._reconstruct_padded(padded[..., y0:y1, x0:x1])
                out[..., top:top + tile, left:left + tile] = \
                    window[..., top - y0:top - y0 + tile, left - x0:left - x0 + tile]
        return out[..., :height, :width]


def _pad_to_multiple(images: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad bottom and right up to multiples of ``multiple``: by reflection, or by repeating
    the edge where an image is too small to reflect that far."""
    height, width = images.shape[-2:]
    pad_bottom, pad_right = -height % multiple, -width % multiple
    if not pad_bottom and not pad_right:
        return images
    mode = "reflect" if pad_bottom < height and pad_right < width else "replicate"
    return F.pad(images, (0, pad_right, 0, pad_bottom), mode=mode)


def init_autoencoder_weights(module: nn.Module) -> None:
    """He init for leaky ReLU, biases 0: the signal keeps its scale through a deep stack of
    unnormalised convs (CycleGAN's N(0, 0.02) would shrink it at every layer)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.kaiming_normal_(module.weight, a=LRELU_SLOPE, nonlinearity="leaky_relu")
        nn.init.zeros_(module.bias)


def _validate(config: dict) -> None:
    name = "autoencoder"
    stages = config["stages"]
    channels = config["channels"]
    if not (isinstance(channels, tuple) and len(channels) > stages
            and all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in channels)):
        raise ValueError(f"autoencoder config 'channels' must list at least stages + 1 = "
                         f"{stages + 1} positive widths (full resolution first; the first "
                         f"{stages + 1} are used), got {channels!r}: give more widths or fewer "
                         "stages")
    resolution = positive_int(name, config, "resolution")
    for key in ("ndf", "n_layers_d", "batch_size"):
        positive_int(name, config, key)
    number_in(name, config, "lr", 0, low_open=True)
    number_in(name, config, "adv_weight", 0)
    adam_betas(name, config)
    if resolution % 2 ** stages:
        raise ValueError(f"autoencoder config 'resolution' (the training crop) must be a "
                         f"multiple of 2**stages = {2 ** stages}, got {resolution}")
    smallest = 3 * 2 ** config["n_layers_d"]  # the PatchGAN's map must keep a patch
    if config["adv_weight"] > 0 and resolution < smallest:
        raise ValueError(f"autoencoder config 'resolution' {resolution} is too small for a "
                         f"PatchGAN with n_layers_d={config['n_layers_d']}: use a resolution "
                         f"of at least {smallest}, a smaller n_layers_d, or adv_weight=0")


@register_generator("autoencoder", AUTOENCODER_DEFAULTS, step_class=AutoencoderStep,
                    crop="random",
                    choices={"upsample": tuple(UPSAMPLERS), "stages": (1, 2, 3, 4),
                             "loss": ("lsgan", "nonsaturating", "hinge")},
                    label=lambda c: f"autoencoder-{c['upsample']}-x{2 ** c['stages']}")
def build_autoencoder(config: dict) -> dict[str, nn.Module]:
    _validate(config)
    generator = UpsamplerAutoencoder(config["stages"], config["upsample"], config["channels"])
    generator.apply(init_autoencoder_weights)
    nets: dict[str, nn.Module] = {"generator": generator}
    if config["adv_weight"] > 0:
        nets["discriminator"] = PatchDiscriminator(config["ndf"], config["n_layers_d"])
        nets["discriminator"].apply(init_weights)
    return nets
