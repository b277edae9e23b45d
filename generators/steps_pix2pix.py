"""The Pix2Pix training step (Isola et al. 2017; junyanz ``models/pix2pix_model.py``).

Per call, with aligned batches (x inputs, y targets) and G's output G(x):

1. D: judges the stacked pairs (x, y) as real and (x, G(x)) as fake with the family's loss
   (the paper's BCE, ``nonsaturating``, by default). The reference halves D's loss to slow D
   down; under Adam a constant factor on a loss changes nothing, so it is left out.
2. G (D frozen): the adversarial loss of D(x, G(x)) + ``l1_weight`` (100) * |G(x) - y|_1, the
   L1 term keeping the output close to the target at low frequencies while D judges texture.

Adam with the config's ``lr`` and ``betas`` (2e-4, (0.5, 0.999)) for both nets. G's dropout
draws from torch's global generator, which the trainer seeds and checkpoints. With ``amp``
(CUDA) the nets run in mixed-precision autocast with one GradScaler per optimizer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .data_aligned import PairTask
from crashsafe.runtime import grad_scaler

from .distributed import no_sync
from .losses import get_loss
from .registry import GanPair
from .sampling import eval_mode
from .steps import (StepBase, device_images, extend_preview, load_optimizer_state,
                    optimizer_state, optimizer_step)

PREVIEW_SIZE = 64  # training inputs kept for the grid and the diagnostics (64 as elsewhere)


def trained_direction(config: dict) -> str:
    """The direction G translates in: the config's for side-by-side pairs; "AtoB" (computed
    input -> photo) for the built-in tasks."""
    return config["direction"] if config["task"] == "pairs" else "AtoB"


class Pix2PixStep(StepBase):
    """One Pix2Pix step on a batch (inputs, targets); see the module docstring.

    Returns ``loss_d``, ``loss_g`` (the whole G objective), its parts ``loss_g_gan`` and
    ``l1``, ``d_real`` / ``d_fake`` (the loss's score of D on real and generated pairs before
    D's update) and ``skipped``.
    """

    def __init__(self, pair: GanPair, device: torch.device, *, amp: bool = False):
        super().__init__(pair, device, amp=amp)
        config = pair.config
        self.loss = get_loss(config["loss"])
        self.l1_weight = float(config["l1_weight"])
        self.optimizers = {
            "G": torch.optim.Adam(pair.generator.parameters(), lr=config["lr"],
                                  betas=config["betas"]),
            "D": torch.optim.Adam(pair.discriminator.parameters(), lr=config["lr"],
                                  betas=config["betas"]),
        }
        self.scalers = {name: grad_scaler(device, amp) for name in self.optimizers}
        self.preview_inputs = torch.empty(0, 3, config["resolution"], config["resolution"])

    @staticmethod
    def translate(pair: GanPair, images: torch.Tensor, direction: str) -> torch.Tensor:
        """G(images) for the direction G was trained in; ValueError for the other one (there
        is no reverse generator)."""
        trained = trained_direction(pair.config)
        if direction != trained:
            raise ValueError(f"this pix2pix run translates {trained} only (task "
                             f"{pair.config['task']!r}); sample with --direction {trained}")
        return pair.generator(images)

    @staticmethod
    def read_source(pair: GanPair, path: str | Path) -> np.ndarray:
        """What G translates for a source file, (R, R, 3) uint8: the edges or grey image of a
        photo for the built-in tasks; the input half of an A|B file (or a lone input image)
        for ``task="pairs"``."""
        return PairTask.from_config(pair.config).source_input(path)

    def preview(self) -> torch.Tensor:
        """G (eval mode) on the first training inputs seen (up to PREVIEW_SIZE)."""
        with eval_mode(self.pair.generator) as generator:
            return generator(self.preview_inputs.to(self.device))

    def _update(self, name: str, loss: torch.Tensor) -> bool:
        return optimizer_step(self.optimizers[name], self.scalers[name], loss)

    def __call__(self, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
        generator, discriminator = self.pair.generator, self.pair.discriminator
        inputs, targets = (device_images(images, self.device) for images in batch)
        self.preview_inputs = extend_preview(self.preview_inputs, inputs, PREVIEW_SIZE)

        with self.autocast:
            fake = generator(inputs)
            # One D call on real and fake pairs: its norms are per image, so this equals two.
            outputs = discriminator(torch.cat([torch.cat([inputs, targets], dim=1),
                                               torch.cat([inputs, fake.detach()], dim=1)]))
            real_out, fake_out = outputs.chunk(2)
            loss_d = self.loss.discriminator(real_out, fake_out)
        applied_d = self._update("D", loss_d)

        discriminator.requires_grad_(False)  # G's loss needs no gradient for D's weights
        try:
            with self.autocast, no_sync(discriminator):
                loss_gan = self.loss.generator(discriminator(torch.cat([inputs, fake], dim=1)))
                l1 = F.l1_loss(fake.float(), targets.float())
                loss_g = loss_gan + self.l1_weight * l1
            applied_g = self._update("G", loss_g)
        finally:
            discriminator.requires_grad_(True)

        names = ("loss_d", "loss_g", "loss_g_gan", "l1", "d_real", "d_fake")
        values = torch.stack([
            loss_d.detach().float(), loss_g.detach().float(), loss_gan.detach().float(),
            l1.detach(), self.loss.score(real_out.detach().float()).mean(),
            self.loss.score(fake_out.detach().float()).mean(),
        ]).tolist()  # the step's only host sync besides the finiteness checks
        return {**dict(zip(names, values)), "skipped": 2 - int(applied_d) - int(applied_g)}

    def state_dict(self) -> dict[str, Any]:
        """Optimizers, scalers and the preview inputs: with the trainer's RNG and data
        position, everything a bit-exact resume needs."""
        return {**optimizer_state(self.optimizers, self.scalers),
                "preview_inputs": self.preview_inputs.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_optimizer_state(self.optimizers, self.scalers, state)
        self.preview_inputs = state["preview_inputs"].cpu().clone()
