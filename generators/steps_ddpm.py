"""The DDPM training step (Ho et al. 2020, Algorithm 1) for ``generators.nets.ddpm``.

Per call, on a batch x0 of real images: t uniform over the timesteps and eps ~ N(0, I) per
image, x_t in closed form, loss |eps - eps_theta(x_t, t)|^2 (``generators.diffusion``); one
Adam update with the gradient's global norm clipped to ``grad_clip``; the EMA of the weights
(``ema_beta``, ramped up over the first steps with ``ema_rampup``) is what samples. There is no
discriminator: the step reports one ``loss`` (the trainer's curves and guards read it in place
of ``loss_d`` / ``loss_g``). With ``amp`` (CUDA) the U-Net runs in mixed-precision autocast
with a GradScaler (active for float16); the gradients are clipped after unscaling.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn

from crashsafe.runtime import grad_scaler

from .diffusion import noise_prediction_loss
from .distributed import unwrap
from .registry import GanPair
from .sampling import eval_mode, seed_latents
from .steps import (ExponentialMovingAverage, StepBase, device_images, load_training_state,
                    optimizer_step, training_state)

PREVIEW_SEEDS = range(64)  # the seeds of the trainer's sample grid (trainer.GRID_SEEDS)


class GradientClipping:
    """Clips the global gradient norm of ``parameters`` to ``max_norm`` right before each
    ``optimizer.step()`` (a step pre-hook: under a GradScaler that is after unscaling, and a
    step skipped for non-finite gradients is never clipped); ``norm`` is the last norm seen
    before clipping."""

    def __init__(self, optimizer: torch.optim.Optimizer, parameters: Iterable[nn.Parameter],
                 max_norm: float):
        self.parameters = list(parameters)
        self.max_norm = max_norm
        self.norm = torch.full((), float("nan"))
        optimizer.register_step_pre_hook(self._clip)

    def _clip(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self.norm = torch.nn.utils.clip_grad_norm_(self.parameters, self.max_norm)


class DiffusionStep(StepBase):
    """One DDPM step on a batch of images (N, 3, R, R) in [-1, 1]; see the module docstring.

    Returns ``loss`` (the noise-prediction MSE), ``grad_norm`` (before clipping, when
    ``grad_clip`` > 0) and ``skipped`` (1 when the loss was not finite and the update was
    dropped).
    """

    def __init__(self, pair: GanPair, device: torch.device, *, amp: bool = False):
        super().__init__(pair, device, amp=amp)
        config = pair.config
        generator = pair.generator
        self.optimizers = {"G": torch.optim.Adam(generator.parameters(), lr=config["lr"],
                                                 betas=config["betas"])}
        self.scalers = {"G": grad_scaler(device, amp)}
        self.clipping = (GradientClipping(self.optimizers["G"], generator.parameters(),
                                          float(config["grad_clip"]))
                         if config["grad_clip"] > 0 else None)
        beta = float(config["ema_beta"])
        self.ema = (ExponentialMovingAverage(generator, beta, rampup=bool(config["ema_rampup"]))
                    if beta > 0 else None)
        self.preview_steps = config["preview_steps"]

    def sample_model(self) -> nn.Module:
        """The generator that samples: the EMA copy when there is one."""
        return self.ema.model if self.ema is not None else unwrap(self.pair.generator)

    def preview(self) -> torch.Tensor:
        """The sample model's images of seeds 0..63 in ``preview_steps`` DDIM steps: the
        trainer's grids and diagnostics, cheaper than ``zoo sample``'s when fewer."""
        with eval_mode(self.sample_model()) as model:
            latents = seed_latents(PREVIEW_SEEDS, model.z_dim).to(self.device)
            return model.sample(latents, self.preview_steps)

    def __call__(self, batch: torch.Tensor) -> dict[str, float]:
        generator = self.pair.generator
        x0 = device_images(batch, self.device)
        schedule = unwrap(generator).schedule.alphas_cumprod
        with self.autocast:
            loss = noise_prediction_loss(generator, schedule, x0)
        if self.clipping is not None:
            self.clipping.norm = loss.new_full((), float("nan"))  # stays so if skipped
        applied = optimizer_step(self.optimizers["G"], self.scalers["G"], loss)
        if self.ema is not None:
            self.ema.update(generator)
        stats = {"loss": loss.detach().float()}
        if self.clipping is not None:
            stats["grad_norm"] = self.clipping.norm.detach().float()
        values = torch.stack(list(stats.values())).tolist()
        return {**dict(zip(stats, values)), "skipped": 1 - int(applied)}

    def state_dict(self) -> dict[str, Any]:
        """Optimizer, scaler and EMA: everything needed to continue bit-exactly."""
        return training_state(self.optimizers, self.scalers, self.ema)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_training_state(self.optimizers, self.scalers, self.ema, state)
