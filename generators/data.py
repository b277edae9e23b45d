"""Training images for the generators: decoded once, held in memory as uint8, and served as
endless shuffled batches whose position is part of a checkpoint.

Three kinds of training data (``generators.registry.DATASET_KINDS``): plain images, images
with class labels (``labelled_dataset``) and two unaligned domains (one dataset each); the
fourth, aligned (input, target) pairs, is ``generators.data_aligned``'s. Images
are resized to the training resolution (:class:`ImageFolderDataset`), or kept at their own size
and cropped (:class:`RandomCropDataset`, for families that must learn from real pixels as they
are). :class:`BatchStream` draws every batch from the datasets given, sharded across
``torchrun`` ranks like ``DistributedSampler``. Every image is decoded by
:func:`crashsafe.images.load_image`, with its size limits, as the detectors' are.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from crashsafe.images import ImageError, load_image


def square_rgb(image: np.ndarray, resolution: int) -> np.ndarray:
    """An (H, W, 3) uint8 image with its shorter side resized to ``resolution`` (bicubic,
    antialiased when shrinking) and centre-cropped square: (R, R, 3) uint8, C-contiguous."""
    height, width = image.shape[:2]
    scale = resolution / min(width, height)
    size = (max(resolution, round(width * scale)), max(resolution, round(height * scale)))
    if size != (width, height):
        image = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BICUBIC))
    left = (size[0] - resolution) // 2
    top = (size[1] - resolution) // 2
    return np.ascontiguousarray(image[top:top + resolution, left:left + resolution])


Decoded = TypeVar("Decoded")


def _decode_all(paths: Sequence[Path], decode: Callable[[Path], Decoded]
                ) -> tuple[list[int], list[Decoded], list[tuple[Path, str]]]:
    """``decode`` each path: the indices and results of those that worked, and the (path,
    reason) pairs of those that raised ValueError (an :class:`ImageError` from the decoder, or
    an image the dataset cannot use; one warning for them); ValueError if none worked."""
    kept: list[int] = []
    decoded: list[Decoded] = []
    skipped: list[tuple[Path, str]] = []
    for index, path in enumerate(paths):
        try:
            decoded.append(decode(path))
        except ValueError as exc:
            skipped.append((path, exc.reason if isinstance(exc, ImageError) else str(exc)))
            continue
        kept.append(index)
    if skipped:
        examples = "; ".join(f"{p}: {why}" for p, why in skipped[:3])
        warnings.warn(f"skipped {len(skipped)} of {len(paths)} unreadable or unusable "
                      f"image(s) (e.g. {examples})", stacklevel=3)
    if not decoded:
        raise ValueError(f"none of the {len(paths)} image(s) could be used "
                         f"(e.g. {skipped[0][0]}: {skipped[0][1]}); "
                         "check the paths point to image files")
    return kept, decoded, skipped


def _check_resolution(resolution: Any) -> None:
    if not isinstance(resolution, int) or isinstance(resolution, bool) or resolution < 1:
        raise ValueError(f"resolution must be a positive integer, got {resolution!r}")


class ImageFolderDataset(Dataset):
    """Images from ``paths`` as float tensors (3, R, R) in [-1, 1], with optional class labels.

    All images are decoded once at construction (training corpora here are small) and kept
    as one uint8 tensor ``images`` of shape (N, 3, R, R). Unreadable files are skipped with one
    warning; ``paths`` lists the images kept and ``skipped`` the (path, reason) pairs left out.
    ``labels`` (one int per path) become ``self.labels`` (int64, for the kept images) and items
    become (image, label) pairs. Raises ValueError when no image is left.
    """

    def __init__(self, paths: Sequence[str | Path], resolution: int,
                 labels: Sequence[int] | None = None):
        _check_resolution(resolution)
        paths = [Path(p) for p in paths]
        if labels is not None and len(labels) != len(paths):
            raise ValueError(f"got {len(labels)} labels for {len(paths)} images")
        if not paths:
            raise ValueError("ImageFolderDataset got no image paths; give at least one image")
        self.resolution = resolution
        kept, images, self.skipped = _decode_all(
            paths, lambda path: square_rgb(load_image(path), resolution))
        self.paths = [paths[i] for i in kept]
        self.images = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
        self.labels = (None if labels is None else
                       torch.tensor([int(labels[i]) for i in kept], dtype=torch.int64))

    def __len__(self) -> int:
        return self.images.shape[0]

    def batch(self, indices: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Images ``indices`` as (N, 3, R, R) float in [-1, 1], with their labels if any."""
        images = self.images[indices].float().div_(127.5).sub_(1.0)
        return images if self.labels is None else (images, self.labels[indices])

    # What a training step draws: the same images (a resized image has no random part).
    training_batch = batch

    def __getitem__(self, index: int) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        item = self.batch(torch.tensor([index]))
        return item[0] if self.labels is None else (item[0][0], item[1][0])


