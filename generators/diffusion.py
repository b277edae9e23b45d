"""Gaussian diffusion (Ho et al. 2020) and the DDIM sampler (Song et al. 2021), apart from any net.

The forward process noises an image x0 in T steps with variances beta_1..beta_T; with
abar_t = prod_{s<=t} (1 - beta_s) it has the closed form
``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps``, eps ~ N(0, I) (:func:`q_sample`). A net trained
to predict eps from (x_t, t) with the plain mean squared error (:func:`noise_prediction_loss`,
the paper's L_simple) reverses it.

:func:`ddim_sample` reverses it in S <= T steps: at each step the net's eps gives the denoised
estimate x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t), clipped to the data range
[-1, 1] (eps is then recomputed from the clipped estimate so both still explain x_t), and
``x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma^2) eps + sigma z`` with
``sigma = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev)``: eta = 0 is
the deterministic DDIM, eta = 1 with S = T the DDPM's ancestral sampler (sigma^2 is then the
posterior variance). Timesteps are indices 0..T-1 (index t is the paper's step t + 1).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

BETA_SCHEDULES = ("linear", "cosine")
LINEAR_BETAS = (1e-4, 0.02)  # Ho et al.'s range, for T = 1000
COSINE_OFFSET = 0.008  # Nichol & Dhariwal's s: keeps beta_1 from being vanishingly small
MAX_BETA = 0.999  # their clip, so the cosine schedule's last step is not a pure-noise jump

NoisePredictor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, t) -> eps


def beta_schedule(name: str, timesteps: int) -> torch.Tensor:
    """The variances beta_1..beta_T (float64, (T,)) of the ``"linear"`` schedule (Ho et al.:
    evenly from 1e-4 to 0.02) or the ``"cosine"`` one (Nichol & Dhariwal 2021: abar_t follows
    cos^2 of (t / T + s) / (1 + s) * pi / 2, each beta clipped to 0.999)."""
    if name == "linear":
        return torch.linspace(*LINEAR_BETAS, timesteps, dtype=torch.float64)
    if name == "cosine":
        steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
        signal = torch.cos((steps + COSINE_OFFSET) / (1 + COSINE_OFFSET) * math.pi / 2) ** 2
        return (1 - signal[1:] / signal[:-1]).clamp(max=MAX_BETA)
    raise ValueError(f"beta schedule must be one of {list(BETA_SCHEDULES)}, got {name!r}")


class NoiseSchedule(nn.Module):
    """abar_t for t = 0..T-1 of a named beta schedule, as a float32 buffer that follows the net
    to its device; not persistent: checkpoints hold weights only and the config rebuilds it."""

    def __init__(self, name: str, timesteps: int):
        super().__init__()
        betas = beta_schedule(name, timesteps)
        self.register_buffer("alphas_cumprod", torch.cumprod(1 - betas, 0).float(),
                             persistent=False)


def q_sample(alphas_cumprod: torch.Tensor, x0: torch.Tensor, t: torch.Tensor,
             noise: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise for images (N, C, H, W) and timesteps
    (N,) int64."""
    abar = alphas_cumprod[t].view(-1, 1, 1, 1)
    return abar.sqrt() * x0 + (1 - abar).sqrt() * noise


def noise_prediction_loss(predict: NoisePredictor, alphas_cumprod: torch.Tensor,
                          x0: torch.Tensor) -> torch.Tensor:
    """L_simple: |eps - predict(x_t, t)|^2 averaged, t uniform over 0..T-1 and eps standard
    normal per image, both drawn from torch's global generator."""
    t = torch.randint(0, len(alphas_cumprod), (x0.shape[0],), device=x0.device)
    noise = torch.randn_like(x0)
    return F.mse_loss(predict(q_sample(alphas_cumprod, x0, t, noise), t).float(), noise)


def ddim_timesteps(timesteps: int, steps: int) -> list[int]:
    """``steps`` timesteps spread evenly over 0..T-1, highest first (all T when steps == T)."""
    if not 1 <= steps <= timesteps:
        raise ValueError(f"DDIM needs 1 to {timesteps} sampling steps, got {steps}")
    return np.linspace(0, timesteps - 1, steps).round().astype(int)[::-1].tolist()


def ddim_sigma(abar_t: torch.Tensor, abar_prev: torch.Tensor, eta: float) -> torch.Tensor:
    """The noise scale of a DDIM step from abar_t to abar_prev (0 for eta 0; with eta 1 and
    consecutive steps the DDPM posterior's standard deviation)."""
    return eta * ((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)).sqrt()


@torch.no_grad()
def ddim_sample(predict: NoisePredictor, alphas_cumprod: torch.Tensor, x_T: torch.Tensor,
                steps: int, eta: float = 0.0,
                noise: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:
    """Images in [-1, 1] from the starting noise ``x_T`` (N, C, H, W) in ``steps`` DDIM steps.

    ``noise()`` gives the fresh N(0, I) draws (shaped like ``x_T``) of steps with eta > 0
    (default: torch's global generator).
    """
    draw = noise if noise is not None else (lambda: torch.randn_like(x_T))
    schedule = ddim_timesteps(len(alphas_cumprod), steps)
    one = alphas_cumprod.new_ones(())
    x = x_T
    for i, t in enumerate(schedule):
        abar_t = alphas_cumprod[t]
        abar_prev = alphas_cumprod[schedule[i + 1]] if i + 1 < len(schedule) else one
        eps = predict(x, torch.full((x.shape[0],), t, device=x.device, dtype=torch.int64))
        eps = eps.to(x.dtype)
        x0 = ((x - (1 - abar_t).sqrt() * eps) / abar_t.sqrt()).clamp(-1, 1)
        eps = (x - abar_t.sqrt() * x0) / (1 - abar_t).sqrt()
        sigma = ddim_sigma(abar_t, abar_prev, eta)
        x = abar_prev.sqrt() * x0 + (1 - abar_prev - sigma ** 2).clamp(min=0).sqrt() * eps
        if eta > 0 and i + 1 < len(schedule):  # the last step lands on x0_hat itself
            x = x + sigma * draw()
    return x
