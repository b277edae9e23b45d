"""BigGAN (Brock et al. 2019) at a size that trains on a CPU, after ajbrock/BigGAN-PyTorch.

Class-conditional on the training data's classes (corpus subfolders or a manifest field, as
for ``cgan``; ``num_classes`` is set by the trainer from the data).

Generator: the latent z (``z_dim``) is split into equal chunks, one for the input linear layer
(-> 4x4 maps) and one per residual up-block (hierarchical latent). A shared class embedding
(``shared_dim``) is concatenated with each block's chunk; each conditional BatchNorm of that
block turns the result into a per-channel gain (1 + linear) and bias (linear). Up-block:
cBN-ReLU-nearest 2x upsampling-conv3x3-cBN-ReLU-conv3x3, plus the upsampled input through a
1x1 conv. One SAGAN self-attention layer at the ``attention`` resolution; then BN-ReLU-conv3x3
to RGB and tanh. Nearest-neighbour upsampling followed by 3x3 convs is this family's upsampler.

Discriminator: residual down-blocks (ReLU-conv3x3-ReLU-conv3x3-2x2 average pool, 1x1 conv
skip; the first block has no leading ReLU and pools before its skip conv), the same attention
resolution, ReLU, sum over positions, then a linear logit plus the projection <embed(y), h>
(Miyato & Koyama 2018).

Widths: G starts at ``g_ch`` * 2^(n-1) channels at 4x4 (n blocks) and halves them per block
down to ``g_ch``; D doubles from ``d_ch`` up to 4 ``d_ch``. Every convolution, linear layer and
D's class embedding is spectrally normalised (the power iteration vectors are buffers, saved
with the weights); weights start orthogonal.

Training (``generators.steps_biggan``): hinge loss, ``d_steps`` D updates per G update, Adam
with betas (0, 0.999) and D's lr four times G's (TTUR). The paper's 5e-5 / 2e-4 suit batches of
2048; at a CPU's batch of 16 the same 1:4 ratio at 1e-4 / 4e-4 gets colours and layout of
the data within a few hundred steps without collapse. The EMA generator copies G's BatchNorm statistics (BigGAN re-estimates "standing
statistics" for it instead).

Truncation: ``forward(z, labels, truncation=psi)`` maps each latent value through the normal
CDF onto the normal distribution truncated to [-psi, psi] (inverse-CDF sampling): the same
distribution as BigGAN's "resample values beyond the threshold", but a deterministic, monotone
function of z, so a seed still names its image and nearby latents stay nearby.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ..registry import register_generator
from ..steps_biggan import BigGANStep
from .dcgan import require_labels
from .validation import adam_betas, number_in, positive_int, power_of_two

BIGGAN_DEFAULTS = {
    "resolution": 32,
    "num_classes": 10,  # set from the training data's classes
    "z_dim": 120,  # divisible into 1 + log2(R / 4) chunks for R = 16 ... 128 (3 to 6)
    "shared_dim": 32,
    "g_ch": 32,
    "d_ch": 32,
    "attention": 16,  # the resolution of the self-attention layer in G and D (0: none)
    "batch_size": 16,
    "loss": "hinge",
    "lr": 1e-4,  # G's; D's is lr_d (see the module docstring)
    "lr_d": 4e-4,
    "betas": (0.0, 0.999),
    "d_steps": 2,  # D updates per G update, each on its own share of the batch
    "ortho_reg": 1e-4,
    "ema_beta": 0.999,  # 0: no EMA generator
    "ema_rampup": True,
}
BIGGAN_CHOICES = {"loss": ("hinge", "nonsaturating")}


def orthogonal_sn(module: nn.Module) -> nn.Module:
    """``module`` with BigGAN's init (orthogonal weight, zero bias), then spectrally
    normalised."""
    nn.init.orthogonal_(module.weight)
    if getattr(module, "bias", None) is not None:
        nn.init.zeros_(module.bias)
    return spectral_norm(module)


def sn_conv(in_channels: int, out_channels: int, kernel_size: int) -> nn.Module:
    """A spectrally normalised 'same' convolution."""
    return orthogonal_sn(nn.Conv2d(in_channels, out_channels, kernel_size,
                                   padding=kernel_size // 2))


def sn_linear(in_features: int, out_features: int) -> nn.Module:
    return orthogonal_sn(nn.Linear(in_features, out_features))


def truncated_latents(z: torch.Tensor, threshold: float) -> torch.Tensor:
    """Standard-normal ``z`` mapped element-wise onto N(0, 1) truncated to [-threshold,
    threshold]: u = Phi(z) is spread over [Phi(-t), Phi(t)] and mapped back by Phi^-1."""
    if not threshold > 0:
        raise ValueError(f"BigGAN truncation is the latent's threshold, a number > 0; got "
                         f"{threshold!r}")
    z64 = z.double()
    low = torch.special.ndtr(torch.tensor(-float(threshold), dtype=torch.float64))
    u = low + torch.special.ndtr(z64) * (1 - 2 * low)
    return torch.special.ndtri(u).clamp(-threshold, threshold).to(z.dtype)


class ConditionalBatchNorm(nn.Module):
    """BatchNorm without affine parameters whose per-channel gain and bias are linear functions
    of a conditioning vector (shared class embedding + the block's latent chunk)."""

    def __init__(self, channels: int, condition_dim: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.gain = sn_linear(condition_dim, channels)
        self.bias = sn_linear(condition_dim, channels)

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        gain = 1 + self.gain(condition)[:, :, None, None]
        return self.norm(x) * gain + self.bias(condition)[:, :, None, None]


class SelfAttention(nn.Module):
    """SAGAN self-attention (Zhang et al. 2019): x + gamma * o(softmax(theta^T phi) g), with
    keys and values 2x2-max-pooled and gamma starting at 0 (the layer starts as identity)."""

    def __init__(self, channels: int):
        super().__init__()
        if channels < 8:
            raise ValueError(f"self-attention needs 8 or more channels, got {channels}")
        self.theta = sn_conv(channels, channels // 8, 1)
        self.phi = sn_conv(channels, channels // 8, 1)
        self.g = sn_conv(channels, channels // 2, 1)
        self.o = sn_conv(channels // 2, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        theta = self.theta(x).flatten(2)  # (N, C/8, HW)
        phi = F.max_pool2d(self.phi(x), 2).flatten(2)  # (N, C/8, HW/4)
        g = F.max_pool2d(self.g(x), 2).flatten(2)  # (N, C/2, HW/4)
        attention = torch.softmax(theta.transpose(1, 2) @ phi, dim=-1)  # (N, HW, HW/4)
        out = (g @ attention.transpose(1, 2)).view(n, c // 2, h, w)
        return x + self.gamma * self.o(out)


class UpBlock(nn.Module):
    """Residual 2x up-block conditioned through its two conditional BatchNorms."""

    def __init__(self, in_channels: int, out_channels: int, condition_dim: int):
        super().__init__()
        self.bn1 = ConditionalBatchNorm(in_channels, condition_dim)
        self.conv1 = sn_conv(in_channels, out_channels, 3)
        self.bn2 = ConditionalBatchNorm(out_channels, condition_dim)
        self.conv2 = sn_conv(out_channels, out_channels, 3)
        self.skip = sn_conv(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        h = F.interpolate(F.relu(self.bn1(x, condition)), scale_factor=2.0)
        h = self.conv2(F.relu(self.bn2(self.conv1(h), condition)))
        return h + self.skip(F.interpolate(x, scale_factor=2.0))


class DownBlock(nn.Module):
    """Residual 2x down-block; ``first`` skips the leading ReLU (its input is the image)."""

    def __init__(self, in_channels: int, out_channels: int, *, first: bool):
        super().__init__()
        self.conv1 = sn_conv(in_channels, out_channels, 3)
        self.conv2 = sn_conv(out_channels, out_channels, 3)
        self.skip = sn_conv(in_channels, out_channels, 1)
        self.first = first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.first else F.relu(x)
        h = F.avg_pool2d(self.conv2(F.relu(self.conv1(h))), 2)
        skip = self.skip(F.avg_pool2d(x, 2)) if self.first else F.avg_pool2d(self.skip(x), 2)
        return h + skip


def _num_blocks(resolution: int) -> int:
    return int(math.log2(resolution)) - 2


def _attention_index(resolution: int, attention: int) -> int | None:
    """Which block's output (at 8, 16, ..., R in G) gets the attention layer; None for 0."""
    if attention == 0:
        return None
    sizes = [resolution // 2 ** i for i in range(_num_blocks(resolution) - 1, -1, -1)]
    if attention not in sizes:
        raise ValueError(f"BigGAN config 'attention' must be 0 (none) or one of the block "
                         f"resolutions {sizes} at resolution {resolution}, got {attention!r}")
    return sizes.index(attention)


class BigGANGenerator(nn.Module):
    """Latents (N, z_dim) and class indices (N,) -> images (N, 3, R, R) in [-1, 1]."""

    def __init__(self, resolution: int, z_dim: int, ch: int, shared_dim: int,
                 num_classes: int, attention: int):
        super().__init__()
        n = _num_blocks(resolution)
        if z_dim % (n + 1):
            raise ValueError(f"BigGAN config 'z_dim' must split into {n + 1} equal chunks at "
                             f"resolution {resolution} (1 + {n} blocks), got {z_dim}; e.g. 120")
        self.z_dim, self.resolution, self.chunk = z_dim, resolution, z_dim // (n + 1)
        widths = [ch * 2 ** max(n - 1 - i, 0) for i in range(n + 1)]  # 4x4, then each block
        self.shared = nn.Embedding(num_classes, shared_dim)
        nn.init.orthogonal_(self.shared.weight)
        self.linear = sn_linear(self.chunk, widths[0] * 16)
        self.blocks = nn.ModuleList(UpBlock(a, b, shared_dim + self.chunk)
                                    for a, b in zip(widths[:-1], widths[1:]))
        self.attention_after = _attention_index(resolution, attention)
        self.attention = (SelfAttention(widths[self.attention_after + 1])
                          if self.attention_after is not None else None)
        self.out = nn.Sequential(nn.BatchNorm2d(widths[-1]), nn.ReLU(), sn_conv(widths[-1], 3, 3),
                                 nn.Tanh())

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None,
                truncation: float | None = None) -> torch.Tensor:
        if truncation is not None:
            z = truncated_latents(z, truncation)
        chunks = z.flatten(1).split(self.chunk, dim=1)
        shared = self.shared(require_labels(labels))
        h = self.linear(chunks[0]).view(z.shape[0], -1, 4, 4)
        for index, (block, chunk) in enumerate(zip(self.blocks, chunks[1:])):
            h = block(h, torch.cat([shared, chunk], dim=1))
            if index == self.attention_after:
                h = self.attention(h)
        return self.out(h)


class BigGANDiscriminator(nn.Module):
    """Images (N, 3, R, R) and class indices (N,) -> real/fake logits (N,)."""

    def __init__(self, resolution: int, ch: int, num_classes: int, attention: int):
        super().__init__()
        n = _num_blocks(resolution)
        widths = [3] + [ch * 2 ** min(i, 2) for i in range(n)]
        self.blocks = nn.ModuleList(DownBlock(a, b, first=i == 0)
                                    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])))
        index = _attention_index(resolution, attention)
        # G's block i ends at R / 2^(n-1-i); D's block j ends at R / 2^(j+1).
        self.attention_after = None if index is None else n - 2 - index
        self.attention = None
        if self.attention_after is not None:
            if self.attention_after < 0:
                raise ValueError(f"BigGAN config 'attention' {attention}: D has no block ending "
                                 f"at resolution {resolution}; pick a lower one")
            self.attention = SelfAttention(widths[self.attention_after + 1])
        self.linear = sn_linear(widths[-1], 1)
        self.embed = orthogonal_sn(nn.Embedding(num_classes, widths[-1]))
        self.resolution = resolution

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = images
        for index, block in enumerate(self.blocks):
            h = block(h)
            if index == self.attention_after:
                h = self.attention(h)
        pooled = F.relu(h).sum(dim=(2, 3))
        projection = (self.embed(require_labels(labels)) * pooled).sum(dim=1)
        return self.linear(pooled).flatten() + projection


def _check_training_options(config: dict) -> None:
    family = "BigGAN"
    for key in ("batch_size", "d_steps"):
        positive_int(family, config, key)
    if config["batch_size"] % config["d_steps"]:
        raise ValueError(f"BigGAN splits each batch into d_steps={config['d_steps']} D batches: "
                         f"batch_size must be a multiple of it, got {config['batch_size']}")
    number_in(family, config, "lr", 0, low_open=True)
    number_in(family, config, "lr_d", 0, low_open=True)
    number_in(family, config, "ortho_reg", 0)
    number_in(family, config, "ema_beta", 0, 1)  # 0: no EMA (1 is refused by the EMA itself)
    adam_betas(family, config)


@register_generator("biggan", BIGGAN_DEFAULTS, step_class=BigGANStep, dataset="labelled",
                    choices=BIGGAN_CHOICES)
def build_biggan(config: dict) -> tuple[BigGANGenerator, BigGANDiscriminator]:
    family = "BigGAN"
    _check_training_options(config)
    resolution = power_of_two(family, config, "resolution", 16, 256)
    attention = config["attention"]
    if not isinstance(attention, int) or isinstance(attention, bool):
        raise ValueError(f"BigGAN config 'attention' must be a resolution or 0, got {attention!r}")
    num_classes = positive_int(family, config, "num_classes")
    generator = BigGANGenerator(resolution, positive_int(family, config, "z_dim"),
                                positive_int(family, config, "g_ch"),
                                positive_int(family, config, "shared_dim"), num_classes, attention)
    discriminator = BigGANDiscriminator(resolution, positive_int(family, config, "d_ch"),
                                        num_classes, attention)
    return generator, discriminator
