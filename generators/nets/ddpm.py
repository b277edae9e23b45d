"""A small DDPM (Ho et al. 2020): the U-Net that predicts the noise, sampled by DDIM.

U-Net (the paper's CIFAR-10 layout, sized by config): a sinusoidal embedding of the timestep
through a 2-layer MLP (SiLU) to 4 x ``channels``; a 3x3 conv in; per level of
``channel_mults`` ``num_res_blocks`` residual blocks (GroupNorm, SiLU, 3x3 conv, the timestep
embedding added per channel, GroupNorm, SiLU, dropout, 3x3 conv; 1x1 conv on the shortcut when
the width changes), single-head self-attention after each block at ``attention_resolution``
(None: nowhere), and a stride-2 3x3 conv down between levels; a middle of block + attention +
block; the mirror path up with one block more per level, each taking the matching down-path
activation concatenated, and nearest-neighbour 2x upsampling + 3x3 conv between levels (this
family's upsampler); GroupNorm, SiLU, 3x3 conv out. The last conv of each residual branch,
the attention output and the conv out start at zero, so each branch starts switched off.

:class:`DiffusionGenerator` (the pair's ``generator``) holds the U-Net with its noise schedule
(``generators.diffusion``) and is the zoo's latent generator: its latent is the starting noise
x_T (``z_dim`` = 3 R^2) and ``forward(z)`` runs DDIM with ``sampling_steps`` steps and ``eta``;
with eta > 0 each image's extra noise comes from a generator seeded by its own latent, so the
seed alone still names the image. ``forward(x_t, t)`` is the U-Net's noise prediction, the
call training makes (through DDP under torchrun). ``preview_steps`` DDIM steps (None: as many
as ``sampling_steps``) draw the trainer's sample grids and diagnostics, which run on the CPU
every few dozen steps.
"""

from __future__ import annotations

import hashlib
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..diffusion import BETA_SCHEDULES, NoiseSchedule, ddim_sample
from ..registry import register_generator
from ..steps_ddpm import DiffusionStep
from .validation import adam_betas, number_in, positive_int, power_of_two

DDPM_DEFAULTS = {
    "resolution": 32,
    "channels": 32,
    "channel_mults": (1, 2, 2),
    "num_res_blocks": 2,
    "attention_resolution": 16,  # None: no self-attention
    "dropout": 0.1,
    "timesteps": 1000,
    "beta_schedule": "linear",
    "sampling_steps": 50,  # DDIM steps of `zoo sample`
    "eta": 0.0,  # 0: deterministic DDIM; 1 with sampling_steps = timesteps: DDPM's sampler
    "preview_steps": 10,  # DDIM steps of the trainer's grids and diagnostics (None: as sampling)
    "lr": 2e-4,
    "betas": (0.9, 0.999),
    "batch_size": 32,
    "ema_beta": 0.9999,  # 0: no EMA; ramped up over the first steps (ema_rampup)
    "ema_rampup": True,
    "grad_clip": 1.0,  # max gradient norm (0: no clipping)
}
DDPM_CHOICES = {"beta_schedule": BETA_SCHEDULES}
NORM_GROUPS = 32
MIN_GROUP_CHANNELS = 4
EMBEDDING_PERIOD = 10000.0


