"""Adversarial losses and discriminator penalties, by name.

Each loss works on raw discriminator outputs (no sigmoid in the networks) and returns scalar
means. Add a loss by writing its two functions and an entry in ``LOSSES``; configs then select
it with ``loss="<name>"``. ``score`` reads D's raw output as "how real" in [0, 1] for the
D(x) / D(G(z)) curves: sigmoid for logit losses, the clamped output itself for LSGAN (whose
targets are 1 and 0); for hinge and WGAN it is only an indicator, not a probability.
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
    discriminator: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (real, fake outputs)
    generator: Callable[[torch.Tensor], torch.Tensor]  # (fake outputs)
    score: Callable[[torch.Tensor], torch.Tensor] = torch.sigmoid
    gradient_penalty: bool = False  # WGAN-GP: the step adds gp_weight * (|grad D(x_hat)| - 1)^2


def nonsaturating_discriminator_loss(real_logits: torch.Tensor,
                                     fake_logits: torch.Tensor) -> torch.Tensor:
    """BCE with logits, real -> 1 and fake -> 0: softplus(-D(x)) + softplus(D(G(z)))."""
    return F.softplus(-real_logits.float()).mean() + F.softplus(fake_logits.float()).mean()


def nonsaturating_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """-log sigmoid(D(G(z))) = softplus(-D(G(z))): strong gradients while D wins (Goodfellow)."""
    return F.softplus(-fake_logits.float()).mean()


def hinge_discriminator_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """relu(1 - D(x)) + relu(1 + D(G(z))) (Lim & Ye; SNGAN, BigGAN)."""
    return F.relu(1 - real.float()).mean() + F.relu(1 + fake.float()).mean()


def critic_generator_loss(fake: torch.Tensor) -> torch.Tensor:
    """-D(G(z)): the generator side of both hinge and Wasserstein losses."""
    return -fake.float().mean()


def lsgan_discriminator_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Least squares, real -> 1, fake -> 0 (Mao et al.; the CycleGAN default), halved."""
    return 0.5 * ((real.float() - 1).square().mean() + fake.float().square().mean())


def lsgan_generator_loss(fake: torch.Tensor) -> torch.Tensor:
    return (fake.float() - 1).square().mean()


def wasserstein_discriminator_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """D(G(z)) - D(x): the critic's side of the Wasserstein estimate (pair with a penalty)."""
    return fake.float().mean() - real.float().mean()


LOSSES: dict[str, GanLoss] = {
    "nonsaturating": GanLoss(
        "nonsaturating", nonsaturating_discriminator_loss, nonsaturating_generator_loss
    ),
    "hinge": GanLoss("hinge", hinge_discriminator_loss, critic_generator_loss),
    "lsgan": GanLoss("lsgan", lsgan_discriminator_loss, lsgan_generator_loss,
                     score=lambda out: out.clamp(0, 1)),
    "wgan-gp": GanLoss("wgan-gp", wasserstein_discriminator_loss, critic_generator_loss,
                       gradient_penalty=True),
}


def get_loss(name: str) -> GanLoss:
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown GAN loss {name!r}; choose one of {sorted(LOSSES)}") from None


def _input_gradient_norms(discriminate: Callable[[torch.Tensor], torch.Tensor],
                          images: torch.Tensor) -> torch.Tensor:
    """Per-image squared L2 norm of d sum(D(images)) / d images, differentiable (create_graph)."""
    images = images.detach().requires_grad_(True)
    (gradient,) = torch.autograd.grad(discriminate(images).float().sum(), images,
                                      create_graph=True)
    return gradient.float().square().flatten(1).sum(1)


def r1_penalty(discriminate: Callable[[torch.Tensor], torch.Tensor],
               real: torch.Tensor) -> torch.Tensor:
    """Mean |grad_x D(x)|^2 on real images (Mescheder et al. 2018); scale by gamma / 2."""
    return _input_gradient_norms(discriminate, real).mean()


def gradient_penalty(discriminate: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor,
                     fake: torch.Tensor) -> torch.Tensor:
    """Mean (|grad D(x_hat)| - 1)^2 on random interpolates x_hat of real and fake (Gulrajani
    et al. 2017); the mixing weights come from torch's global generator."""
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    mixed = alpha * real.detach() + (1 - alpha) * fake.detach()
    norms = _input_gradient_norms(discriminate, mixed).add(1e-12).sqrt()
    return (norms - 1).square().mean()
