"""The StyleGAN2 training step (NVlabs ``training/loss.py`` + ``training_loop.py``, in one object).

Per call, with a real batch x of N images:

1. D: loss(D(x), D(G(z))) with the family's loss (softplus non-saturating by default);
2. every ``r1_interval`` steps (lazy R1): a separate D update on gamma / 2 |grad_x D(x)|^2,
   scaled by the interval;
3. G: loss(D(G(z))) on the same fakes;
4. every ``pl_interval`` steps when ``pl_weight`` > 0: a separate G update on the path-length
   penalty (|J_w^T y| - a)^2 on N / 2 fresh fakes, a the running mean of the lengths;
5. the EMA generator moves towards G with a half-life of ``ema_kimg`` thousand images, capped
   at ``ema_rampup`` times the images seen so far (so early on it follows G closely).

Fakes use style mixing: with probability ``style_mixing`` the layers from a random cutoff on
take their w from a second latent. Lazy regularisation scales Adam's lr by k / (k + 1) and its
betas to the power k / (k + 1) for an interval k, so that the regularised net's updates keep
their expected size. With ``amp`` (CUDA) the step runs in bfloat16 autocast where the GPU has
it, else in float32: float16 overflows StyleGAN's unnormalised activations unless clamped as
NVlabs does; penalties run in float32.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch
import torch.distributed as dist
from torch import nn

from crashsafe.runtime import amp_dtype, autocast

from .augment import diff_augment
from .distributed import no_sync, unwrap
from .losses import get_loss, r1_penalty
from .registry import GanPair
from .steps import ExponentialMovingAverage, device_images, optimizer_step

PL_DECAY = 0.01  # update rate of the path-length target a


def lazy_adam(params: Iterable[nn.Parameter], lr: float, betas: tuple[float, float],
              interval: int | None) -> torch.optim.Adam:
    """Adam for a net regularised every ``interval`` steps (None: never), lr and betas
    corrected by k / (k + 1) (Karras et al. 2020, appendix B)."""
    ratio = interval / (interval + 1) if interval else 1.0
    return torch.optim.Adam(params, lr=lr * ratio, betas=tuple(b ** ratio for b in betas),
                            eps=1e-8)


class StyleGANStep:
    """One StyleGAN2 training step; see the module docstring for the recipe.

    Returns ``loss_d``, ``loss_g``, ``d_real`` / ``d_fake`` (the loss's score, e.g. mean
    sigmoid, of D(x) and D(G(z)) before D's update), ``skipped`` (updates dropped for a
    non-finite loss), and ``r1`` / ``pl`` on the steps that compute them.
    """

    def __init__(self, pair: GanPair, device: torch.device, *, amp: bool = False):
        config = pair.config
        self.pair = pair
        self.device = device
        # float16 overflows StyleGAN's unnormalised activations: bfloat16 or full precision.
        self.autocast = autocast(device, amp and amp_dtype(device) == torch.bfloat16)
        self.loss = get_loss(config["loss"])
        self.r1_gamma = float(config["r1_gamma"])
        self.r1_interval = int(config["r1_interval"])
        self.pl_weight = float(config["pl_weight"])
        self.pl_interval = int(config["pl_interval"])
        self.style_mixing = float(config["style_mixing"])
        self.augment = str(config["diffaugment"])
        self.ema_images = float(config["ema_kimg"]) * 1000
        self.ema_rampup = float(config["ema_rampup"])
        self.optimizers = {
            "G": lazy_adam(pair.generator.parameters(), config["lr"], config["betas"],
                           self.pl_interval if self.pl_weight > 0 else None),
            "D": lazy_adam(pair.discriminator.parameters(), config["lr"], config["betas"],
                           self.r1_interval if self.r1_gamma > 0 else None),
        }
        self.scaler = torch.amp.GradScaler(device.type, enabled=False)  # bf16 needs no scaling
        self.ema = ExponentialMovingAverage(pair.generator, 0.0, rampup=False)
        self.pl_mean = torch.zeros((), device=device)
        self.steps_done = 0
        self.images_seen = 0

    def sample_model(self) -> nn.Module:
        """The EMA generator (eval mode), which samples, grids and checkpoints show."""
        return self.ema.model

    def _fakes(self, n: int, *, update_w_avg: bool = False,
               return_ws: bool = False) -> Any:
        """G(z) for n fresh latents, style-mixed with probability ``style_mixing``."""
        generator = self.pair.generator
        z_dim, num_ws = unwrap(generator).z_dim, unwrap(generator).num_ws
        z = torch.randn(n, z_dim, device=self.device)
        mix = None
        if self.style_mixing > 0 and float(torch.rand(())) < self.style_mixing:
            cutoff = int(torch.randint(1, num_ws, ()))
            mix = (torch.randn(n, z_dim, device=self.device), cutoff)
        return generator(z, mix=mix, update_w_avg=update_w_avg, return_ws=return_ws)

    def _path_length_penalty(self, n: int) -> torch.Tensor:
        """Mean (|J_w^T y| - a)^2 over n / 2 fakes, y ~ N(0, 1/(H W)); updates a."""
        images, ws = self._fakes(max(1, n // 2), return_ws=True)
        noise = torch.randn_like(images) / math.sqrt(images.shape[2] * images.shape[3])
        (gradients,) = torch.autograd.grad((images * noise).sum(), ws, create_graph=True)
        lengths = gradients.square().sum(2).mean(1).sqrt()
        self.pl_mean.copy_(self.pl_mean.lerp(lengths.detach().mean(), PL_DECAY))
        return (lengths - self.pl_mean).square().mean()

    def _ema_beta(self, batch_images: int) -> float:
        half_life = self.ema_images
        if self.ema_rampup > 0:
            half_life = min(half_life, self.images_seen * self.ema_rampup)
        return 0.5 ** (batch_images / max(half_life, 1e-8))

    def _update(self, name: str, loss: torch.Tensor) -> bool:
        return optimizer_step(self.optimizers[name], self.scaler, loss)

    def __call__(self, batch: torch.Tensor) -> dict[str, float]:
        generator, discriminator = self.pair.generator, self.pair.discriminator
        real = device_images(batch, self.device)
        n = real.shape[0]
        extra: dict[str, torch.Tensor] = {}

        def discriminate(images: torch.Tensor) -> torch.Tensor:
            return discriminator(diff_augment(images, self.augment))

        with self.autocast:
            fake = self._fakes(n, update_w_avg=True)
            real_out = discriminate(real)
            fake_out = discriminate(fake.detach())
            loss_d = self.loss.discriminator(real_out, fake_out)
        applied = [self._update("D", loss_d)]
        if self.r1_gamma > 0 and self.steps_done % self.r1_interval == 0:
            extra["r1"] = r1_penalty(discriminate, real)
            applied.append(self._update("D", extra["r1"] * (self.r1_gamma / 2
                                                             * self.r1_interval)))

        discriminator.requires_grad_(False)  # G's losses need no gradient for D's weights
        try:
            with self.autocast, no_sync(discriminator):
                loss_g = self.loss.generator(discriminate(fake))
            applied.append(self._update("G", loss_g))
            if self.pl_weight > 0 and self.steps_done % self.pl_interval == 0:
                with no_sync(discriminator):
                    extra["pl"] = self._path_length_penalty(n)
                applied.append(self._update("G", extra["pl"] * (self.pl_weight
                                                                 * self.pl_interval)))
        finally:
            discriminator.requires_grad_(True)

        world = dist.get_world_size() if dist.is_initialized() else 1
        self.ema.update(generator, beta=self._ema_beta(n * world))
        self.images_seen += n * world
        self.steps_done += 1

        names = ("loss_d", "loss_g", "d_real", "d_fake", *extra)
        values = torch.stack([
            loss_d.detach().float(), loss_g.detach().float(),
            self.loss.score(real_out.detach().float()).mean(),
            self.loss.score(fake_out.detach().float()).mean(),
            *(value.detach().float() for value in extra.values()),
        ]).tolist()  # one host sync for all statistics
        return {**dict(zip(names, values)), "skipped": len(applied) - sum(applied)}

    def state_dict(self) -> dict[str, Any]:
        """Optimizers, EMA generator, path-length target and counters (for an exact resume)."""
        return {
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
            "ema": self.ema.state_dict(),
            "pl_mean": self.pl_mean.detach().clone(),
            "steps_done": self.steps_done,
            "images_seen": self.images_seen,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        self.ema.load_state_dict(state["ema"])
        self.pl_mean.copy_(state["pl_mean"])
        self.steps_done = int(state["steps_done"])
        self.images_seen = int(state["images_seen"])
