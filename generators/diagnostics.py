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

import math

import torch
import torch.nn.functional as F

POOLED_SIZE = 16


def projection_features(images: torch.Tensor, dim: int = 128, seed: int = 0) -> torch.Tensor:
    """(N, C, H, W) images -> (N, dim) float32 features in a fixed random projection."""
    pooled = F.adaptive_avg_pool2d(images.detach().float().cpu(), POOLED_SIZE).flatten(1)
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
