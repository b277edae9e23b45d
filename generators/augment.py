"""Differentiable augmentation of what the discriminator sees (DiffAugment, Zhao et al. 2020).

With little data the discriminator memorises the real images and its feedback to the generator
stops being useful. DiffAugment applies the same random, differentiable transforms to real and
generated images before every call of D (in D's step and in G's), so D cannot memorise and G
still gets gradients through the transforms. A policy is a comma-separated list of ``color``
(brightness, saturation, contrast), ``translation`` (shift by up to 1/8 of the side, zero fill)
and ``cutout`` (a zeroed square of half the side); ``""`` turns it off. Randomness comes from
torch's global generator, so a resumed run draws the same transforms.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def _brightness(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device) - 0.5)


def _saturation(x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=1, keepdim=True)
    factor = torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device) * 2
    return (x - mean) * factor + mean


def _contrast(x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    factor = torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device) + 0.5
    return (x - mean) * factor + mean


def _grid(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batch, row and column index tensors broadcasting to (N, H, W)."""
    n, _, h, w = x.shape
    return (torch.arange(n, device=x.device).view(n, 1, 1),
            torch.arange(h, device=x.device).view(1, h, 1),
            torch.arange(w, device=x.device).view(1, 1, w))


def _translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    n, _, h, w = x.shape
    shift_h, shift_w = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-shift_h, shift_h + 1, (n, 1, 1), device=x.device)
    dx = torch.randint(-shift_w, shift_w + 1, (n, 1, 1), device=x.device)
    batch, rows, cols = _grid(x)
    # Index into a copy padded with one ring of zeros; shifts past the border read the zeros.
    rows = (rows + dy + 1).clamp(0, h + 1)
    cols = (cols + dx + 1).clamp(0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1]).permute(0, 2, 3, 1)
    return padded[batch, rows, cols].permute(0, 3, 1, 2).contiguous()


def _cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    n, _, h, w = x.shape
    size_h, size_w = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top = torch.randint(0, h - size_h + 1, (n, 1, 1), device=x.device)
    left = torch.randint(0, w - size_w + 1, (n, 1, 1), device=x.device)
    _, rows, cols = _grid(x)
    inside = ((rows >= top) & (rows < top + size_h)) & ((cols >= left) & (cols < left + size_w))
    return x * (~inside).unsqueeze(1).to(x.dtype)


POLICIES: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], ...]] = {
    "color": (_brightness, _saturation, _contrast),
    "translation": (_translation,),
    "cutout": (_cutout,),
}


def parse_policy(policy: str) -> tuple[str, ...]:
    """The parts of a policy string; raises ValueError naming an unknown one."""
    parts = tuple(part.strip() for part in policy.split(",") if part.strip())
    unknown = [part for part in parts if part not in POLICIES]
    if unknown:
        raise ValueError(f"unknown diffaugment part(s) {unknown}: use a comma-separated list of "
                         f"{', '.join(POLICIES)} (e.g. --set diffaugment=color,translation,"
                         "cutout), or an empty string for none")
    return parts


def diff_augment(x: torch.Tensor, policy: str) -> torch.Tensor:
    """``x`` (N, C, H, W) through the policy's transforms, each drawn per image."""
    for part in parse_policy(policy):
        for transform in POLICIES[part]:
            x = transform(x)
    return x
