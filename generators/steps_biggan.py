"""The BigGAN training step (after ajbrock/BigGAN-PyTorch's training function).

Per call, with a labelled batch of N real images:

1. D, ``d_steps`` times, each on its own share of the N real images (BigGAN-PyTorch loads
   ``d_steps`` batches per iteration the same way) and as many fakes G(z, y) made without
   gradients, z fresh and y drawn from the batch's classes; real and fake images go through D
   as one batch; the family's loss (hinge by default).
2. G, once: loss(D(G(z, y))) on fresh fakes as many as one D share, plus ``ortho_reg`` times
   :func:`orthogonal_penalty` of G's weight matrices (the shared class embedding excepted).
3. The EMA generator follows G (``ema_beta``, ramped up early); it is what samples.

Optimizers, GradScalers (mixed-precision autocast on CUDA), EMA and their state come from
:class:`generators.steps.AdversarialStep` (``lr`` for G, ``lr_d`` for D: BigGAN's TTUR).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from .distributed import no_sync, unwrap
from .registry import GanPair
from .steps import AdversarialStep, device_images, split_batch


def orthogonal_penalty(weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """BigGAN's orthogonal regulariser: the sum over weights W, each seen as a matrix (out,
    fan_in), of |W W^T * (1 - I)|_F^2. Zero when each W's rows are orthogonal, whatever their
    norms (unlike |W W^T - I|^2, it leaves the scale of the weights free)."""
    total = torch.zeros((), device=weights[0].device if weights else None)
    for weight in weights:
        matrix = weight.float().flatten(1)
        if matrix.shape[0] <= matrix.shape[1]:
            gram = matrix @ matrix.T
            total = total + (gram - torch.diag_embed(gram.diagonal())).square().sum()
        else:  # the same sum from the smaller Gram matrix: |W^T W|^2 - sum_i |w_i|^4
            total = total + ((matrix.T @ matrix).square().sum()
                             - matrix.square().sum(1).square().sum())
    return total


class BigGANStep(AdversarialStep):
    """One BigGAN step on a batch (images, class indices); see the module docstring.

    Returns ``loss_d`` and ``d_real`` / ``d_fake`` (the loss's score of D(x) and D(G(z)) before
    each update) averaged over the D updates, ``loss_g`` (adversarial part), ``ortho`` (the
    unweighted regulariser) and ``skipped`` (updates dropped for a non-finite loss).
    """

    def __init__(self, pair: GanPair, device: torch.device, *, amp: bool = False):
        super().__init__(pair, device, amp=amp)
        self.d_steps = int(pair.config["d_steps"])
        self.ortho_reg = float(pair.config["ortho_reg"])
        self.ortho_weights = [weight for name, weight in unwrap(pair.generator).named_parameters()
                              if weight.dim() >= 2 and not name.startswith("shared.")]

    def _fakes_input(self, n: int, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fresh latents (n, z_dim) and classes drawn at random from ``labels``."""
        z = torch.randn(n, unwrap(self.pair.generator).z_dim, device=self.device)
        picks = torch.randint(len(labels), (n,), device=self.device)
        return z, labels[picks]

    def __call__(self, batch: Any) -> dict[str, float]:
        generator, discriminator = self.pair.generator, self.pair.discriminator
        real, (labels,) = split_batch(batch)
        real = device_images(real, self.device)
        labels = labels.to(self.device, non_blocking=True)
        parts = min(self.d_steps, len(real))

        d_stats, applied = [], []
        for real_part, label_part in zip(real.tensor_split(parts), labels.tensor_split(parts)):
            z, fake_labels = self._fakes_input(len(real_part), labels)
            with self.autocast:
                with torch.no_grad():
                    fake = generator(z, fake_labels)
                out = discriminator(torch.cat([real_part, fake]),
                                    torch.cat([label_part, fake_labels])).float()
                real_out, fake_out = out.split([len(real_part), len(fake)])
                loss_d = self.loss.discriminator(real_out, fake_out)
            applied.append(self._update("D", loss_d))
            d_stats.append(torch.stack([loss_d.detach(), self.loss.score(real_out.detach()).mean(),
                                        self.loss.score(fake_out.detach()).mean()]))

        discriminator.requires_grad_(False)  # G's loss needs no gradient for D's weights
        try:
            z, fake_labels = self._fakes_input(len(real) // parts, labels)
            with self.autocast, no_sync(discriminator):
                loss_g = self.loss.generator(discriminator(generator(z, fake_labels),
                                                           fake_labels))
            ortho = orthogonal_penalty(self.ortho_weights) if self.ortho_reg > 0 \
                else torch.zeros((), device=self.device)
            applied.append(self._update("G", loss_g + self.ortho_reg * ortho))
        finally:
            discriminator.requires_grad_(True)
        if self.ema is not None:
            self.ema.update(generator)
        self.updates += 1

        loss_d, d_real, d_fake = torch.stack(d_stats).mean(0)
        values = torch.stack([loss_d, loss_g.detach().float(), d_real, d_fake,
                              ortho.detach()]).tolist()  # one host sync for all statistics
        names = ("loss_d", "loss_g", "d_real", "d_fake", "ortho")
        return {**dict(zip(names, values)), "skipped": len(applied) - sum(applied)}
