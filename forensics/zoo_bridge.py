"""Where the zoo meets the forensics side: the training data of a generator, read from corpora
(:func:`zoo_training_data`), and the sample quality of a generator, a folder of fakes
against a folder of reals (FD, KID, precision/recall and Inception Score) in an ImageNet
model's feature space and, given local weights, Inception-v3's; the report ``forensics zoo
metrics`` prints.

One of the orchestration modules that may import both packages: ``forensics`` finds the images
and the backbone's offline weights, ``generators`` says what data a family trains on and
``generators.quality`` computes the figures.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from forensics.corpus import iter_image_files, training_images

def zoo_training_data(name: str, data: str | list[str], split: str = "train",
                      class_key: str | None = None, data_b: str | list[str] | None = None
                      ) -> tuple[list, list[Path] | None]:
    """What ``train_gan`` takes for generator ``name`` from corpora or folders: the images of
    ``split`` (``(path, class)`` pairs for a labelled family, paths otherwise) and, for
    translation families, the second domain's paths from ``data_b``."""
    from generators.registry import get_family

    family = get_family(name)
    as_list = (lambda v: [v] if isinstance(v, str) else list(v))
    items = training_images(as_list(data), split, class_key)
    images = items if family.dataset == "labelled" else [path for path, _ in items]
    second = ([path for path, _ in training_images(as_list(data_b), split)]
              if data_b else None)
    return images, second


INCEPTION_NOTE = ("Inception FID and IS unavailable: no local Inception-v3 weights (pass "
                  "--inception-weights FILE, a torchvision inception_v3 state dict)")


def feature_space(backbone: str) -> Any:
    """The ``generators.quality.FeatureSpace`` of a timm backbone with offline ImageNet
    weights; raises ValueError for one without (scratch backbones) or whose weights are
    missing."""
    from forensics.backbones import SCRATCH_BACKBONES, BackboneError, create_backbone
    from generators.quality import FeatureSpace

    if backbone in SCRATCH_BACKBONES:
        raise ValueError(f"--backbone {backbone} has no ImageNet weights; the metrics need "
                         "an ImageNet model such as tf_efficientnet_lite0")
    try:
        return FeatureSpace.from_timm(create_backbone(backbone), backbone)
    except BackboneError as exc:
        raise ValueError(str(exc)) from None


def _image_files(folder: str | os.PathLike, side: str, k: int) -> list[Path]:
    """The images of ``folder``, sorted; more than ``k`` of them, or ValueError."""
    if not Path(folder).is_dir():
        raise ValueError(f"--{side} {folder} is not a folder; pass a folder of {side} images")
    found = sorted(p for p in iter_image_files([folder]) if p.is_file())
    if len(found) <= k:
        raise ValueError(f"--{side} {folder} holds {len(found)} images; the metrics need more "
                         f"than k={k}: give a folder with more images or a smaller --k")
    return found


def quality_report(real: str | os.PathLike, fake: str | os.PathLike, *,
                   backbone: str = "tf_efficientnet_lite0", device: str = "auto",
                   batch_size: int = 32, is_splits: int = 10, kid_subset_size: int = 1000,
                   k: int = 3, inception_weights: str | os.PathLike | None = None
                   ) -> dict[str, Any]:
    """FD, KID, precision/recall and IS of the fakes in ``fake`` against the reals in ``real``,
    each figure named by its feature space (``FD_<backbone>``, ...), with ``n_real``,
    ``n_fake``, ``input_size`` and, without ``inception_weights``, the Inception figures None
    and a ``note`` saying why. Raises ValueError for inputs it cannot use."""
    from crashsafe.runtime import resolve_device
    from generators.quality import (INCEPTION_SIZE, FeatureSpace, inception_feature_model,
                                    sample_quality)

    paths = {side: _image_files(folder, side, k) for side, folder in (("real", real),
                                                                      ("fake", fake))}
    torch_device = resolve_device(device)

    def figures(space: FeatureSpace) -> dict:
        embedded = {side: space.embed(found, device=torch_device, batch_size=batch_size)
                    for side, found in paths.items()}
        return sample_quality(embedded["real"], embedded["fake"], space.name,
                              is_splits=is_splits, kid_subset_size=kid_subset_size, k=k)

    space = feature_space(backbone)
    report = {"real": str(real), "fake": str(fake), "backbone": backbone,
              "input_size": space.size, **figures(space)}
    if inception_weights:
        try:
            inception = inception_feature_model(inception_weights)
        except (OSError, ValueError) as exc:
            raise ValueError(f"--inception-weights: {exc}") from None
        report.update(figures(FeatureSpace(inception, "inception_v3", INCEPTION_SIZE,
                                           (0.5,) * 3, (0.5,) * 3)))
    else:
        report["FD_inception_v3"] = report["IS_inception_v3"] = None
        report["note"] = INCEPTION_NOTE
    return report
