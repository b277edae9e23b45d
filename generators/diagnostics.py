"""Mode-collapse diagnostics: how diverse a fixed batch of samples is, against real images.

Images are average-pooled to 16x16 and mapped by a fixed Gaussian random projection (the same
matrix for every call with the same seed): a cheap feature space that keeps pixel distances
roughly (Johnson-Lindenstrauss) and, unlike D's features, does not drift as training goes on,
so values from different steps compare. Two figures:

- ``diversity_ratio``: the mean pairwise distance of the samples over that of the real batch;
  about 1 for a generator as varied as the data, towards 0 as it collapses;
- ``nn_distinct``: how many distinct real images are the nearest neighbour of some sample
  (``nn_distinct_fraction``: over the most possible, min(samples, reals)); a collapsed
  generator has one.
"""

from __future__ import annotations

import json
import math
from typing import Any

import torch
import torch.nn.functional as F

POOLED_SIZE = 16


def pool_for_probe(images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) images -> (N, C, 16, 16) float32 on the CPU: all the probe keeps of them
    (pooling pooled images again changes nothing, so large reference sets can come in chunks)."""
    return F.adaptive_avg_pool2d(images.detach().float().cpu(), POOLED_SIZE)


def projection_features(images: torch.Tensor, dim: int = 128, seed: int = 0) -> torch.Tensor:
    """(N, C, H, W) images -> (N, dim) float32 features in a fixed random projection."""
    pooled = pool_for_probe(images).flatten(1)
    projection = torch.randn(pooled.shape[1], dim,
                             generator=torch.Generator().manual_seed(seed)) / math.sqrt(dim)
    return pooled @ projection


def mean_pairwise_distance(features: torch.Tensor) -> float:
    """Mean Euclidean distance over all pairs of distinct rows of (N >= 2, D) features."""
    n = features.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 feature rows for pairwise distances, got {n}")
    return float(torch.cdist(features, features).sum() / (n * (n - 1)))


class CollapseProbe:
    """Diversity of generated batches measured against one fixed batch of real images."""

    def __init__(self, real_images: torch.Tensor, dim: int = 128, seed: int = 0):
        self.dim, self.seed = dim, seed
        self.real_features = projection_features(real_images, dim, seed)
        self.real_spread = mean_pairwise_distance(self.real_features)

    def measure(self, fake_images: torch.Tensor) -> dict[str, float]:
        """``diversity_ratio``, ``nn_distinct`` and ``nn_distinct_fraction`` of a fake batch."""
        fake = projection_features(fake_images, self.dim, self.seed)
        nearest = torch.cdist(fake, self.real_features).argmin(dim=1)
        distinct = int(nearest.unique().numel())
        return {
            "diversity_ratio": mean_pairwise_distance(fake) / max(self.real_spread, 1e-12),
            "nn_distinct": distinct,
            "nn_distinct_fraction": distinct / min(len(fake), len(self.real_features)),
        }


# Bars below which a run counts as collapsed (issue 15), and a runaway discriminator: D(x)
# above RUNAWAY_REAL and D(G(z)) below RUNAWAY_FAKE for RUNAWAY_STEPS steps in a row.
COLLAPSE_BARS = {"diversity_ratio": 0.7, "nn_distinct_fraction": 0.5}
RUNAWAY_REAL, RUNAWAY_FAKE, RUNAWAY_STEPS = 0.9, 0.1, 50
# Config keys that counter each symptom, in the order to try them (offered where a family
# has them and they are not already in effect).
REMEDIES = {
    "collapse": ("input_skip=true", "diffaugment=color,translation,cutout", "r1_gamma=1",
                 "ema_beta=0.999", "lr=1e-4"),
    "runaway_d": ("diffaugment=color,translation,cutout", "r1_gamma=1", "lr_d=5e-5",
                  "loss=hinge"),
}


class HealthWatch:
    """Reads a run's stats rows as they come and names what goes wrong, once per symptom.

    ``collapse``: the last diagnostics are under a bar of ``COLLAPSE_BARS``; ``runaway_d``: the
    discriminator wins for ``RUNAWAY_STEPS`` steps (G's gradients vanish). Replaying the rows of
    a resumed run gives the same state, so nothing needs saving besides the rows.
    """

    def __init__(self, config: dict):
        self.config = config
        self.warnings: list[dict] = []
        self.last_diagnostics: dict[str, float] | None = None
        self.runaway = 0

    def observe(self, row: dict) -> list[str]:
        """New warnings (messages) that ``row`` raises."""
        found = []
        if "diversity_ratio" in row:
            self.last_diagnostics = {key: row[key] for key in COLLAPSE_BARS}
            if self.collapsed:
                low = ", ".join(f"{key} {row[key]:.2f} (bar {bar})"
                                for key, bar in COLLAPSE_BARS.items() if row[key] < bar)
                found.append(("collapse", f"mode collapse at step {row['step']}: {low}"))
        if "d_real" in row and "d_fake" in row:
            winning = row["d_real"] > RUNAWAY_REAL and row["d_fake"] < RUNAWAY_FAKE
            self.runaway = self.runaway + 1 if winning else 0
            if self.runaway == RUNAWAY_STEPS:
                found.append(("runaway_d", f"the discriminator wins from step "
                              f"{row['step'] - RUNAWAY_STEPS + 1} to {row['step']}: D(x) > "
                              f"{RUNAWAY_REAL} and D(G(z)) < {RUNAWAY_FAKE} (G's gradients "
                              "vanish)"))
        messages = []
        for symptom, text in found:
            if any(w["symptom"] == symptom for w in self.warnings):
                continue
            message = f"{text}; {self.advice(symptom)}"
            self.warnings.append({"step": row["step"], "symptom": symptom, "message": message})
            messages.append(message)
        return messages

    @property
    def collapsed(self) -> bool:
        """Whether the last diagnostics are under a bar (False before any diagnostics)."""
        last = self.last_diagnostics
        return last is not None and any(last[key] < bar for key, bar in COLLAPSE_BARS.items())

    def _offers(self, remedy: str) -> bool:
        """Whether the family has the remedy's key and it is not already set that way."""
        key, value = remedy.split("=", 1)
        if key not in self.config:
            return False
        try:
            wanted = json.loads(value)
        except ValueError:
            wanted = value
        return self.config[key] != wanted

    def advice(self, symptom: str) -> str:
        keys = [r for r in REMEDIES[symptom] if self._offers(r)]
        return ("try " + " or ".join(f"--set {r}" for r in keys) if keys
                else "try a lower lr or more data")

    def summary(self) -> dict[str, Any]:
        """What ``config.json`` records: the warnings so far and the last diagnostics."""
        return {"collapsed": self.collapsed, "last_diagnostics": self.last_diagnostics,
                "warnings": list(self.warnings)}
