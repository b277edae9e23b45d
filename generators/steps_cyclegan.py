"""The CycleGAN training step (junyanz ``models/cycle_gan_model.py`` and ``util/image_pool.py``).

Per call, with unaligned batches a (domain A) and b (domain B):

1. G (G_AB and G_BA together, D frozen): adversarial loss of D_B(G_AB(a)) and D_A(G_BA(b))
   + lambda_cycle (|G_BA(G_AB(a)) - a|_1 + |G_AB(G_BA(b)) - b|_1)
   + lambda_identity lambda_cycle (|G_AB(b) - b|_1 + |G_BA(a) - a|_1);
2. D (D_A and D_B together): each judges its domain's real images against fakes drawn from a
   pool of past fakes (:class:`ImagePool`), with the family's loss (LSGAN, which halves D's
   loss, by default).

Adam's lr is constant for the first ``decay_start * total_steps`` steps, then falls linearly
to 0 at ``total_steps`` (:func:`linear_decay_factor`). With ``amp`` (CUDA) the nets run in
mixed-precision autocast with one GradScaler per optimizer.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
import torch.nn.functional as F

from crashsafe.runtime import grad_scaler

from .distributed import no_sync
from .losses import get_loss
from .registry import GanPair
from .sampling import eval_mode
from .steps import (StepBase, device_images, extend_preview, load_optimizer_state,
                    optimizer_state, optimizer_step)

PREVIEW_SIZE = 64  # real A images kept for the grid and the diagnostics (translated to B)


def linear_decay_factor(step: int, total_steps: int, decay_start: float) -> float:
    """The lr multiplier before update ``step`` (0-based): 1 until ``decay_start *
    total_steps``, then linear down to 0 at ``total_steps`` (and 0 after)."""
    start = int(decay_start * total_steps)
    if step < start:
        return 1.0
    return max(0.0, (total_steps - step) / max(total_steps - start, 1))


class ImagePool:
    """A buffer of up to ``size`` past fakes (Shrivastava et al. 2017), so D also learns from
    the generator's history and not only its latest output.

    :meth:`query` returns, per image: the image itself while the pool fills; afterwards, with
    probability 1/2 a stored fake chosen uniformly (the new image takes its place) and
    otherwise the image itself. Draws come from the pool's own ``generator`` (CPU), whose
    state and the stored images are part of :meth:`state_dict`.
    """

    def __init__(self, size: int, generator: torch.Generator):
        self.size = size
        self.generator = generator
        self.images: list[torch.Tensor] = []

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images
        out = []
        for image in images.detach():
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif float(torch.rand((), generator=self.generator)) < 0.5:
                index = int(torch.randint(self.size, (), generator=self.generator))
                out.append(self.images[index])
                self.images[index] = image.clone()
            else:
                out.append(image)
        return torch.stack(out)

    def state_dict(self) -> dict[str, Any]:
        return {"images": list(self.images), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.images = [image.clone() for image in state["images"]]
        self.generator.set_state(state["generator"].cpu())


class CycleGANStep(StepBase):
    """One CycleGAN step on a batch (images_A, images_B); see the module docstring.

    Returns ``loss_d`` (D_A + D_B), ``loss_g`` (the whole G objective), its parts
    ``loss_g_gan``, ``cycle`` and ``identity``, ``d_real`` / ``d_fake`` (the loss's score of
    D on real and on pooled fake images, both domains, before D's update), ``lr`` and
    ``skipped``.
    """

    def __init__(self, pair: GanPair, device: torch.device, *, amp: bool = False):
        super().__init__(pair, device, amp=amp)
        config = pair.config
        self.loss = get_loss(config["loss"])
        self.lambda_cycle = float(config["lambda_cycle"])
        self.lambda_identity = float(config["lambda_identity"]) * self.lambda_cycle
        self.total_steps = int(config["total_steps"])
        self.decay_start = float(config["decay_start"])
        self.lr = float(config["lr"])
        self.optimizers = {
            "G": torch.optim.Adam(itertools.chain(pair.G_AB.parameters(), pair.G_BA.parameters()),
                                  lr=self.lr, betas=config["betas"]),
            "D": torch.optim.Adam(itertools.chain(pair.D_A.parameters(), pair.D_B.parameters()),
                                  lr=self.lr, betas=config["betas"]),
        }
        self.scalers = {name: grad_scaler(device, amp) for name in self.optimizers}
        # Each pool draws from its own generator, seeded from torch's global one.
        self.pools = {domain: ImagePool(int(config["pool_size"]), torch.Generator().manual_seed(
            int(torch.randint(2 ** 62, ())))) for domain in ("A", "B")}
        self.preview_images = torch.empty(0, 3, config["resolution"], config["resolution"])
        self.steps_done = 0

    @staticmethod
    def translate(pair: GanPair, images: torch.Tensor, direction: str) -> torch.Tensor:
        """``G_AB(images)`` for "AtoB", ``G_BA(images)`` for "BtoA"."""
        nets = {"AtoB": pair.G_AB, "BtoA": pair.G_BA}
        if direction not in nets:
            raise ValueError(f"direction must be 'AtoB' or 'BtoA', got {direction!r}")
        return nets[direction](images)

    def preview(self) -> torch.Tensor:
        """G_AB (eval mode) on the first real A images seen (up to PREVIEW_SIZE)."""
        with eval_mode(self.pair.G_AB) as generator:
            return generator(self.preview_images.to(self.device))

    def _set_lr(self) -> float:
        lr = self.lr * linear_decay_factor(self.steps_done, self.total_steps, self.decay_start)
        for optimizer in self.optimizers.values():
            for group in optimizer.param_groups:
                group["lr"] = lr
        return lr

    def _update(self, name: str, loss: torch.Tensor) -> bool:
        return optimizer_step(self.optimizers[name], self.scalers[name], loss)

    def __call__(self, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
        pair = self.pair
        real_a, real_b = (device_images(images, self.device) for images in batch)
        self.preview_images = extend_preview(self.preview_images, real_a, PREVIEW_SIZE)
        lr = self._set_lr()

        discriminators = (pair.D_A, pair.D_B)
        for net in discriminators:
            net.requires_grad_(False)
        try:
            with self.autocast, no_sync(pair.D_A), no_sync(pair.D_B):
                fake_b, fake_a = pair.G_AB(real_a), pair.G_BA(real_b)
                loss_gan = (self.loss.generator(pair.D_B(fake_b))
                            + self.loss.generator(pair.D_A(fake_a)))
                cycle = (F.l1_loss(pair.G_BA(fake_b).float(), real_a)
                         + F.l1_loss(pair.G_AB(fake_a).float(), real_b))
                loss_g = loss_gan + self.lambda_cycle * cycle
                identity = torch.zeros((), device=self.device)
                if self.lambda_identity > 0:
                    identity = (F.l1_loss(pair.G_AB(real_b).float(), real_b)
                                + F.l1_loss(pair.G_BA(real_a).float(), real_a))
                    loss_g = loss_g + self.lambda_identity * identity
            applied_g = self._update("G", loss_g)
        finally:
            for net in discriminators:
                net.requires_grad_(True)

        pooled_b = self.pools["B"].query(fake_b)
        pooled_a = self.pools["A"].query(fake_a)
        with self.autocast:
            outputs = [(pair.D_A(real_a), pair.D_A(pooled_a)),
                       (pair.D_B(real_b), pair.D_B(pooled_b))]
            loss_d = sum(self.loss.discriminator(real, fake) for real, fake in outputs)
        applied_d = self._update("D", loss_d)
        self.steps_done += 1

        def score(index: int) -> torch.Tensor:
            return torch.stack([self.loss.score(out[index].detach().float()).mean()
                                for out in outputs]).mean()

        names = ("loss_d", "loss_g", "loss_g_gan", "cycle", "identity", "d_real", "d_fake")
        values = torch.stack([loss_d.detach().float(), loss_g.detach().float(),
                              loss_gan.detach().float(), cycle.detach(), identity.detach(),
                              score(0), score(1)]).tolist()
        return {**dict(zip(names, values)), "lr": lr,
                "skipped": 2 - int(applied_g) - int(applied_d)}

    def state_dict(self) -> dict[str, Any]:
        """Optimizers, scalers, both pools (images and generator), preview images, counter."""
        return {
            **optimizer_state(self.optimizers, self.scalers),
            "pools": {domain: pool.state_dict() for domain, pool in self.pools.items()},
            "preview_images": self.preview_images.clone(),
            "steps_done": self.steps_done,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_optimizer_state(self.optimizers, self.scalers, state)
        for domain, pool in self.pools.items():
            pool.load_state_dict(state["pools"][domain])
        self.preview_images = state["preview_images"].cpu().clone()
        self.steps_done = int(state["steps_done"])
