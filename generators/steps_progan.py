"""The Progressive GAN training step: the default adversarial step plus the growth schedule.

The schedule is part of the config, counted in training steps (the reference counts images):
``stage_steps`` at ``initial_resolution``, then for each doubling ``fade_steps`` steps in which
the new layers fade in (alpha = 1/(F+1), 2/(F+1), ..., F/(F+1) for F = ``fade_steps``) and
``stage_steps`` with the new resolution stable; training goes on at the final resolution
once it is stable. The step counts its own updates (saved in its state), so a resumed run lands
in the same stage and alpha, also across a growth step.

Per call (update t): the stage of t is set on both nets; with ``reset_optimizer`` Adam's
moments are cleared when t starts a new phase (a fade-in begins or ends), as the reference's
``reset_opt_for_new_lod``; the real batch (N, 3, R, R) is average-pooled to the stage's
resolution, blended during a fade with its own 2x-pooled, nearest-upsampled version (as the
generator's output is), and nearest-upsampled back to R; then
:class:`~generators.steps.AdversarialStep` does the D and G updates (WGAN-GP by default) with
the drift term ``drift`` * E[D(x)^2] added to D's loss, and the EMA generator follows.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from .distributed import unwrap
from .losses import GanLoss
from .registry import GanPair
from .steps import AdversarialStep


def num_levels(resolution: int) -> int:
    """Resolutions 4, 8, ..., ``resolution``: log2(resolution) - 1 levels."""
    return int(math.log2(resolution)) - 1


@dataclasses.dataclass(frozen=True)
class GrowthStage:
    """Level l trains at 4 * 2**l px; ``alpha`` < 1 while its new layers fade in."""

    level: int
    alpha: float

    @property
    def resolution(self) -> int:
        return 4 << self.level

    @property
    def phase(self) -> tuple[int, bool]:
        """(level, stable): what changes when Adam is reset."""
        return self.level, self.alpha == 1.0


@dataclasses.dataclass(frozen=True)
class GrowthSchedule:
    """The stage of every update, from a config's ``resolution``, ``initial_resolution``,
    ``stage_steps`` and ``fade_steps``."""

    first_level: int
    last_level: int
    stage_steps: int
    fade_steps: int

    @classmethod
    def from_config(cls, config: dict) -> "GrowthSchedule":
        return cls(num_levels(config["initial_resolution"]) - 1,
                   num_levels(config["resolution"]) - 1,
                   int(config["stage_steps"]), int(config["fade_steps"]))

    def stage(self, update: int) -> GrowthStage:
        """The stage of update ``update`` (0-based)."""
        grown, into = divmod(update - self.stage_steps, self.stage_steps + self.fade_steps)
        level = self.first_level + grown + 1 if update >= self.stage_steps else self.first_level
        if level > self.last_level:
            return GrowthStage(self.last_level, 1.0)
        if level > self.first_level and into < self.fade_steps:
            return GrowthStage(level, (into + 1) / (self.fade_steps + 1))
        return GrowthStage(level, 1.0)

    @property
    def grown_at(self) -> int:
        """The first update at the final resolution with alpha 1."""
        growths = self.last_level - self.first_level
        return growths * (self.stage_steps + self.fade_steps)


def with_drift(loss: GanLoss, drift: float) -> GanLoss:
    """``loss`` whose D side also pays ``drift`` * mean(D(x)^2) (Karras et al. 2018, 4.1)."""
    if drift == 0:
        return loss

    def discriminator(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return loss.discriminator(real, fake) + drift * real.float().square().mean()

    return dataclasses.replace(loss, discriminator=discriminator)


def fade_reals(images: torch.Tensor, stage: GrowthStage) -> torch.Tensor:
    """Real images (N, 3, R, R) as the nets see them at ``stage``: average-pooled to its
    resolution, blended during a fade like the generator's output, nearest-upsampled to R."""
    size = images.shape[-1]
    factor = size // stage.resolution
    x = F.avg_pool2d(images, factor) if factor > 1 else images
    if stage.alpha < 1:
        coarse = F.interpolate(F.avg_pool2d(x, 2), scale_factor=2, mode="nearest")
        x = torch.lerp(coarse, x, stage.alpha)
    return F.interpolate(x, scale_factor=factor, mode="nearest") if factor > 1 else x


class ProGANStep(AdversarialStep):
    """One Progressive GAN step; see the module docstring. Returns AdversarialStep's
    statistics plus the stage's ``resolution`` and ``alpha``. Its state is AdversarialStep's:
    the update counter there fixes the stage."""

    def __init__(self, pair: GanPair, device: torch.device, *, amp: bool = False):
        super().__init__(pair, device, amp=amp)
        config = pair.config
        self.schedule = GrowthSchedule.from_config(config)
        self.reset_optimizer = bool(config["reset_optimizer"])
        self.loss = with_drift(self.loss, float(config["drift"]))

    @staticmethod
    def unfinished(config: dict, steps_done: int) -> str | None:
        """Why a run of ``config`` after ``steps_done`` steps cannot sample its final
        resolution yet (None when it can): its generator has not trained fully grown."""
        schedule = GrowthSchedule.from_config(config)
        if steps_done > schedule.grown_at:
            return None
        stage = schedule.stage(max(steps_done - 1, 0))
        fading = f", fading in at alpha {stage.alpha:.2f}" if stage.alpha < 1 else ""
        return (f"this progan run has grown to {stage.resolution}x{stage.resolution} px of "
                f"{config['resolution']}x{config['resolution']}{fading} after {steps_done} "
                f"steps; its first step fully grown is step {schedule.grown_at + 1}: train on "
                f"with --steps {schedule.grown_at + 1} (or more) --resume, then sample")

    def __call__(self, batch: torch.Tensor) -> dict[str, float]:
        stage = self.schedule.stage(self.updates)
        if self.reset_optimizer and self.updates > 0 \
                and stage.phase != self.schedule.stage(self.updates - 1).phase:
            for optimizer in self.optimizers.values():
                optimizer.state.clear()
        for net in (self.pair.generator, self.pair.discriminator):
            unwrap(net).set_stage(stage.level, stage.alpha)
        stats = super().__call__(fade_reals(batch.to(self.device), stage))
        return {**stats, "resolution": float(stage.resolution), "alpha": stage.alpha}