class RandomCropDataset(Dataset):
    """Images from ``paths`` at their own size, never resized, served as (3, R, R) crops in
    [-1, 1]: random crops for training, centre crops otherwise.

    The decoded images are kept in memory as uint8 (H, W, 3) arrays (training corpora here are
    small). :meth:`training_batch` draws each crop's offset from torch's global generator,
    which the trainer seeds per rank and saves in checkpoints, so a resumed run crops as an
    uninterrupted one; :meth:`batch` (centre crops) draws nothing, so looking at the data (the
    trainer's diagnostics) leaves training unchanged. Images smaller than R on a side are
    skipped like unreadable ones; ``paths`` and ``skipped`` as in :class:`ImageFolderDataset`.
    """

    def __init__(self, paths: Sequence[str | Path], resolution: int):
        _check_resolution(resolution)
        paths = [Path(p) for p in paths]
        if not paths:
            raise ValueError("RandomCropDataset got no image paths; give at least one image")
        self.resolution = resolution

        def decode(path: Path) -> np.ndarray:
            image = load_image(path)
            if min(image.shape[:2]) < resolution:
                raise ValueError(f"{image.shape[1]}x{image.shape[0]} px is smaller than the "
                                 f"{resolution} px training crops (lower --resolution)")
            return image

        kept, self.images, self.skipped = _decode_all(paths, decode)
        self.paths = [paths[i] for i in kept]

    def __len__(self) -> int:
        return len(self.images)

    def _crops(self, indices: torch.Tensor, fractions: torch.Tensor) -> torch.Tensor:
        """Crop image ``indices[i]`` at ``fractions[i]`` (top, left) of its free range."""
        r = self.resolution
        crops = []
        for index, (fy, fx) in zip(indices.tolist(), fractions.tolist()):
            image = self.images[index]
            top = int(fy * (image.shape[0] - r + 1))
            left = int(fx * (image.shape[1] - r + 1))
            crops.append(torch.from_numpy(image[top:top + r, left:left + r]))
        return torch.stack(crops).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)

    def batch(self, indices: torch.Tensor) -> torch.Tensor:
        """Centre crops of images ``indices``: (N, 3, R, R) float in [-1, 1]."""
        return self._crops(indices, torch.full((len(indices), 2), 0.5))

    def training_batch(self, indices: torch.Tensor) -> torch.Tensor:
        """Random crops of images ``indices`` (uniform offsets): (N, 3, R, R) in [-1, 1]."""
        return self._crops(indices, torch.rand(len(indices), 2))

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.batch(torch.tensor([index]))[0]


def labelled_dataset(items: Sequence[tuple[str | Path, str]],
                     resolution: int) -> tuple[ImageFolderDataset, list[str]]:
    """A dataset of (path, class name) pairs; classes are the sorted names, labels index them."""
    classes = sorted({str(name) for _, name in items})
    index = {name: i for i, name in enumerate(classes)}
    dataset = ImageFolderDataset([path for path, _ in items], resolution,
                                 labels=[index[str(name)] for _, name in items])
    return dataset, classes


class ShardedShuffle:
    """Endless full batches of indices into ``n`` items, reshuffled every epoch, for one rank.

    As ``DistributedSampler``: every rank draws the same permutation of epoch ``e`` (seeded by
    ``seed``, ``stream`` and ``e``), pads it to a multiple of ``world_size`` and keeps every
    ``world_size``-th index from ``rank``; the rank's share is cut into batches of
    ``batch_size`` (the remainder is dropped). ``state_dict`` is the (epoch, position) pair, so
    a resumed run continues with the very next batch.
    """

    def __init__(self, n: int, batch_size: int, seed: int, *, stream: int = 0, rank: int = 0,
                 world_size: int = 1):
        share = math.ceil(n / world_size)
        if not 1 <= batch_size <= share:
            raise ValueError(f"batch size {batch_size} must be between 1 and the {share} "
                             f"images of each of {world_size} rank(s)")
        self.n, self.batch_size, self.seed, self.stream = n, batch_size, seed, stream
        self.rank, self.world_size = rank, world_size
        self.batches_per_epoch = share // batch_size
        self.epoch, self.position = 0, 0
        self._indices = self._epoch_indices()

    def _epoch_indices(self) -> torch.Tensor:
        entropy = np.random.SeedSequence([self.seed, self.stream, self.epoch])
        seed = int(entropy.generate_state(1)[0])
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(seed))
        total = self.world_size * math.ceil(self.n / self.world_size)
        return order.repeat(math.ceil(total / self.n))[:total][self.rank::self.world_size]

    def next(self) -> torch.Tensor:
        if self.position == self.batches_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0
            self._indices = self._epoch_indices()
        start = self.position * self.batch_size
        self.position += 1
        return self._indices[start:start + self.batch_size]

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._indices = self._epoch_indices()


class BatchStream:
    """The training batches of a family: one dataset gives its batches (images, or (images,
    labels)); several (unaligned domains) give a tuple with one batch of each, each dataset
    shuffled independently.

    ``batch_size`` is the global batch: each of ``world_size`` ranks draws
    ``batch_size // world_size`` (at least 1), no more than any dataset's share holds.
    """

    def __init__(self, datasets: Sequence[ImageFolderDataset | RandomCropDataset],
                 batch_size: int, seed: int, *,
                 rank: int = 0, world_size: int = 1):
        self.datasets = list(datasets)
        smallest_share = min(math.ceil(len(d) / world_size) for d in self.datasets)
        self.batch_size = min(max(1, batch_size // world_size), smallest_share)
        self.samplers = [ShardedShuffle(len(d), self.batch_size, seed, stream=i, rank=rank,
                                        world_size=world_size)
                         for i, d in enumerate(self.datasets)]

    def next(self) -> Any:
        batches = tuple(d.training_batch(s.next()) for d, s in zip(self.datasets, self.samplers))
        return batches[0] if len(batches) == 1 else batches

    def state_dict(self) -> list[dict[str, int]]:
        return [s.state_dict() for s in self.samplers]

    def load_state_dict(self, state: Sequence[dict[str, int]]) -> None:
        for sampler, sampler_state in zip(self.samplers, state, strict=True):
            sampler.load_state_dict(sampler_state)
