"""The training step of the upsampler autoencoders (``generators.nets.autoencoder``).

Per call, on a batch x of real crops:

1. G (D frozen): |G(x) - x|_1 + adv_weight * the loss's generator term on D(G(x));
2. D (when adv_weight > 0): the real crops against their reconstructions, with the family's
   loss (LSGAN by default, as CycleGAN trains its PatchGAN).

The L1 term keeps each reconstruction aligned with its photo; the small adversarial term keeps
it from being merely blurry, so it carries the sharp trace of the decoder's upsampler as a GAN
would. With ``amp`` (CUDA) the nets run in mixed-precision autocast with one GradScaler per
optimizer.
"""

from __future__ import annotations

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

PREVIEW_SIZE = 16  # real crops kept for the sample grid (shown reconstructed)
SAMPLE_TILE = 1024  # sources larger than this go through in tiles (UpsamplerAutoencoder)


class AutoencoderStep(StepBase):
    """One step on a batch of real crops (N, 3, R, R) in [-1, 1]; see the module docstring.

    Returns ``loss_g`` (the whole G objective), ``l1`` (its reconstruction part), ``skipped``
    and ``loss_d``; with a discriminator also ``loss_g_gan`` and ``d_real`` / ``d_fake`` (the
    loss's score of D on the crops and on their reconstructions, before D's update). Without
    one (adv_weight 0) ``loss_d`` is 0.
    """

    def __init__(self, pair: GanPair, device: torch.device, *, amp: bool = False):
        super().__init__(pair, device, amp=amp)
        config = pair.config
        self.loss = get_loss(config["loss"])
        self.adv_weight = float(config["adv_weight"])
        nets = {"G": pair.generator}
        if "discriminator" in pair.net_names:
            nets["D"] = pair.discriminator
        self.optimizers = {name: torch.optim.Adam(net.parameters(), lr=config["lr"],
                                                  betas=config["betas"])
                           for name, net in nets.items()}
        self.scalers = {name: grad_scaler(device, amp) for name in self.optimizers}
        self.preview_images = torch.empty(0, 3, config["resolution"], config["resolution"])

    @staticmethod
    def reconstruct(pair: GanPair, image: torch.Tensor) -> torch.Tensor:
        """The reconstruction of ``image`` (1, 3, H, W) at its own size (tiles above
        SAMPLE_TILE px a side)."""
        return pair.generator(image, tile=SAMPLE_TILE)

    def preview(self) -> torch.Tensor:
        """G (eval mode) on the first real crops seen (up to PREVIEW_SIZE)."""
        with eval_mode(self.pair.generator) as generator:
            return generator(self.preview_images.to(self.device))

    def __call__(self, batch: torch.Tensor) -> dict[str, float]:
        real = device_images(batch, self.device)
        self.preview_images = extend_preview(self.preview_images, real, PREVIEW_SIZE)
        discriminator = self.pair.nets.get("discriminator")
        stats: dict[str, torch.Tensor] = {}
        with self.autocast:
            fake = self.pair.generator(real)
            stats["l1"] = F.l1_loss(fake.float(), real)
        loss_g = stats["l1"]
        if discriminator is not None:
            discriminator.requires_grad_(False)
            try:
                with self.autocast, no_sync(discriminator):
                    stats["loss_g_gan"] = self.loss.generator(discriminator(fake))
            finally:
                discriminator.requires_grad_(True)
            loss_g = loss_g + self.adv_weight * stats["loss_g_gan"]
        applied = [optimizer_step(self.optimizers["G"], self.scalers["G"], loss_g)]
        stats["loss_g"] = loss_g
        stats["loss_d"] = torch.zeros((), device=self.device)
        if discriminator is not None:
            with self.autocast:
                real_out, fake_out = discriminator(real), discriminator(fake.detach())
                stats["loss_d"] = self.loss.discriminator(real_out, fake_out)
            applied.append(optimizer_step(self.optimizers["D"], self.scalers["D"],
                                          stats["loss_d"]))
            stats["d_real"] = self.loss.score(real_out.detach().float()).mean()
            stats["d_fake"] = self.loss.score(fake_out.detach().float()).mean()
        values = torch.stack([value.detach().float() for value in stats.values()]).tolist()
        return {**dict(zip(stats, values)), "skipped": len(applied) - sum(applied)}

    def state_dict(self) -> dict[str, Any]:
        """Optimizers, scalers and the preview crops."""
        return {**optimizer_state(self.optimizers, self.scalers),
                "preview_images": self.preview_images.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_optimizer_state(self.optimizers, self.scalers, state)
        self.preview_images = state["preview_images"].cpu().clone()
