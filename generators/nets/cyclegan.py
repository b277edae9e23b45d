"""CycleGAN (Zhu et al. 2017) as in junyanz/pytorch-CycleGAN-and-pix2pix, sized by config.

Four nets: ``G_AB`` translates domain A to B, ``G_BA`` B to A; ``D_A`` judges domain-A images,
``D_B`` domain-B images (so ``D_B`` sees ``G_AB``'s output).

Generator (ResNet): reflection pad + 7x7 conv to ngf, two stride-2 3x3 convs (ngf -> 2 ngf ->
4 ngf), ``n_blocks`` residual blocks (reflection-padded 3x3 convs), two stride-2 3x3
transposed convs with output_padding 1 back to ngf, reflection pad + 7x7 conv to RGB + tanh.
InstanceNorm without affine parameters and ReLU after every conv but the last; convs have
biases (the norm has none). Its transposed convolutions are this family's upsampler.

``input_skip`` (off by default, so the network is the reference's) adds a 1x1 conv of the input,
starting as the identity, before the tanh. The first InstanceNorm makes the reference
generator blind to its input's mean colour and contrast (a constant added to, or a factor on,
the input is normalised away), which at 256 px costs little but on 32 px patches, where those
carry most of what tells one patch from another, sends every translation to the same tone: the
demo's colour-to-grey run (32 px, 300 steps, batch 1) ended at diversity ratio 0.67 with 31% of
real neighbours distinct, collapsed, and 1.23 / 52% with the skip (a translator that outputs the
exact grey of each input scores 1.20 / 59% on that measure).

Discriminator (70x70 PatchGAN with ``n_layers_d`` = 3): 4x4 convs, stride 2 with LeakyReLU(0.2)
(InstanceNorm on all but the first) doubling channels up to 8 ndf, one stride-1 conv, and a
stride-1 conv to one channel: a map of real/fake scores, one per overlapping patch.

Weights start from N(0, 0.02), biases from 0.
"""

from __future__ import annotations

from torch import nn

from ..registry import register_generator
from ..steps_cyclegan import CycleGANStep
from .validation import adam_betas, boolean, number_in, positive_int, power_of_two

CYCLEGAN_DEFAULTS = {
    "resolution": 64,
    "ngf": 32,
    "ndf": 64,
    "n_blocks": None,  # None: 6 residual blocks up to 128 px, 9 above
    "n_layers_d": 3,
    "input_skip": False,
    "batch_size": 1,
    "lr": 2e-4,
    "betas": (0.5, 0.999),
    "loss": "lsgan",
    "lambda_cycle": 10.0,
    "lambda_identity": 0.5,  # times lambda_cycle
    "pool_size": 50,
    "total_steps": 20000,  # the lr reaches 0 here ...
    "decay_start": 0.5,  # ... falling linearly from this fraction of total_steps on
}
# The losses CycleGANStep applies: wgan-gp needs a gradient penalty, which it does not add.
CYCLEGAN_CHOICES = {"loss": ("nonsaturating", "hinge", "lsgan")}


def _conv_norm_relu(in_channels: int, out_channels: int, **conv: int) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, **conv), nn.InstanceNorm2d(out_channels),
            nn.ReLU(inplace=True)]


class ResnetBlock(nn.Module):
    """x + (reflect-pad, conv3x3, norm, ReLU, reflect-pad, conv3x3, norm)(x)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), *_conv_norm_relu(channels, channels, kernel_size=3),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels),
        )

    def forward(self, x):
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """Images (N, 3, R, R) in [-1, 1] -> translated images (N, 3, R, R) in [-1, 1].

    With ``input_skip`` a 1x1 conv of the input, starting as the identity, is added before the
    tanh (see CYCLEGAN_DEFAULTS)."""

    def __init__(self, ngf: int, n_blocks: int, input_skip: bool = False):
        super().__init__()
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), *_conv_norm_relu(3, ngf, kernel_size=7)]
        for m in (1, 2):
            layers += _conv_norm_relu(ngf * m, ngf * m * 2, kernel_size=3, stride=2, padding=1)
        layers += [ResnetBlock(ngf * 4) for _ in range(n_blocks)]
        for m in (4, 2):
            layers += [nn.ConvTranspose2d(ngf * m, ngf * m // 2, 3, stride=2, padding=1,
                                          output_padding=1),
                       nn.InstanceNorm2d(ngf * m // 2), nn.ReLU(inplace=True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, 3, 7)]
        self.net = nn.Sequential(*layers)
        self.input_skip = nn.Conv2d(3, 3, 1) if input_skip else None

    def reset_input_skip(self) -> None:
        """Start the input skip as the identity map (after :func:`init_weights`)."""
        if self.input_skip is not None:
            nn.init.dirac_(self.input_skip.weight)
            nn.init.zeros_(self.input_skip.bias)

    def forward(self, images):
        out = self.net(images)
        if self.input_skip is not None:
            out = out + self.input_skip(images)
        return out.tanh()


class PatchDiscriminator(nn.Module):
    """Images (N, in_channels, R, R) -> patch scores (N, 1, h, w); 70x70 receptive field at
    n_layers 3 (pix2pix feeds it an input and an output image stacked: 6 channels)."""

    def __init__(self, ndf: int, n_layers: int = 3, in_channels: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1),
                                   nn.LeakyReLU(0.2, inplace=True)]
        channels = ndf
        for n in range(1, n_layers + 1):
            out = ndf * min(2 ** n, 8)
            layers += [nn.Conv2d(channels, out, 4, stride=2 if n < n_layers else 1, padding=1),
                       nn.InstanceNorm2d(out), nn.LeakyReLU(0.2, inplace=True)]
            channels = out
        layers.append(nn.Conv2d(channels, 1, 4, stride=1, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, images):
        return self.net(images)


def init_weights(module: nn.Module) -> None:
    """Conv weights N(0, 0.02), biases 0 (the reference's ``init_type='normal'``)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        nn.init.zeros_(module.bias)


def _validate(config: dict) -> int:
    """Check the config; return the number of residual blocks."""
    name = "CycleGAN"
    resolution = power_of_two(name, config, "resolution", 32, 1024)
    for key in ("ngf", "ndf", "n_layers_d", "batch_size", "pool_size", "total_steps"):
        positive_int(name, config, key)
    number_in(name, config, "lr", 0, low_open=True)
    number_in(name, config, "decay_start", 0, 1)
    number_in(name, config, "lambda_cycle", 0)
    number_in(name, config, "lambda_identity", 0)
    adam_betas(name, config)
    boolean(name, config, "input_skip")
    if config["n_blocks"] is None:
        return 6 if resolution <= 128 else 9
    return positive_int(name, config, "n_blocks")


@register_generator("cyclegan", CYCLEGAN_DEFAULTS, step_class=CycleGANStep, dataset="paired",
                    choices=CYCLEGAN_CHOICES)
def build_cyclegan(config: dict) -> dict[str, nn.Module]:
    n_blocks = _validate(config)
    nets = {
        "G_AB": ResnetGenerator(config["ngf"], n_blocks, config["input_skip"]),
        "G_BA": ResnetGenerator(config["ngf"], n_blocks, config["input_skip"]),
        "D_A": PatchDiscriminator(config["ndf"], config["n_layers_d"]),
        "D_B": PatchDiscriminator(config["ndf"], config["n_layers_d"]),
    }
    for net in nets.values():
        net.apply(init_weights)
    nets["G_AB"].reset_input_skip()
    nets["G_BA"].reset_input_skip()
    return nets
