"""The default training step: a D update then a G update, with the stability options of a config.

Config keys read by :class:`AdversarialStep` (all families using it list them in their
defaults):

- ``loss``: a name in ``generators.losses.LOSSES`` (nonsaturating, hinge, lsgan, wgan-gp);
  ``gp_weight``: the WGAN-GP penalty weight (lambda, 10 in the paper);
- ``lr`` (both nets) and ``lr_d`` (D's own rate when not None: TTUR, Heusel et al.), ``betas``;
- ``r1_gamma`` (0: off) and ``r1_every``: lazy R1, gamma / 2 * |grad D(x)|^2 added to D's
  loss every ``r1_every`` steps, scaled by that interval (StyleGAN2's lazy regularisation);
- ``ema_beta`` (0: off) and ``ema_rampup``: an exponential moving average of G's weights,
  with beta ramped up as min(beta, (1 + t) / (10 + t)) over the first steps when asked; the EMA
  generator is what samples, grids and checkpoints' ``G_ema`` show.

Spectral normalisation lives in the networks (``spectral_norm`` in the DCGAN configs).
An update whose loss is not finite is skipped (counted in the ``skipped`` statistic) so one
bad batch cannot turn the weights into NaN; the trainer aborts when it keeps happening.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from crashsafe.runtime import autocast, grad_scaler

from .augment import diff_augment
from .distributed import all_ranks_true, no_sync, unwrap
from .losses import get_loss, gradient_penalty, r1_penalty
from .registry import GanPair

STAT_NAMES = ("loss_d", "loss_g", "d_real", "d_fake")


class ExponentialMovingAverage:
    """A frozen copy of a net whose weights follow the net's: ema = beta * ema + (1 - beta) * net.

    Buffers (BatchNorm statistics, StyleGAN's ``w_avg``) are copied as they are.
    ``rampup`` lowers beta early on (min(beta, (1 + t) / (10 + t)) at update t) so the average
    does not remember the random initial weights for thousands of steps.
    """

    def __init__(self, net: nn.Module, beta: float, *, rampup: bool = True):
        if not 0 <= beta < 1:
            raise ValueError(f"EMA beta must be in [0, 1), got {beta!r}")
        self.model = copy.deepcopy(unwrap(net)).eval().requires_grad_(False)
        self.beta = beta
        self.rampup = rampup
        self.updates = 0

    @torch.no_grad()
    def update(self, net: nn.Module, beta: float | None = None) -> None:
        """Move the average towards ``net``; ``beta`` overrides this update's (ramped) beta."""
        net = unwrap(net)
        if beta is None:
            beta = min(self.beta, (1 + self.updates) / (10 + self.updates)) if self.rampup \
                else self.beta
        for average, value in zip(self.model.parameters(), net.parameters()):
            average.lerp_(value.detach(), 1 - beta)
        for average, value in zip(self.model.buffers(), net.buffers()):
            average.copy_(value)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.updates = int(state["updates"])


def optimizer_step(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                   loss: torch.Tensor) -> bool:
    """Backpropagate ``loss`` and step; skip the step (on every rank) if it is not finite."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()  # also when not finite: DDP ranks must stay in step
    if not all_ranks_true(torch.isfinite(loss.detach())):
        optimizer.zero_grad(set_to_none=True)
        return False
    scaler.step(optimizer)
    scaler.update()
    return True


def optimizer_state(optimizers: dict[str, torch.optim.Optimizer],
                    scalers: dict[str, torch.amp.GradScaler]) -> dict[str, Any]:
    """The ``optimizers`` and ``scalers`` entries of a step's ``state_dict``."""
    return {"optimizers": {name: opt.state_dict() for name, opt in optimizers.items()},
            "scalers": {name: scaler.state_dict() for name, scaler in scalers.items()}}


def load_optimizer_state(optimizers: dict[str, torch.optim.Optimizer],
                         scalers: dict[str, torch.amp.GradScaler], state: dict[str, Any]) -> None:
    """Restore what :func:`optimizer_state` saved (a disabled scaler saved nothing)."""
    for name, optimizer in optimizers.items():
        optimizer.load_state_dict(state["optimizers"][name])
    for name, scaler in scalers.items():
        if state["scalers"].get(name):
            scaler.load_state_dict(state["scalers"][name])


def split_batch(batch: Any) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """(images, conditioning args): a "labelled" batch conditions both nets on its classes."""
    if isinstance(batch, (tuple, list)):
        images, labels = batch
        return images, (labels,)
    return batch, ()


def device_images(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """An image batch on ``device``, channels-last when that is CUDA (faster convolutions)."""
    images = images.to(device, non_blocking=True)
    return images.contiguous(memory_format=torch.channels_last) if device.type == "cuda" \
        else images


def extend_preview(kept: torch.Tensor, images: torch.Tensor, size: int) -> torch.Tensor:
    """``kept`` (CPU, float) topped up to ``size`` from ``images``: the first training images
    seen, the fixed batch of the sample grid."""
    if len(kept) >= size:
        return kept
    return torch.cat([kept, images[:size - len(kept)].detach().float().cpu()])


class StepBase:
    """What every step sets first: its pair and device, and mixed-precision autocast when
    ``amp`` (``self.autocast``, a reusable context; see ``crashsafe.runtime.autocast``)."""

    def __init__(self, pair: GanPair, device: torch.device, *, amp: bool = False):
        self.pair = pair
        self.device = device
        self.autocast = autocast(device, amp)


def training_state(optimizers: dict[str, torch.optim.Optimizer],
                   scalers: dict[str, torch.amp.GradScaler],
                   ema: ExponentialMovingAverage | None) -> dict[str, Any]:
    """Optimizers, scalers and the EMA weights (when kept) as one state tree."""
    state = optimizer_state(optimizers, scalers)
    if ema is not None:
        state["ema"] = ema.state_dict()
    return state


def load_training_state(optimizers: dict[str, torch.optim.Optimizer],
                        scalers: dict[str, torch.amp.GradScaler],
                        ema: ExponentialMovingAverage | None, state: dict[str, Any]) -> None:
    """Restore what :func:`training_state` saved."""
    load_optimizer_state(optimizers, scalers, state)
    if ema is not None:
        ema.load_state_dict(state["ema"])


class AdversarialStep:
    """One training step of a generator/discriminator pair with Adam and a named GAN loss.

    Holds the optimizers (``optimizers["G"]``, ``optimizers["D"]``), with ``amp`` (CUDA only)
    mixed-precision autocast (``self.autocast``) and one GradScaler per network, and the EMA
    generator when the config asks for one. Calling it with a batch (images (N, 3, R, R) in
    [-1, 1], or (images, labels) for a conditional family: G(z, y), D(x, y), fakes drawn for the
    real batch's classes; D sees real and fake images through the config's ``diffaugment``
    policy, if any) returns the step's statistics: ``loss_d``, ``loss_g``, ``d_real`` and
    ``d_fake`` (the loss's score of D(x) and D(G(z)) before D's update), ``skipped`` (updates
    skipped for a non-finite loss) and ``r1`` / ``gp`` when those penalties are on.
    """

    def __init__(self, pair: GanPair, device: torch.device, *, amp: bool = False):
        config = pair.config
        self.pair = pair
        self.device = device
        self.autocast = autocast(device, amp)
        self.loss = get_loss(config["loss"])
        self.gp_weight = float(config.get("gp_weight", 10.0))
        self.r1_gamma = float(config.get("r1_gamma", 0.0))
        self.r1_every = int(config.get("r1_every", 16))
        self.augment = str(config.get("diffaugment", ""))
        lr_d = config.get("lr_d")
        self.optimizers = {
            "G": torch.optim.Adam(pair.generator.parameters(), lr=config["lr"],
                                  betas=config["betas"]),
            "D": torch.optim.Adam(pair.discriminator.parameters(),
                                  lr=config["lr"] if lr_d is None else lr_d,
                                  betas=config["betas"]),
        }
        self.scalers = {name: grad_scaler(device, amp) for name in self.optimizers}
        beta = float(config.get("ema_beta", 0.0))
        self.ema = (ExponentialMovingAverage(pair.generator, beta,
                                             rampup=bool(config.get("ema_rampup", True)))
                    if beta > 0 else None)
        self.updates = 0

    def sample_model(self) -> nn.Module:
        """The generator that samples: the EMA copy when there is one."""
        return self.ema.model if self.ema is not None else unwrap(self.pair.generator)

    def _update(self, name: str, loss: torch.Tensor) -> bool:
        return optimizer_step(self.optimizers[name], self.scalers[name], loss)

    def __call__(self, batch: Any) -> dict[str, float]:
        generator, discriminator = self.pair.generator, self.pair.discriminator
        real, condition = split_batch(batch)
        real = device_images(real, self.device)
        condition = tuple(c.to(self.device, non_blocking=True) for c in condition)
        z = torch.randn(real.shape[0], generator.z_dim, device=self.device)

        def discriminate(images: torch.Tensor) -> torch.Tensor:
            return discriminator(diff_augment(images, self.augment), *condition)

        extra: dict[str, torch.Tensor] = {}
        with self.autocast:
            fake = generator(z, *condition)
            real_out = discriminate(real)
            fake_out = discriminate(fake.detach())
            loss_d = self.loss.discriminator(real_out, fake_out)
        total_d = loss_d
        # Penalties on input gradients run in float32: half-precision double-backward is fragile.
        if self.loss.gradient_penalty:
            extra["gp"] = gradient_penalty(discriminate, real, fake)
            total_d = total_d + self.gp_weight * extra["gp"]
        if self.r1_gamma > 0 and self.updates % self.r1_every == 0:
            extra["r1"] = r1_penalty(discriminate, real)
            total_d = total_d + self.r1_gamma / 2 * self.r1_every * extra["r1"]
        applied_d = self._update("D", total_d)

        # D's weights get no gradient from G's loss: skipping them saves a third of D's backward.
        discriminator.requires_grad_(False)
        try:
            with self.autocast, no_sync(discriminator):
                loss_g = self.loss.generator(discriminate(fake))
            applied_g = self._update("G", loss_g)
        finally:
            discriminator.requires_grad_(True)
        if self.ema is not None:
            self.ema.update(generator)
        self.updates += 1

        names = (*STAT_NAMES, *extra)
        values = torch.stack([
            loss_d.detach().float(), loss_g.detach().float(),
            self.loss.score(real_out.detach().float()).mean(),
            self.loss.score(fake_out.detach().float()).mean(),
            *(value.detach().float() for value in extra.values()),
        ]).tolist()  # the step's only host sync besides the finiteness checks
        return {**dict(zip(names, values)), "skipped": 2 - int(applied_d) - int(applied_g)}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit-exactly: optimizers, scalers, EMA, counters."""
        return {**training_state(self.optimizers, self.scalers, self.ema),
                "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_training_state(self.optimizers, self.scalers, self.ema, state)
        self.updates = int(state["updates"])
