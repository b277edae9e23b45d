"""Fine-tuned CNN detector: an ImageNet timm backbone trained with the CNNDetection recipe.

After Wang et al. (CVPR 2020): an ImageNet-pretrained CNN with a single logit, fine-tuned on
real vs generated images with random crops (never resizing, which would wash out the traces of
upsampling), flips, and Gaussian blur and JPEG each applied with probability p, so that the
network cannot take "sharp PNG" or "never compressed" as the sign of a fake.

Choices that answer the published detectors' users (``REFERENCES.md``):

* Images of any size are scored whole; those larger than ``tile_size`` are split into tiles whose
  logits are pooled (mean, or the top k for a fake region in a real image), never resized.
* The logit is Platt-calibrated on validation data, so P(fake) is a probability and the saved
  threshold is meaningful.
* Weights come from files on disk (``forensics.backbones``) and the bundle holds them as
  safetensors, which cannot carry code.
* ``input="npr"`` feeds the network the NPR residual x - up(down(x)) (Tan et al., CVPR 2024),
  best with the small from-scratch ``backbone="npr_resnet"`` (``forensics.scratch_backbones``).
  Crops and tiles then start at even offsets and odd sides lose their last pixel, so the 2x2
  grid of the residual is always the image's own; training views are only flipped and rotated
  by multiples of 90 degrees (any other angle or a resize resamples the pixels and destroys
  the trace), and blur and JPEG are off unless asked for.
* Training resumes after a kill: with ``train_state_dir`` set, the whole training state is saved
  after every epoch (``forensics.detectors.train_state``) and ``fit`` continues from it; on the
  CPU the result is bit-identical to an uninterrupted fit (``detector train --resume``).
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from crashsafe.runtime import (autocast, grad_scaler, keeps_freed_memory, resolve_device,
                               set_torch_rng_state, torch_rng_state, torch_threads)
from crashsafe.torchrun import from_rank_zero, mean_over_ranks, world
from forensics.backbones import (DEFAULT_BACKBONE, SCRATCH_BACKBONES, create_backbone,
                                 normalisation)
from forensics.data_parallel import data_parallel, shared_map
from forensics.detectors.base import BundleError, Detector
from forensics.detectors.calibration import PlattCalibration
from forensics.detectors.registry import register_detector
from forensics.detectors.train_state import (TrainStateError, fingerprint_data,
                                             load_train_state, save_train_state)
from forensics.fold_batchnorm import fold_batch_norms
from forensics.perturb import AugmentDraw, apply_augment, draw_augment
from forensics.tiles import Box, tile_boxes

__all__ = ["CNNDetector", "npr_residual", "pool_logits"]

WEIGHTS_FILE = "weights.safetensors"
CURVES_FILE = "training_curves.png"
_NETWORK_PREFIX = "backbone."
_INPUTS = ("rgb", "npr")
_POOLS = ("mean", "topk", "max")
# Training-augmentation defaults by input, taken where the constructor gets None. The residual
# would learn "blurred or compressed means real" from blur and JPEG applied to one class's
# crops at random; aligned training data degrades both classes alike instead.
_AUGMENT_DEFAULTS = {"rgb": {"p_blur": 0.5, "p_jpeg": 0.5, "rot90": False},
                     "npr": {"p_blur": 0.0, "p_jpeg": 0.0, "rot90": True}}
_DEVICES = ("auto", "cpu", "cuda")
# Bytes of the largest layer output of one inference batch on the CPU. Beyond glibc's largest
# mmap threshold (32 MB) every layer's output is a fresh mapping whose pages fault in one by
# one: Lite0 on 256 px tiles (6 MB per tile) ran 55.8 tiles/s in batches of 2 and 16.5 in
# batches of 32 (2 threads, most of the time in the kernel). Where the process keeps freed
# memory (``crashsafe.runtime.keep_freed_memory``, as the CLI and the app do) the batch size
# hardly matters (Lite0: 54-56 tiles/s in batches of 4 to 8), and the larger bound only
# limits memory.
_CPU_BATCH_BYTES = {"default": 16 << 20, "freed memory kept": 64 << 20}
# Seed of the fixed random image whose logit is saved to check that a reload reproduces it.
_PROBE_SEED = 20240601
# Tolerance of that check: loose enough for another device or mixed precision, tight enough
# for a network that is not the one saved.
_PROBE_TOLERANCE = 5e-2

def npr_residual(x: torch.Tensor) -> torch.Tensor:
    """Neighbouring-pixel residual x - NNup(NNdown(x)) of (..., H, W) tensors, any H and W.

    Nearest-neighbour halving keeps the even rows and columns; doubling them back and
    subtracting leaves the local pixel relations that generator upsampling imposes.
    """
    height, width = x.shape[-2:]
    down = x[..., ::2, ::2]
    up = down.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)
    return x - up[..., :height, :width]


def pool_logits(logits: np.ndarray, pool: str = "mean", k: int = 1) -> float:
    """One image's logit from the logits of its tiles (1-D, non-empty).

    "mean" averages them; "topk" averages the ``k`` largest (all when fewer), so a generated
    region pasted into a large real photo is not outvoted by the real tiles; "max" takes the
    largest.
    """
    logits = np.asarray(logits, dtype=np.float64)
    if pool == "mean":
        return float(logits.mean())
    if pool not in _POOLS:
        raise ValueError(f"pool must be one of {', '.join(_POOLS)}, got {pool!r}")
    return float(np.sort(logits)[-(1 if pool == "max" else k):].mean())


@dataclass(frozen=True)
class _View:
    """The random choices behind one training view (``CNNDetector.draw_view``)."""

    augment: AugmentDraw
    top: int
    left: int
    flip: bool
    turns: int


def _crop_offsets(height: int, width: int, size: int, rng: np.random.Generator,
                  step: int = 1) -> tuple[int, int]:
    """Random (top, left) multiples of ``step`` of a ``size`` crop of an image of this size,
    reflect-padded to ``size`` first where shorter (``_crop``)."""
    height, width = max(height, size), max(width, size)
    top = step * int(rng.integers(0, (height - size) // step + 1))
    left = step * int(rng.integers(0, (width - size) // step + 1))
    return top, left


def _crop(image: np.ndarray, size: int, top: int, left: int, step: int = 1) -> np.ndarray:
    """The ``size`` x ``size`` crop at (top, left).

    Sides shorter than ``size`` are reflect-padded first, by a multiple of ``step`` before the
    image, so the image's own pixels keep their place on the ``step`` grid.
    """
    height, width = image.shape[:2]
    pad_h, pad_w = max(0, size - height), max(0, size - width)
    if pad_h or pad_w:
        top_pad, left_pad = pad_h // 2 // step * step, pad_w // 2 // step * step
        image = np.pad(image, ((top_pad, pad_h - top_pad),
                               (left_pad, pad_w - left_pad), (0, 0)), mode="reflect")
    return image[top:top + size, left:left + size]


class _Batches:
    """Endless batches of ``size`` indices into range(n): shuffled passes, one after another.

    The indices drawn but not yet used are its whole state (``state``/``set_state``), so a
    resumed training goes on with exactly the batches an uninterrupted one would have seen.
    """

    def __init__(self, n: int, size: int, rng: np.random.Generator):
        self.n, self.size, self.rng = n, size, rng
        self.queue = np.empty(0, dtype=np.int64)

    def __iter__(self) -> Iterator[np.ndarray]:
        return self

    def __next__(self) -> np.ndarray:
        while len(self.queue) < self.size:
            self.queue = np.concatenate([self.queue, self.rng.permutation(self.n)])
        batch, self.queue = self.queue[:self.size], self.queue[self.size:]
        return batch

    def state(self) -> np.ndarray:
        return self.queue.copy()

    def set_state(self, queue: np.ndarray) -> None:
        queue = np.asarray(queue, dtype=np.int64)
        if queue.ndim != 1 or (len(queue) and (queue.min() < 0 or queue.max() >= self.n)):
            raise ValueError(f"a batch queue of indices into range({self.n}) was expected")
        self.queue = queue.copy()


class _Network(nn.Module):
    """A timm backbone with one logit, its input normalisation (and optional NPR) built in.

    Takes float RGB in [0, 1], (N, 3, H, W); ``features`` (the last convolutional stage),
    ``head`` and ``features_and_stage`` (for Grad-CAM) are exposed separately.
    """

    def __init__(self, backbone: nn.Module, npr: bool):
        super().__init__()
        self.backbone = backbone
        self.npr = npr
        mean, std = normalisation(backbone)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        return self.backbone.forward_features(npr_residual(x) if self.npr else x)

    def head(self, features: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_head(features)[:, 0]

    def features_and_stage(self, x: torch.Tensor,
                           stage: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``features(x)`` and the map of the backbone's stage ``stage`` (an index into timm's
        ``feature_info``) from the same pass, for Grad-CAM; no hooks, so threads may share the
        network. Backbones without ``forward_intermediates`` give the last stage's map."""
        x = (x - self.mean) / self.std
        x = npr_residual(x) if self.npr else x
        if not hasattr(self.backbone, "forward_intermediates"):
            features = self.backbone.forward_features(x)
            return features, features
        features, (stage_map,) = self.backbone.forward_intermediates(x, indices=[stage])
        return features, stage_map

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@register_detector("cnn")
class CNNDetector(Detector):
    """A fine-tuned timm CNN scoring whole images (or tiles of large ones) without resizing.

    Parameters:
        backbone: timm model name; ImageNet weights from ``weights``, a pip package
            (``tf_efficientnet_lite0``..``lite2``) or the local hub cache. ``npr_resnet``
            (ResNet-50 stages 1-2, 1.4M parameters) suits ``input="npr"``.
        pretrained: start from ImageNet weights; False trains from random init (always False
            for backbones that have none, such as ``npr_resnet``).
        weights: path of a local weights file (.safetensors or a weights_only torch file).
        input: "rgb", or "npr" for the residual x - up(down(x)).
        crop_size: largest side of the random training crops. The crops used are no larger
            than the median shorter side of the training images, so that a corpus of small
            images is not padded (the network then sees at training the sizes it scores);
            images smaller than the crop are reflect-padded. Even for ``input="npr"``.
        tile_size: images with a side above it are scored by tiles of this side (even for
            ``input="npr"``), whose logits are pooled.
        pool: how tile logits make the image's: "mean", "topk" (mean of the ``pool_k``
            largest) or "max".
        pool_k: tiles averaged by ``pool="topk"``.
        epochs: at most this many epochs of ``steps_per_epoch`` steps (None: one pass).
        batch_size, lr, weight_decay: AdamW training (also the inference batch size, which
            the CPU caps by the size of the largest layer output).
        patience: stop after this many epochs without a better validation AP.
        p_blur, blur_sigma, p_jpeg, jpeg_quality: ``forensics.perturb.random_augment``;
            ``p_blur`` and ``p_jpeg`` default (None) to 0.5 for rgb input, 0 for npr.
        flip: random horizontal flips.
        rot90: random rotations by multiples of 90 degrees (None: on for npr, off for rgb).
        val_fraction: share of the training images held out when ``fit`` gets no validation.
        device: "auto" (CUDA when present), "cpu" or "cuda"; CUDA trains with mixed precision
            and channels_last.
        threads: CPU threads for torch while this detector fits or scores on the CPU, the
            process's setting restored afterwards (None: leave torch's setting, every CPU this
            process may use unless ``forensics --threads`` or the caller changed it).
        seed: seeds the crops, augmentation, batches and head initialisation.
        progress: show a tqdm bar while training (on a terminal).
        train_state_dir: folder where ``fit`` keeps its state after every epoch and from
            whose state it resumes (None: no state kept); not recorded in bundles.

    Learned: ``network_`` (the torch module, in eval mode), ``calibrator_`` (the
    ``PlattCalibration`` of its logit, described by ``calibration_``), ``fit_summary_``
    (per-epoch history, best epoch, time, device; merged into ``training_info_``, so a loaded
    bundle has it there), and the ``threshold_``, ``training_info_`` and
    ``validation_metrics_`` of every Detector.
    """

    variant_param = "input"  # ensemble member "cnn:npr"
    scores_in_threads = False
    known_failure_modes = (
        "Trained on few images it learns the training generators' artifacts; expect lower "
        "scores on unseen generators (see `forensics evaluate --leave-one-out`).",
        "Resizing (especially downscaling) wipes out the upsampling traces it relies on; "
        "score images at their stored size.",
        "Real images whose processing differs from the training reals (other cameras, "
        "heavier JPEG, screenshots) can be called fake; train on format-matched data.",
        "Images much smaller than the training crop give less reliable scores.",
    )

    def __init__(
        self,
        backbone: str = DEFAULT_BACKBONE,
        pretrained: bool = True,
        weights: str | None = None,
        input: str = "rgb",  # noqa: A002 - the documented parameter name
        crop_size: int = 64,
        tile_size: int = 256,
        pool: str = "mean",
        pool_k: int = 3,
        epochs: int = 15,
        steps_per_epoch: int | None = None,
        batch_size: int = 32,
        lr: float = 1e-3,
        weight_decay: float = 1e-2,
        patience: int = 3,
        p_blur: float | None = None,
        blur_sigma: Sequence[float] = (0.0, 3.0),
        p_jpeg: float | None = None,
        jpeg_quality: Sequence[int] = (30, 100),
        flip: bool = True,
        rot90: bool | None = None,
        val_fraction: float = 0.2,
        device: str = "auto",
        threads: int | None = None,
        seed: int = 0,
        progress: bool = True,
        train_state_dir: str | os.PathLike | None = None,
    ):
        self.backbone = backbone
        self.pretrained = pretrained
        self.weights = weights
        self.input = input
        self.crop_size = crop_size
        self.tile_size = tile_size
        self.pool = pool
        self.pool_k = pool_k
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.patience = patience
        self.p_blur = p_blur
        self.blur_sigma = blur_sigma
        self.p_jpeg = p_jpeg
        self.jpeg_quality = jpeg_quality
        self.flip = flip
        self.rot90 = rot90
        self.val_fraction = val_fraction
        self.device = device
        self.threads = threads
        self.seed = seed
        self.progress = progress
        self.train_state_dir = train_state_dir

    def resolved_params(self) -> dict[str, Any]:
        """The parameters as fit uses them and a bundle records them: ``p_blur``, ``p_jpeg``
        and ``rot90`` given by ``input`` where None, ``pretrained`` False for backbones
        without ImageNet weights, JSON-ready (lists, a string path)."""
        params = super().resolved_params()
        params.update(self._input_defaults())
        params["pretrained"] = self._uses_pretrained
        params["weights"] = None if self.weights is None else os.fspath(self.weights)
        params["blur_sigma"] = list(self.blur_sigma)
        params["jpeg_quality"] = list(self.jpeg_quality)
        return params

    def _input_defaults(self) -> dict[str, Any]:
        """``p_blur``, ``p_jpeg`` and ``rot90``, the ones left None taken from ``input``'s
        defaults."""
        defaults = _AUGMENT_DEFAULTS.get(self.input, _AUGMENT_DEFAULTS["rgb"])
        return {name: default if getattr(self, name) is None else getattr(self, name)
                for name, default in defaults.items()}

    @property
    def _uses_pretrained(self) -> bool:
        """Whether training starts from ImageNet weights (never for backbones without)."""
        return bool(self.pretrained) and self.backbone not in SCRATCH_BACKBONES

    @property
    def preprocessing(self) -> dict[str, Any]:
        """How images reach the network, for callers and the bundle."""
        network = getattr(self, "network_", None)
        augment = self._input_defaults()
        return {
            "input": "npr residual x - up(down(x))" if self.input == "npr" else "rgb",
            "scale": "uint8 / 255, then (x - mean) / std of the backbone",
            "mean": None if network is None else network.mean.flatten().tolist(),
            "std": None if network is None else network.std.flatten().tolist(),
            "resize": None,
            "train_crop": {"size": f"min({self.crop_size}, median shorter side of the "
                                   "training images)", "pad": "reflect",
                           "offsets": f"multiples of {self._grid}", "flip": self.flip,
                           "rot90": augment["rot90"]},
            "train_augmentation": {"p_blur": augment["p_blur"],
                                   "blur_sigma": list(self.blur_sigma),
                                   "p_jpeg": augment["p_jpeg"],
                                   "jpeg_quality": list(self.jpeg_quality)},
            "inference": (f"whole image{'; odd sides lose their last pixel' * (self._grid == 2)}"
                          f"; sides over {self.tile_size} px: {self._pool_description} of the "
                          "tiles' logits"),
            "calibration": "platt (logistic on the logit), fit on validation data",
        }

    # ------------------------------------------------------------------------- helpers

    @property
    def _grid(self) -> int:
        """Crops and tiles start at multiples of it: 2 for npr, whose residual is taken on
        2x2 blocks, so that the blocks the network sees are the image's own."""
        return 2 if self.input == "npr" else 1

    @property
    def _pool_description(self) -> str:
        """How ``pool`` makes an image's logit, in words."""
        return {"mean": "mean", "max": "largest",
                "topk": f"mean of the {self.pool_k} largest"}.get(self.pool, self.pool)

    def _check_params(self) -> None:
        """Raise ValueError for parameters that cannot work, naming the parameter."""
        if self.input not in _INPUTS:
            raise ValueError(f"input must be one of {', '.join(_INPUTS)}, got {self.input!r}")
        if self.device not in _DEVICES:
            raise ValueError(f"device must be one of {', '.join(_DEVICES)}, got {self.device!r}")
        if self.pool not in _POOLS:
            raise ValueError(f"pool must be one of {', '.join(_POOLS)}, got {self.pool!r}")
        for name in ("crop_size", "tile_size", "pool_k", "epochs", "batch_size", "patience"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("crop_size", "tile_size"):
            value = getattr(self, name)
            if value % self._grid:
                raise ValueError(f"{name} must be even with input=npr (the residual is taken "
                                 f"on 2x2 blocks), got {value}; pass --set {name}={value + 1}")
        if self.batch_size < 2:
            raise ValueError("batch_size must be at least 2 (batch norm needs two samples)")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction!r}")

    def torch_device(self) -> torch.device:
        """The device this detector runs on ("auto": CUDA when present, else the CPU)."""
        return resolve_device(self.device)

    def _threads(self, device: torch.device) -> contextlib.AbstractContextManager:
        """Work on ``device`` with ``threads`` CPU threads of torch when it is the CPU; the
        process's count is restored afterwards, so fitting and scoring change no global."""
        return torch_threads(self.threads if device.type == "cpu" else None)

    def to(self, device: str) -> "CNNDetector":
        """Run on ``device`` ("auto", "cpu" or "cuda") from now on, moving a fitted network."""
        self.device = device
        self._check_params()
        if hasattr(self, "network_"):
            self.network_ = _place(self.network_, self.torch_device()).eval()
        return self

    def _new_network(self, pretrained: bool) -> _Network:
        """The untrained network: ImageNet weights if ``pretrained``, a fresh 1-logit head."""
        backbone = create_backbone(self.backbone, pretrained=pretrained,
                                   weights=self.weights if pretrained else None, num_classes=1)
        return _Network(backbone, npr=self.input == "npr")

    def to_tensor(self, batch: np.ndarray, device: torch.device,
                  memory_format: torch.memory_format | None = None) -> torch.Tensor:
        """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [0, 1] on ``device``, in
        ``memory_format`` (default: channels_last on CUDA, else contiguous)."""
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(device).permute(0, 3, 1, 2)
        return x.float().div_(255).contiguous(memory_format=memory_format or
                                              _memory_format(device))

    def _scoring_network(self) -> nn.Module:
        """``network_`` for scoring: on the CPU a copy made once per network, its batch norms
        folded into their convolutions (``fold_batch_norms``) and in channels_last (Lite0 ran
        24% and npr_resnet 20% faster in it on 2 cores); elsewhere ``network_``, already
        channels_last on CUDA. Training keeps its own network, so that what it learns does not
        depend on this."""
        network = self.network_
        if next(network.parameters()).device.type != "cpu":
            return network
        cached = getattr(self, "_cpu_scoring", None)
        if cached is None or cached[0] is not network:
            probe = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(_PROBE_SEED))
            copied = fold_batch_norms(network.eval(), probe)
            copied = (copied if copied is not network else copy.deepcopy(network)).to(
                memory_format=torch.channels_last).eval()
            cached = self._cpu_scoring = (network, copied)
        return cached[1]

    def augment(self, image: np.ndarray, rng: np.random.Generator,
                crop: int | None = None) -> np.ndarray:
        """One training view of ``image``: blur and JPEG as ``random_augment``, crop, flip,
        rotation by a multiple of 90 degrees (``rot90``).

        Returns uint8 (crop, crop, 3), ``crop`` defaulting to ``crop_size``. As in
        CNNDetection, blur and JPEG act on the whole image before cropping, so crops do not
        line up with the 8x8 JPEG grid. For npr the crop starts at even offsets; nothing is
        resampled, so every view keeps the image's 2x2 pixel relations.
        """
        crop = crop or self.crop_size
        return self.apply_view(image, self.draw_view(image.shape, rng, crop), crop)

    def draw_view(self, shape: tuple[int, ...], rng: np.random.Generator, crop: int) -> _View:
        """The random choices of ``augment`` for an image of ``shape``, drawn from ``rng`` in
        its order but applied to nothing: data-parallel ranks draw every view of a batch, so
        their generators stay in step, and apply only their own (``apply_view``)."""
        recipe = self._input_defaults()
        augment = draw_augment(rng, p_blur=recipe["p_blur"], blur_sigma=tuple(self.blur_sigma),
                               p_jpeg=recipe["p_jpeg"], jpeg_quality=tuple(self.jpeg_quality))
        top, left = _crop_offsets(shape[0], shape[1], crop, rng, step=self._grid)
        flip = bool(self.flip and rng.random() < 0.5)
        turns = int(rng.integers(4)) if recipe["rot90"] else 0
        return _View(augment, top, left, flip, turns)

    def apply_view(self, image: np.ndarray, view: _View, crop: int) -> np.ndarray:
        """The training view ``view`` describes: uint8 (crop, crop, 3)."""
        out = _crop(apply_augment(image, view.augment), crop, view.top, view.left, self._grid)
        return np.rot90(out[:, ::-1] if view.flip else out, view.turns)

    def tiles(self, height: int, width: int) -> list[Box]:
        """The boxes scored for an image of this size: ``tile_boxes`` of ``tile_size``; for
        npr, of the image cut to even sides, so every box starts at an even offset."""
        return tile_boxes(max(1, height - height % self._grid),
                          max(1, width - width % self._grid), self.tile_size)

    def logits(self, images: Sequence[np.ndarray], network: nn.Module | None = None) -> np.ndarray:
        """Raw logits float64 (N,): of whole images, or pooled (``pool``) over the ``tiles``
        of large ones.

        Images and tiles of one shape share batches of ``batch_size`` (on the CPU, fewer
        when the largest layer output would pass ``_CPU_BATCH_BYTES``); nothing is resized.
        """
        network = self._scoring_network() if network is None else network
        device = next(network.parameters()).device
        layout = _layout(network)
        boxes = [self.tiles(*image.shape[:2]) for image in images]
        pieces = [image[box] for image, image_boxes in zip(images, boxes) for box in image_boxes]
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for k, piece in enumerate(pieces):
            by_shape.setdefault(piece.shape, []).append(k)
        piece_logits = np.empty(len(pieces))
        network.eval()
        per_pixel = _peak_activation_per_pixel(network) if device.type == "cpu" else 0.0
        budget = _CPU_BATCH_BYTES["freed memory kept" if keeps_freed_memory() else "default"]
        with (torch.inference_mode(), autocast(device), _one_at_a_time(device),
              self._threads(device)):
            for (height, width, _), members in by_shape.items():
                size = self.batch_size
                if per_pixel:
                    size = max(1, min(size, int(budget // (4 * per_pixel * height * width))))
                for start in range(0, len(members), size):
                    chunk = members[start:start + size]
                    batch = np.stack([pieces[k] for k in chunk])
                    out = network(self.to_tensor(batch, device, layout))
                    piece_logits[chunk] = out.float().cpu().numpy()
        per_image = np.split(piece_logits, np.cumsum([len(b) for b in boxes])[:-1])
        return np.array([pool_logits(tiles, self.pool, self.pool_k) for tiles in per_image])

    def proba_from_logits(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated P(fake) of raw logits."""
        return self.calibrator_(logits)

    # ------------------------------------------------------------------------- training

    def _fit(
        self,
        images: Sequence[np.ndarray],
        labels: np.ndarray,
        validation: tuple[Sequence[np.ndarray], np.ndarray] | None,
    ) -> None:
        """Fine-tune with early stopping on validation AP, keep the best epoch, calibrate."""
        from sklearn.model_selection import train_test_split  # training only: scans skip it

        self._check_params()
        if validation is None:
            images, val_images, labels, val_labels = train_test_split(
                list(images), labels, test_size=self.val_fraction, stratify=labels,
                random_state=self.seed)
        else:
            val_images, val_labels = validation
        if len(np.unique(val_labels)) < 2:
            raise ValueError("validation data must hold real and fake images: early stopping "
                             "and calibration need both")
        started = time.perf_counter()
        device = self.torch_device()
        state_dir = None if self.train_state_dir is None else Path(self.train_state_dir)
        fingerprint = resumed = None
        rank, ranks = world()
        if state_dir is not None:
            fingerprint = {"data": fingerprint_data(images, labels, validation),
                           "params": self._fingerprint_params()}
            # Rank 0 keeps the state (on its own disk, on a cluster) and hands it out.
            resumed = from_rank_zero(load_train_state(state_dir, fingerprint) if rank == 0
                                     else None)
        if self.batch_size < ranks:
            raise ValueError(f"batch_size {self.batch_size} gives some of the {ranks} ranks no "
                             "image: use a batch at least as large as the number of ranks")
        rng = np.random.default_rng(self.seed)
        torch.manual_seed(self.seed)
        crop = min(self.crop_size, int(np.median([min(im.shape[:2]) for im in images])))
        crop = max(self._grid, crop - crop % self._grid)
        # A resumed network gets every weight from the state: no ImageNet weights to read.
        network = _place(self._new_network(self._uses_pretrained and resumed is None), device)
        optimiser = torch.optim.AdamW(network.parameters(), lr=self.lr,
                                      weight_decay=self.weight_decay)
        steps = self.steps_per_epoch or math.ceil(len(images) / self.batch_size)
        batches = _Batches(len(images), self.batch_size, rng)
        scaler = grad_scaler(device)
        history: list[dict[str, float]] = []
        best_epoch, best_logits, best_state, finished = 0, None, None, False
        if resumed is not None:
            try:
                history, best_epoch, finished = self._resume(
                    resumed, crop, network, optimiser, scaler, rng, batches)
            except (KeyError, TypeError, ValueError, RuntimeError) as error:
                raise TrainStateError(
                    f"the training state in {os.fspath(state_dir)!r} cannot be resumed "
                    f"({type(error).__name__}: {error}); delete that folder, or rerun without "
                    "--resume, to train from scratch") from None
            best_logits, best_state = resumed["best_logits"], resumed["best_network"]
        # disable=None: the bar shows on a terminal only, so logs and CI stay readable.
        hidden = None if self.progress and rank == 0 else True
        with tqdm(total=self.epochs * steps, initial=len(history) * steps, desc="cnn training",
                  unit="step", disable=hidden) as bar, data_parallel(network, device) as trainer:
            for epoch in range(len(history) + 1, 1 if finished else self.epochs + 1):
                network.train()
                losses = []
                for _ in range(steps):
                    index = next(batches)
                    # Every rank draws the whole batch's views, keeping the generators in
                    # step, and trains on its share; one process's share is the batch.
                    views = [self.draw_view(images[i].shape, rng, crop) for i in index]
                    mine = np.arange(rank, len(index), ranks)
                    x = self.to_tensor(np.stack([self.apply_view(images[index[k]], views[k], crop)
                                                 for k in mine]), device)
                    loss = self._train_step(trainer, optimiser, scaler, x, labels[index[mine]],
                                            None if ranks == 1 else ranks / len(index))
                    losses.append(mean_over_ranks([loss])[0])
                    bar.update()
                    bar.set_postfix(epoch=epoch, loss=f"{np.mean(losses[-20:]):.3f}")
                val_logits = np.asarray(shared_map(
                    lambda share: self.logits(share, network), val_images))
                history.append({"epoch": epoch, "train_loss": float(np.mean(losses)),
                                **_validation_scores(val_logits, val_labels)})
                if best_epoch == 0 or _epoch_key(history[-1]) > _epoch_key(history[best_epoch - 1]):
                    best_epoch, best_logits = epoch, val_logits
                    best_state = copy.deepcopy(network.state_dict())
                finished = epoch == self.epochs or epoch - best_epoch >= self.patience
                if state_dir is not None and rank == 0:  # a kill from here loses no epoch
                    save_train_state(state_dir, {
                        "epoch": epoch, "finished": finished, "crop": crop,
                        "history": history, "best_epoch": best_epoch,
                        "best_logits": best_logits, "best_network": best_state,
                        "network": network.state_dict(), "optimiser": optimiser.state_dict(),
                        "scaler": scaler.state_dict(), "numpy_rng": rng.bit_generator.state,
                        "batches": batches.state(), "torch_rng_state": torch_rng_state(),
                    }, fingerprint=fingerprint)
                if finished:
                    break
        network.load_state_dict(best_state)
        self.network_ = network.eval()
        self.calibrator_ = PlattCalibration.fit(np.asarray(best_logits), np.asarray(val_labels))
        self.calibration_ = self.calibrator_.to_dict()
        self.fit_summary_ = {
            "history": history,
            "best_epoch": best_epoch,
            "train_crop": crop,
            "stopped_early": len(history) < self.epochs,
            "train_seconds": round(time.perf_counter() - started, 1),
            "device": str(device),
            "held_out_from_train": len(val_labels) if validation is None else 0,
        }
        if resumed is not None:
            self.fit_summary_["resumed_after_epoch"] = resumed["epoch"]

    def resumes_training(self) -> bool:
        """True: the state after every epoch goes to ``train_state_dir`` and ``fit`` resumes."""
        return True

    def _fingerprint_params(self) -> dict[str, Any]:
        """The parameters a resumed training must share with the one that saved its state
        (all but ``progress`` and ``threads``, which change how it runs, not what it learns)."""
        params = self.resolved_params()
        for name in ("progress", "threads"):
            params.pop(name)
        return json.loads(json.dumps(params))  # the JSON form: tuples become lists

    @staticmethod
    def _resume(resumed: dict[str, Any], crop: int, network: nn.Module,
                optimiser: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                rng: np.random.Generator, batches: _Batches
                ) -> tuple[list[dict[str, float]], int, bool]:
        """Set the training objects from a saved state; returns (history, best epoch, finished).

        Raises KeyError, TypeError, ValueError or RuntimeError for a state that does not fit.
        """
        if resumed["crop"] != crop:
            raise ValueError(f"the state trained on {resumed['crop']} px crops, these images "
                             f"give {crop} px")
        history = [dict(row) for row in resumed["history"]]
        best_epoch, epoch = int(resumed["best_epoch"]), int(resumed["epoch"])
        if len(history) != epoch or not 1 <= best_epoch <= epoch:
            raise ValueError(f"epoch {epoch}, best epoch {best_epoch} and {len(history)} "
                             "history rows do not agree")
        network.load_state_dict(resumed["best_network"], strict=True)  # only to check it fits
        network.load_state_dict(resumed["network"], strict=True)
        optimiser.load_state_dict(resumed["optimiser"])
        if resumed["scaler"]:  # empty when saved without mixed precision
            scaler.load_state_dict(resumed["scaler"])
        rng.bit_generator.state = resumed["numpy_rng"]
        batches.set_state(resumed["batches"])
        set_torch_rng_state(resumed["torch_rng_state"])
        return history, best_epoch, bool(resumed["finished"])

    @staticmethod
    def _train_step(network: nn.Module, optimiser: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler, x: torch.Tensor, labels: np.ndarray,
                    share: float | None = None) -> float:
        """One AdamW step on BCE-with-logits (mixed precision on CUDA); returns the loss.

        ``share``: on a data-parallel rank, the number of ranks over the whole batch size; the
        loss is then the rank's sum times it, which DDP's mean over ranks turns into the
        batch's mean loss.
        """
        y = torch.as_tensor(labels, dtype=torch.float32, device=x.device)
        with autocast(x.device):
            logits = network(x)
        if share is None:
            loss = F.binary_cross_entropy_with_logits(logits.float(), y)
        else:
            loss = F.binary_cross_entropy_with_logits(logits.float(), y, reduction="sum") * share
        optimiser.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimiser)
        scaler.update()
        return loss.item()

    def fit(self, images: Sequence[np.ndarray], labels: Sequence[int], *,
            val_images: Sequence[np.ndarray] | None = None,
            val_labels: Sequence[int] | None = None) -> CNNDetector:
        """Fit as every Detector; ``fit_summary_`` joins ``training_info_``.

        Without validation data, ``val_fraction`` of the training images is held out for
        early stopping and calibration, and the threshold stays 0.5 (of a calibrated P).
        """
        with self._threads(self.torch_device()):
            super().fit(images, labels, val_images=val_images, val_labels=val_labels)
        self.training_info_.update(self.fit_summary_)
        return self

    def _predict_proba(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Calibrated P(fake) float64 (N,) for validated images."""
        return self.proba_from_logits(self.logits(images))

    # ------------------------------------------------------------------------- bundle

    def _probe_logit(self) -> float:
        """Logit of a fixed random image in float32 (no mixed precision), saved with the
        weights to check that a reload, on any device, rebuilds the same network."""
        probe = np.random.default_rng(_PROBE_SEED).integers(
            0, 256, (1, self.crop_size, self.crop_size, 3), dtype=np.uint8)
        device = next(self.network_.parameters()).device
        with torch.inference_mode():
            return float(self.network_.eval()(self.to_tensor(probe, device))[0])

    def _arrays(self) -> dict[str, dict[str, np.ndarray]]:
        """Network tensors and the probe logit, in one safetensors file."""
        tensors = {key: value.detach().cpu().numpy()
                   for key, value in self.network_.state_dict().items()}
        tensors["probe_logit"] = np.asarray([self._probe_logit()])
        return {WEIGHTS_FILE: tensors}

    def save(self, folder: str | os.PathLike) -> Path:
        """Write the bundle, with ``training_curves.png`` when the training history is known."""
        self._check_fitted()
        history = self.training_info_.get("history")
        if history:
            from forensics.plots import plot_training_history

            plot_training_history(history, Path(folder) / CURVES_FILE,
                                  self.training_info_.get("best_epoch"),
                                  title=f"CNN detector ({self.backbone}, input {self.input})")
        return super().save(folder)

    def _restore(self, folder: Path, arrays: dict[str, dict[str, np.ndarray]]) -> None:
        """Rebuild the network from the bundle's tensors alone (no ImageNet weights needed)."""
        if WEIGHTS_FILE not in arrays:
            raise BundleError(folder, f"detector.json does not list {WEIGHTS_FILE}")
        tensors = arrays[WEIGHTS_FILE]
        if tensors.get("probe_logit", np.empty(0)).shape != (1,):
            raise BundleError(folder, f"{WEIGHTS_FILE} lacks a 'probe_logit' array of shape (1,)")
        try:
            self.calibrator_ = PlattCalibration.from_dict(self.calibration_)
            self._check_params()
            network = self._new_network(pretrained=False)
            state = {key: torch.from_numpy(value) for key, value in tensors.items()
                     if key.startswith(_NETWORK_PREFIX)}
            network.load_state_dict(state, strict=True)
        except (RuntimeError, ValueError) as error:
            raise BundleError(folder, f"{WEIGHTS_FILE} does not fit a {self.backbone} "
                                      f"network ({error})") from None
        self.network_ = _place(network, self.torch_device()).eval()
        # The checksums proved the weights intact; the probe checks this timm/torch computes
        # with them what the saving one did.
        expected, actual = float(tensors["probe_logit"][0]), self._probe_logit()
        if not math.isclose(actual, expected, rel_tol=_PROBE_TOLERANCE, abs_tol=_PROBE_TOLERANCE):
            raise self.incompatible(folder, f"the rebuilt {self.backbone} network gives the probe "
                                            f"image the logit {actual:.4f}, not the "
                                            f"{expected:.4f} saved with it")


# Held by a CPU forward pass of ``logits``: torch's intra-op threads already use every CPU it
# was given, and two passes at once (robustness workers, app sessions) only make them wait for
# each other.
_CPU_FORWARD = threading.Lock()


def _one_at_a_time(device: torch.device) -> contextlib.AbstractContextManager:
    """The CPU forward lock on the CPU, nothing on a GPU."""
    return _CPU_FORWARD if device.type == "cpu" else contextlib.nullcontext()


def _peak_activation_per_pixel(network: nn.Module) -> float:
    """Elements of ``network``'s largest layer output per input pixel, measured once per
    network on a 64 px probe through a copy (hooks on the copy leave threads that use the
    network undisturbed)."""
    known = getattr(network, "_peak_activation_per_pixel", None)
    if known is None:
        largest = 0

        def record(_module: nn.Module, _inputs: object, output: object) -> None:
            nonlocal largest
            if isinstance(output, torch.Tensor):
                largest = max(largest, output.numel())

        probe = copy.deepcopy(network).to("cpu", torch.float32).eval()
        for module in probe.modules():
            if not any(module.children()):
                module.register_forward_hook(record)
        with torch.inference_mode():
            probe(torch.zeros(1, 3, 64, 64))
        known = network._peak_activation_per_pixel = max(largest, 3 * 64 * 64) / (64 * 64)
    return known


def _layout(network: nn.Module) -> torch.memory_format:
    """The memory format of ``network``'s first convolution weight (channels_last or not)."""
    weight = next((p for p in network.parameters() if p.dim() == 4), None)
    if weight is not None and not weight.is_contiguous() and weight.is_contiguous(
            memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _memory_format(device: torch.device) -> torch.memory_format:
    """channels_last on CUDA, where convolutions run faster in it; the default elsewhere."""
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


def _place(network: nn.Module, device: torch.device) -> nn.Module:
    """``network`` on ``device`` in that device's memory format."""
    return network.to(device=device, memory_format=_memory_format(device))


def _epoch_key(row: dict[str, float]) -> tuple[float, float]:
    """How epochs compare: better validation AP wins; at equal AP (often 1.0 on small data) the
    lower validation loss does."""
    return (row["val_ap"], -row["val_loss"])


def _validation_scores(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """BCE loss and AP of validation logits: the numbers early stopping looks at."""
    from sklearn.metrics import average_precision_score

    loss = F.binary_cross_entropy_with_logits(
        torch.from_numpy(logits), torch.as_tensor(labels, dtype=torch.float64))
    return {"val_loss": float(loss), "val_ap": float(average_precision_score(labels, logits))}
