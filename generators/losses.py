"""Adversarial losses, by name.

Each loss works on raw discriminator logits (no sigmoid in the networks) and returns scalar
means. Add a loss by writing its two functions and an entry in ``LOSSES``; configs then select
it with ``loss="<name>"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class GanLoss:
    """The discriminator and generator objectives of one adversarial loss."""

    name: str
    discriminator: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (real, fake logits)
    generator: Callable[[torch.Tensor], torch.Tensor]  # (fake logits)


def nonsaturating_discriminator_loss(real_logits: torch.Tensor,
                                     fake_logits: torch.Tensor) -> torch.Tensor:
    """BCE with logits, real -> 1 and fake -> 0: softplus(-D(x)) + softplus(D(G(z)))."""
    return F.softplus(-real_logits.float()).mean() + F.softplus(fake_logits.float()).mean()


def nonsaturating_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """-log sigmoid(D(G(z))) = softplus(-D(G(z))): strong gradients while D wins (Goodfellow)."""
    return F.softplus(-fake_logits.float()).mean()


LOSSES: dict[str, GanLoss] = {
    "nonsaturating": GanLoss(
        "nonsaturating", nonsaturating_discriminator_loss, nonsaturating_generator_loss
    ),
}


def get_loss(name: str) -> GanLoss:
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown GAN loss {name!r}; choose one of {sorted(LOSSES)}") from None