def timestep_embedding(timesteps: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features (N, dim) of timesteps (N,): sines and cosines of t at frequencies
    from 1 down towards 1 / 10000 in geometric steps (a zero column pads an odd ``dim``)."""
    half = dim // 2
    frequencies = torch.exp(-math.log(EMBEDDING_PERIOD)
                            * torch.arange(half, device=timesteps.device) / half)
    angles = timesteps.float()[:, None] * frequencies[None]
    return F.pad(torch.cat([angles.sin(), angles.cos()], dim=1), (0, dim % 2))


def _norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups of 4 channels or more (the paper's 32 groups have 4 at
    its narrowest width): one channel a group would subtract the timestep embedding, which is
    added as one value per channel, right after adding it."""
    groups = next(g for g in range(NORM_GROUPS, 0, -1)
                  if channels % g == 0 and (channels // g >= MIN_GROUP_CHANNELS or g == 1))
    return nn.GroupNorm(groups, channels)


def _zero(module: nn.Module) -> nn.Module:
    for parameter in module.parameters():
        nn.init.zeros_(parameter)
    return module


class ResidualBlock(nn.Module):
    """x (N, C_in, H, W), timestep embedding (N, E) -> (N, C_out, H, W)."""

    def __init__(self, in_channels: int, out_channels: int, embedding: int, dropout: float):
        super().__init__()
        self.norm_in = _norm(in_channels)
        self.conv_in = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.embedding = nn.Linear(embedding, out_channels)
        self.norm_out = _norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv_out = _zero(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.shortcut = (nn.Identity() if in_channels == out_channels
                         else nn.Conv2d(in_channels, out_channels, 1))

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(F.silu(self.norm_in(x)))
        h = h + self.embedding(F.silu(embedding))[:, :, None, None]
        h = self.conv_out(self.dropout(F.silu(self.norm_out(h))))
        return self.shortcut(x) + h


class SelfAttention(nn.Module):
    """x + proj(softmax(q k^T / sqrt(C)) v) over the H x W positions, one head."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, c, h * w).transpose(2, 3).unbind(1)
        attended = F.scaled_dot_product_attention(q, k, v)  # (N, HW, C)
        return x + self.proj(attended.transpose(1, 2).reshape(n, c, h, w))


class UNetBlock(nn.Module):
    """A residual block, followed by self-attention at the attention resolution."""

    def __init__(self, in_channels: int, out_channels: int, embedding: int, dropout: float,
                 attention: bool):
        super().__init__()
        self.residual = ResidualBlock(in_channels, out_channels, embedding, dropout)
        self.attention = SelfAttention(out_channels) if attention else nn.Identity()

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        return self.attention(self.residual(x, embedding))


class Upsample(nn.Module):
    """Nearest-neighbour 2x, then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    """Noisy images (N, 3, R, R) and timesteps (N,) int64 -> predicted noise (N, 3, R, R)."""

    def __init__(self, resolution: int, channels: int, channel_mults: tuple[int, ...],
                 num_res_blocks: int, attention_resolution: int | None, dropout: float):
        super().__init__()
        embedding = 4 * channels
        self.channels = channels
        self.time_mlp = nn.Sequential(nn.Linear(channels, embedding), nn.SiLU(),
                                      nn.Linear(embedding, embedding))
        self.conv_in = nn.Conv2d(3, channels, 3, padding=1)

        def block(in_channels: int, out_channels: int, size: int) -> UNetBlock:
            return UNetBlock(in_channels, out_channels, embedding, dropout,
                             size == attention_resolution)

        width, size, skips = channels, resolution, [channels]
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        for level, mult in enumerate(channel_mults):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(block(width, channels * mult, size))
                width = channels * mult
                skips.append(width)
            self.down.append(blocks)
            if level + 1 < len(channel_mults):
                self.downsample.append(nn.Conv2d(width, width, 3, stride=2, padding=1))
                skips.append(width)
                size //= 2
        self.middle = nn.ModuleList([UNetBlock(width, width, embedding, dropout, True),
                                     UNetBlock(width, width, embedding, dropout, False)])
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mults))):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                blocks.append(block(width + skips.pop(), channels * mult, size))
                width = channels * mult
            self.up.append(blocks)
            if level:
                self.upsample.append(Upsample(width))
                size *= 2
        self.out = nn.Sequential(_norm(width), nn.SiLU(),
                                 _zero(nn.Conv2d(width, 3, 3, padding=1)))

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        embedding = self.time_mlp(timestep_embedding(timesteps, self.channels).to(x.dtype))
        h = self.conv_in(x)
        skips = [h]
        for level, blocks in enumerate(self.down):
            for unet_block in blocks:
                h = unet_block(h, embedding)
                skips.append(h)
            if level < len(self.downsample):
                h = self.downsample[level](h)
                skips.append(h)
        for unet_block in self.middle:
            h = unet_block(h, embedding)
        for level, blocks in enumerate(self.up):
            for unet_block in blocks:
                h = unet_block(torch.cat([h, skips.pop()], dim=1), embedding)
            if level < len(self.upsample):
                h = self.upsample[level](h)
        return self.out(h)


def latent_seed(latent: torch.Tensor) -> int:
    """A 63-bit seed read from the bytes of one latent."""
    digest = hashlib.sha256(latent.detach().float().cpu().contiguous().numpy().tobytes())
    return int.from_bytes(digest.digest()[:8], "little") >> 1


def latent_seeded_noise(latents: torch.Tensor, shape: torch.Size
                        ) -> Callable[[], torch.Tensor]:
    """A source of fresh noise (N, *shape) whose row i comes from a generator seeded by latent
    i: what a sampler adds to image i then depends on that image's latent alone, not on the
    batch it is drawn in."""
    generators = [torch.Generator().manual_seed(latent_seed(row)) for row in latents]

    def draw() -> torch.Tensor:
        return torch.stack([torch.randn(shape, generator=g) for g in generators]).to(latents)

    return draw


class DiffusionGenerator(nn.Module):
    """The U-Net with its noise schedule and DDIM sampler (see the module docstring).

    ``forward(z)``: latents (N, 3 R^2) -> images (N, 3, R, R) in [-1, 1];
    ``forward(x_t, timesteps)``: predicted noise of x_t (N, 3, R, R) at timesteps (N,) int64.
    """

    def __init__(self, unet: UNet, schedule: NoiseSchedule, resolution: int,
                 sampling_steps: int, eta: float):
        super().__init__()
        self.unet = unet
        self.schedule = schedule
        self.resolution = resolution
        self.z_dim = 3 * resolution * resolution
        self.sampling_steps = sampling_steps
        self.eta = eta

    @property
    def provenance(self) -> dict:
        """How this generator's images are drawn, for each sample's manifest row."""
        return {"sampler": "ddim", "sampling_steps": self.sampling_steps, "eta": self.eta}

    def forward(self, inputs: torch.Tensor, timesteps: torch.Tensor | None = None
                ) -> torch.Tensor:
        if timesteps is not None:
            return self.unet(inputs, timesteps)
        return self.sample(inputs)

    def sample(self, z: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """Images of latents (N, z_dim) in ``steps`` DDIM steps (default ``sampling_steps``)."""
        x_T = z.reshape(-1, 3, self.resolution, self.resolution)
        noise = latent_seeded_noise(z, x_T.shape[1:]) if self.eta > 0 else None
        return ddim_sample(self.unet, self.schedule.alphas_cumprod, x_T,
                           steps or self.sampling_steps, self.eta, noise)


def _validate(config: dict) -> None:
    name = "DDPM"
    resolution = power_of_two(name, config, "resolution", 8, 512)
    for key in ("channels", "num_res_blocks", "batch_size", "timesteps"):
        positive_int(name, config, key)
    mults = config["channel_mults"]
    if not (isinstance(mults, tuple) and mults
            and all(isinstance(m, int) and not isinstance(m, bool) and m > 0 for m in mults)):
        raise ValueError(f"DDPM config 'channel_mults' must be a list of positive integers, "
                         f"got {mults!r}")
    sizes = [resolution >> level for level in range(len(mults))]
    if sizes[-1] < 4:
        raise ValueError(f"DDPM config 'channel_mults' has {len(mults)} levels: too many for "
                         f"resolution {resolution} (the lowest would be {sizes[-1]} px; 4 at "
                         "least)")
    if config["attention_resolution"] not in (None, *sizes):
        raise ValueError(f"DDPM config 'attention_resolution' must be one of the U-Net's "
                         f"sizes {sizes} or null, got {config['attention_resolution']!r}")
    for key in ("sampling_steps", "preview_steps"):
        if key == "preview_steps" and config[key] is None:
            continue  # the grids draw with sampling_steps
        if positive_int(name, config, key) > config["timesteps"]:
            raise ValueError(f"DDPM config {key!r} must be at most timesteps "
                             f"({config['timesteps']}), got {config[key]}")
    number_in(name, config, "dropout", 0, 1)
    number_in(name, config, "eta", 0, 1)
    number_in(name, config, "lr", 0, low_open=True)
    number_in(name, config, "ema_beta", 0, 1)  # 1 is refused by the EMA itself
    number_in(name, config, "grad_clip", 0)
    adam_betas(name, config)


@register_generator("ddpm", DDPM_DEFAULTS, step_class=DiffusionStep, choices=DDPM_CHOICES)
def build_ddpm(config: dict) -> dict[str, nn.Module]:
    _validate(config)
    unet = UNet(config["resolution"], config["channels"], config["channel_mults"],
                config["num_res_blocks"], config["attention_resolution"], config["dropout"])
    schedule = NoiseSchedule(config["beta_schedule"], config["timesteps"])
    return {"generator": DiffusionGenerator(unet, schedule, config["resolution"],
                                            config["sampling_steps"], float(config["eta"]))}
