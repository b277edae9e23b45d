"""Sample quality from feature arrays: Frechet distance, KID and k-NN precision/recall.

The figures depend on the feature extractor, so every name carries it: ``FD_<backbone>``
(the Frechet Inception Distance when the backbone is Inception-v3 with the FID weights),
``KID_<backbone>``, ``precision_<backbone>``, ``recall_<backbone>``. Features come from any
pooled image model (:func:`embed_images`); ``forensics zoo metrics`` uses the offline
ImageNet backbones of ``forensics.backbones`` and, when the user has its weights locally,
torchvision's Inception-v3 (:func:`inception_feature_model`).

- Frechet distance (Heusel et al. 2017): |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)), the
  trace of the square root from the eigenvalues of the symmetric S1^(1/2) S2 S1^(1/2), or, for
  sets smaller than the feature size, from the singular values of the centred A B^T: exact
  for the rank-deficient covariances of small sets, where a general sqrtm is unstable.
- KID (Binkowski et al. 2018): the unbiased MMD^2 with the kernel (x.y / d + 1)^3, averaged
  over random subsets; the subset size shrinks to the smaller set, so small sets still work.
- Precision / recall (Kynkaanniemi et al. 2019): the share of fakes inside some real image's
  k-NN ball, and of reals inside some fake's.
- Inception Score (Salimans et al. 2016): exp(E_x KL(p(y|x) || p(y))) over an ImageNet
  classifier's class probabilities, the mean and spread over ``splits`` equal parts of the fakes
  (10 in the paper). It needs no real images: 1 when every image gets the same class
  distribution, k when the images fall confidently and evenly into k classes. It rewards
  confident, varied ImageNet classes, so on faces or textures (one "class") it stays low
  whatever the quality; read it beside FD and KID. ``IS_<classifier>`` names the classifier:
  only Inception-v3 gives figures comparable to papers, and torchvision's 1000-class weights
  differ from the original TF graph's 1008 outputs, so even those match only approximately.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from crashsafe.images import load_image
from crashsafe.weights import read_state_dict

from .data import square_rgb


def _as_features(features: np.ndarray, what: str, minimum: int = 2) -> np.ndarray:
    array = np.asarray(features, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] < minimum:
        raise ValueError(f"{what} must be an (N >= {minimum}, D) feature array, got shape "
                         f"{array.shape}")
    return array


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two (N, D) feature sets (>= 2 rows each)."""
    a, b = _as_features(features_a, "features_a"), _as_features(features_b, "features_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sizes differ: {a.shape[1]} vs {b.shape[1]}")
    centred_a, centred_b = a - a.mean(0), b - b.mean(0)
    scale_a, scale_b = len(a) - 1, len(b) - 1
    if min(len(a), len(b)) < a.shape[1]:
        # Few images, many features: the nonzero eigenvalues of S_a S_b are the squared
        # singular values of A B^T / sqrt(scale), a small (N_a, N_b) problem.
        singular = np.linalg.svd(centred_a @ centred_b.T, compute_uv=False)
        trace_root = singular.sum() / np.sqrt(scale_a * scale_b)
    else:
        cov_a = centred_a.T @ centred_a / scale_a
        cov_b = centred_b.T @ centred_b / scale_b
        values, vectors = np.linalg.eigh(cov_a)
        root_a = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
        cross = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
        trace_root = np.sqrt(np.clip(cross, 0, None)).sum()
    difference = a.mean(0) - b.mean(0)
    return float(difference @ difference + (centred_a ** 2).sum() / scale_a
                 + (centred_b ** 2).sum() / scale_b - 2 * trace_root)


def kernel_distance(features_a: np.ndarray, features_b: np.ndarray, *, num_subsets: int = 100,
                    subset_size: int = 1000, seed: int = 0) -> tuple[float, float, int]:
    """KID: (mean, std over subsets, subset size) of the unbiased polynomial-kernel MMD^2.

    Each subset draws ``min(subset_size, len(a), len(b))`` rows of each set without
    replacement.
    """
    a, b = _as_features(features_a, "features_a"), _as_features(features_b, "features_b")
    size = min(subset_size, len(a), len(b))
    rng = np.random.default_rng(seed)
    dim = a.shape[1]

    def kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return (x @ y.T / dim + 1) ** 3

    values = []
    for _ in range(num_subsets):
        x = a[rng.choice(len(a), size, replace=False)]
        y = b[rng.choice(len(b), size, replace=False)]
        k_xx, k_yy, k_xy = kernel(x, x), kernel(y, y), kernel(x, y)
        off_diagonal = (k_xx.sum() - np.trace(k_xx)) + (k_yy.sum() - np.trace(k_yy))
        within = off_diagonal / (size * (size - 1))
        values.append(within - 2 * k_xy.mean())
    return float(np.mean(values)), float(np.std(values)), size


def _distances(a: np.ndarray, b: np.ndarray, block: int = 1024) -> np.ndarray:
    """Euclidean distances (len(a), len(b)), computed in row blocks."""
    squared_b = (b * b).sum(1)
    rows = []
    for start in range(0, len(a), block):
        x = a[start:start + block]
        squared = (x * x).sum(1)[:, None] + squared_b[None, :] - 2 * x @ b.T
        rows.append(np.sqrt(np.clip(squared, 0, None)))
    return np.concatenate(rows)


def _knn_radii(features: np.ndarray, k: int) -> np.ndarray:
    """Distance of each row to its k-th nearest other row."""
    return np.partition(_distances(features, features), k, axis=1)[:, k]


def precision_recall(real_features: np.ndarray, fake_features: np.ndarray,
                     k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al.) with k-NN balls; needs > k rows."""
    real = _as_features(real_features, "real_features", k + 1)
    fake = _as_features(fake_features, "fake_features", k + 1)
    real_radii, fake_radii = _knn_radii(real, k), _knn_radii(fake, k)
    fake_to_real = _distances(fake, real)
    precision = (fake_to_real <= real_radii[None, :]).any(1).mean()
    recall = (fake_to_real.T <= fake_radii[None, :]).any(1).mean()
    return float(precision), float(recall)


def quality_report(real_features: np.ndarray, fake_features: np.ndarray, backbone: str, *,
                   kid_subsets: int = 100, kid_subset_size: int = 1000, k: int = 3) -> dict:
    """All figures for one feature space, each key naming ``backbone``."""
    kid, kid_std, size = kernel_distance(real_features, fake_features, num_subsets=kid_subsets,
                                         subset_size=kid_subset_size)
    precision, recall = precision_recall(real_features, fake_features, k)
    return {
        f"FD_{backbone}": frechet_distance(real_features, fake_features),
        f"KID_{backbone}": kid,
        f"KID_{backbone}_std": kid_std,
        f"precision_{backbone}": precision,
        f"recall_{backbone}": recall,
        "kid_subset_size": size,
        "knn_k": k,
        "n_real": len(real_features),
        "n_fake": len(fake_features),
    }


def inception_score(probabilities: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """Inception Score (mean, std over ``splits`` parts) of class probabilities (N, K).

    Rows are normalised to sum to 1; N must allow ``splits`` parts of at least 2 images.
    """
    p = _as_features(probabilities, "probabilities", 2 * splits)
    if splits < 1 or (p < 0).any():
        raise ValueError(f"splits must be >= 1 (got {splits}) and probabilities non-negative")
    p = p / p.sum(axis=1, keepdims=True)
    scores = []
    for part in np.array_split(p, splits):
        marginal = part.mean(axis=0, keepdims=True)
        # 0 log 0 = 0: classes an image never takes add nothing to its divergence.
        kl = np.where(part > 0, part * (np.log(np.where(part > 0, part, 1.0)) -
                                        np.log(np.where(part > 0, marginal, 1.0))), 0.0)
        scores.append(float(np.exp(kl.sum(axis=1).mean())))
    return float(np.mean(scores)), float(np.std(scores))


class PooledAndProbabilities(nn.Module):
    """An ImageNet classifier seen as ``body`` (images -> pooled features) and ``head``
    (features -> logits): one pass gives both the features (FD, KID, precision/recall) and
    the class probabilities (Inception Score)."""

    def __init__(self, body: nn.Module, head: nn.Module):
        super().__init__()
        self.body, self.head = body, head

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(images).flatten(1)
        return features, self.head(features).float().softmax(dim=1)


def embed_images(paths: Sequence[str | Path], model: nn.Module, *, size: int,
                 mean: Sequence[float], std: Sequence[float], device: str | torch.device = "cpu",
                 batch_size: int = 32) -> np.ndarray | tuple[np.ndarray, ...]:
    """Pooled features (N, D) float64 of the images at ``paths``; a tuple of such arrays when
    ``model`` returns a tuple of tensors (e.g. :class:`PooledAndProbabilities`).

    Each image is decoded by :func:`crashsafe.images.load_image`, its shorter side resized to
    ``size`` (bicubic, antialiased when shrinking) and centre-cropped, scaled to [0, 1] and
    normalised with ``mean`` / ``std`` (the backbone's own), then run through ``model`` in eval
    mode.
    """
    if not paths:
        raise ValueError("no images to embed")
    model = model.eval().to(device)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    batches = []
    with torch.inference_mode():
        for start in range(0, len(paths), batch_size):
            arrays = np.stack([square_rgb(load_image(p), size)
                               for p in paths[start:start + batch_size]])
            images = torch.from_numpy(arrays).permute(0, 3, 1, 2).float().div(255)
            output = model(((images - mean_t) / std_t).to(device))
            parts = output if isinstance(output, tuple) else (output,)
            batches.append([part.flatten(1).double().cpu().numpy() for part in parts])
    arrays = tuple(np.concatenate(column) for column in zip(*batches))
    return arrays if isinstance(output, tuple) else arrays[0]


@dataclass(frozen=True)
class FeatureSpace:
    """An ImageNet classifier as a feature space for the figures: ``model`` (a
    :class:`PooledAndProbabilities`), the ``name`` that keys every figure, its input ``size``
    and input normalisation."""

    model: PooledAndProbabilities
    name: str
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def from_timm(cls, backbone: nn.Module, name: str) -> "FeatureSpace":
        """A timm classifier with ImageNet weights: its pooled features and its head (the
        backbone's classifier is taken off it); size and normalisation from its config."""
        head = backbone.get_classifier()
        backbone.reset_classifier(0)  # the body now ends at the pooled features
        cfg = backbone.pretrained_cfg
        return cls(PooledAndProbabilities(backbone, head), name,
                   int(cfg.get("input_size", (3, 224, 224))[-1]),
                   tuple(cfg.get("mean", (0.5,) * 3)), tuple(cfg.get("std", (0.5,) * 3)))

    def embed(self, paths: Sequence[str | Path], *, device: str | torch.device = "cpu",
              batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """(pooled features, class probabilities) of the images at ``paths``."""
        return embed_images(paths, self.model, size=self.size, mean=self.mean, std=self.std,
                            device=device, batch_size=batch_size)


def sample_quality(real: tuple[np.ndarray, np.ndarray], fake: tuple[np.ndarray, np.ndarray],
                   name: str, *, is_splits: int = 10, kid_subset_size: int = 1000,
                   k: int = 3) -> dict:
    """FD, KID, precision/recall and the Inception Score of embedded reals and fakes (each
    ``FeatureSpace.embed``'s pair); the IS uses up to ``is_splits`` parts of 2+ fakes."""
    splits = max(1, min(is_splits, len(fake[1]) // 2))
    score, spread = inception_score(fake[1], splits)
    return {**quality_report(real[0], fake[0], name, kid_subset_size=kid_subset_size, k=k),
            f"IS_{name}": score, f"IS_{name}_std": spread, "is_splits": splits}


INCEPTION_SIZE = 299
_INCEPTION_ADVICE = "pass a torchvision inception_v3 state dict (.safetensors or .pth)"


def inception_feature_model(weights: str | Path) -> PooledAndProbabilities:
    """torchvision's Inception-v3 with the state dict in ``weights`` (``.safetensors`` or
    ``.pth``, read by :func:`crashsafe.weights.read_state_dict`) as 2048 pooled features and its
    1000 ImageNet class probabilities, for 299 px input normalised with mean = std = 0.5.

    These are torchvision's ImageNet weights; the TF-FID weights of pytorch-fid differ slightly
    in architecture, so figures match published FIDs only approximately.
    """
    from torchvision.models import inception_v3

    path = Path(weights)
    state = read_state_dict(path, advice=_INCEPTION_ADVICE)
    model = inception_v3(weights=None, aux_logits=True, init_weights=False,
                         transform_input=False)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]  # load_state_dict lists every key
        raise ValueError(f"{path} is not a torchvision inception_v3 state dict ({detail}); "
                         f"{_INCEPTION_ADVICE}") from exc
    model.aux_logits, model.AuxLogits = False, None
    head, model.fc = model.fc, nn.Identity()
    return PooledAndProbabilities(model, head).eval()
