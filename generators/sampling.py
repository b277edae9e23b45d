"""Sampling a trained generator into a fake corpus: PNGs plus ``manifest.jsonl``.

Latent families draw image ``seed{s:06d}.png`` from ``seed_latents([s])``: the seed names the
image whatever the batch. Conditional families (``dataset="labelled"``) draw seed ``s`` from
class ``s % num_classes`` by default, or every seed from one class (``class_name``; images then
go to ``<class>/seed{s:06d}.png``). ``truncation`` (families whose generator's ``forward``
takes a ``truncation`` argument: StyleGAN, BigGAN) adds ``_psi<value>`` to the names. Translation
families (``dataset="paired"`` or ``"aligned"``) map ``source`` images through the family
step's ``translate(pair, images, direction)`` hook, one ``<stem>_<direction>.png`` per source;
a step with a ``read_source(pair, path)`` hook makes its generator's input from each source
file itself (pix2pix: the edges of a photo, or the input half of an A|B pair).
Reconstructing families (a step with a ``reconstruct(pair, image)`` hook, e.g. the upsampler
autoencoders) remake each source at its own size, never resized, under the source's path
relative to the folder of all sources. Each source comes with its split, which its translation
or reconstruction inherits (a fake made from a test image is a test image: in another split it
would leak the test photo into training).
"""

from __future__ import annotations

import inspect
import logging
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from crashsafe.corpus_manifest import append_manifest, manifest_path, read_manifest_rows
from crashsafe.images import load_image, save_png
from crashsafe.runtime import resolve_device

from .checkpoint import checkpoint_sha256, load_checkpoint
from .data import square_rgb
from .images import tensor_to_uint8
from .registry import GanPair, get_family

log = logging.getLogger(__name__)
UNFINISHED_SUFFIX = "-unfinished"  # the generator name of a run sampled before it could finish

DIRECTIONS = ("AtoB", "BtoA")
Producer = Callable[[list], Sequence[np.ndarray]]  # items -> (H, W, 3) uint8 images


def seed_latents(seeds: Iterable[int], z_dim: int) -> torch.Tensor:
    """One standard-normal latent per seed, (N, z_dim) float32 on the CPU.

    Each row depends on its seed alone (its own ``torch.Generator``), so an image is named by
    its seed whatever the batch or order it is drawn in.
    """
    rows = [torch.randn(z_dim, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
    return torch.stack(rows) if rows else torch.empty(0, z_dim)


def cycled_labels(seeds: Sequence[int], num_classes: int) -> torch.Tensor:
    """The default class of each seed: ``seed % num_classes`` (int64)."""
    return torch.tensor([int(s) % num_classes for s in seeds], dtype=torch.int64)


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` in eval mode and without autograd; its previous mode is restored after."""
    was_training = module.training
    module.eval()
    try:
        with torch.inference_mode():
            yield module
    finally:
        module.train(was_training)


def generate(model: nn.Module, seeds: Sequence[int], device: torch.device, *,
             labels: torch.Tensor | None = None, truncation: float | None = None) -> torch.Tensor:
    """Images (N, 3, R, R) in [-1, 1] of a latent generator (eval mode) for ``seeds``."""
    args = () if labels is None else (labels.to(device),)
    kwargs = {} if truncation is None else {"truncation": truncation}
    with eval_mode(model):
        return model(seed_latents(seeds, model.z_dim).to(device), *args, **kwargs)


def image_name(seed: int, class_name: str | None = None, truncation: float | None = None) -> str:
    """``seed{s:06d}[_psi<t>].png``, under a folder named after the class when given (path
    separators and leading dots replaced, so a class name cannot leave the output folder)."""
    name = f"seed{seed:06d}" + ("" if truncation is None else f"_psi{truncation:g}") + ".png"
    if class_name is None:
        return name
    return f"{re.sub(r'[^A-Za-z0-9._-]+', '_', class_name).lstrip('.') or '_'}/{name}"


@dataclass(frozen=True)
class _Job:
    """One image to write: its path under the output folder, its own manifest fields, and
    what the producer needs to make it (a seed, or a source image path)."""

    path: str
    fields: dict
    item: Any


def sample_images(run_dir: str | Path, n: int | None, out_dir: str | Path, *, seed: int = 0,
                  batch_size: int = 64, device: str = "auto", progress: bool = True,
                  class_name: str | None = None, truncation: float | None = None,
                  source: Sequence[tuple[str | Path, str]] | None = None,
                  direction: str = "AtoB") -> list[dict]:
    """Write ``n`` images of the checkpoint in ``run_dir`` to ``out_dir``; return their rows.

    Latent families use seeds ``seed..seed+n-1``; translating and reconstructing families the
    first ``n`` (None: all) of the ``source`` images, given as (path, split) pairs
    (``forensics.corpus.image_splits`` lists a folder's). Each new image gets one row in
    ``out_dir/manifest.jsonl``: ``path`` (relative to ``out_dir``), ``label`` ("fake"),
    ``generator`` (the family's ``generator_label`` of the config, e.g.
    ``autoencoder-convT4-x4``), ``checkpoint`` (``run_dir`` as given), ``checkpoint_sha256``,
    ``seed`` (None for fakes made from sources), ``resolution`` (None for reconstructions, which
    keep their source's size), ``class`` / ``truncation`` / ``source`` + ``split`` (the
    source's) + ``direction`` where they apply, and the fields of a sample model's
    ``provenance`` (ddpm: ``sampler``, ``sampling_steps``, ``eta``). Images whose row and PNG
    already exist are skipped, so rerunning after an interruption resumes without duplicating
    rows. A run that its step's ``unfinished`` hook says cannot draw its final images yet (a
    progressive GAN not fully grown) is sampled as it is, with a warning, under generator
    ``<name>-unfinished`` and the hook's reason in each row's ``unfinished``. Raises
    ValueError if ``out_dir`` already holds one of these images from another checkpoint, or
    for options the family lacks.
    """
    if (n is not None and n < 0) or batch_size < 1:
        raise ValueError(f"need n >= 0 and batch_size >= 1, got n={n}, batch_size={batch_size}; "
                         "pass --n 0 or more and --batch-size 1 or more")
    torch_device = resolve_device(device)
    pair, document = load_checkpoint(run_dir, device=torch_device)
    family = get_family(pair.name)
    reconstruct = getattr(family.resolve_step_class(), "reconstruct", None)
    if pair.dataset in ("paired", "aligned"):
        jobs, produce = _translation_jobs(pair, n, source, direction, torch_device)
    elif reconstruct is not None:
        jobs, produce = _reconstruction_jobs(pair, n, source, reconstruct, torch_device)
    else:
        if source is not None:
            raise ValueError(f"generator {pair.name!r} draws from latents; --source is only for "
                             "translation and reconstruction families (cyclegan, pix2pix, "
                             "autoencoder)")
        if n is None:
            raise ValueError(f"generator {pair.name!r} draws from latents: give the number of "
                             "images to draw (--n)")
        jobs, produce = _latent_jobs(pair, document, n, seed, class_name, truncation,
                                     torch_device)
    common = {"label": "fake", "generator": family.generator_label(pair.config),
              "checkpoint": str(run_dir),
              "checkpoint_sha256": checkpoint_sha256(run_dir),
              "resolution": document["config"]["resolution"]}
    unfinished = getattr(family.resolve_step_class(), "unfinished", None)
    reason = unfinished(pair.config, document["step"]) if unfinished is not None else None
    if reason is not None:  # its own generator name, so evaluation never mixes it with the
        common["generator"] += UNFINISHED_SUFFIX  # finished model's fakes
        common["unfinished"] = reason
        log.warning("%s: %s; sampled as it is, under generator %r", run_dir, reason,
                    common["generator"])
    return _write_samples(Path(out_dir), jobs, produce, common, batch_size, progress)


def _latent_jobs(pair: GanPair, document: dict, n: int, seed: int, class_name: str | None,
                 truncation: float | None, device: torch.device
                 ) -> tuple[list[_Job], Producer]:
    model = pair.sample_model()
    if truncation is not None and "truncation" not in inspect.signature(model.forward).parameters:
        raise ValueError(f"generator {pair.name!r} has no truncation; it applies to stylegan "
                         "(w pulled to its mean) and biggan (latents truncated)")
    seeds = list(range(seed, seed + n))
    classes = document.get("extra", {}).get("classes")
    psi = {} if truncation is None else {"truncation": truncation}
    psi.update(getattr(model, "provenance", {}))  # how the model draws (ddpm: its sampler)
    if pair.dataset != "labelled":
        if class_name is not None:
            raise ValueError(f"generator {pair.name!r} is not conditional; --class applies to "
                             "conditional families such as cgan")
        labels = None
        jobs = [_Job(image_name(s, None, truncation), {"seed": s, **psi}, s) for s in seeds]
    else:
        if class_name is not None and class_name not in classes:
            raise ValueError(f"class {class_name!r} is not one of the {len(classes)} classes of "
                             f"{document['name']!r}: {classes}")
        labels = (torch.full((len(seeds),), classes.index(class_name), dtype=torch.int64)
                  if class_name is not None else cycled_labels(seeds, len(classes)))
        jobs = [_Job(image_name(s, class_name, truncation),
                     {"seed": s, "class": classes[int(label)], **psi}, (s, int(label)))
                for s, label in zip(seeds, labels)]

    def produce(items: list) -> np.ndarray:
        if labels is None:
            return tensor_to_uint8(generate(model, items, device, truncation=truncation))
        batch_seeds = [s for s, _ in items]
        batch_labels = torch.tensor([label for _, label in items], dtype=torch.int64)
        return tensor_to_uint8(generate(model, batch_seeds, device, labels=batch_labels,
                                        truncation=truncation))

    return jobs, produce


def _sources(source: Sequence[tuple[str | Path, str]] | None, n: int | None,
             what: str) -> list[tuple[Path, str]]:
    """The first ``n`` (None: all) (path, split) pairs of ``source``, which must hold some."""
    chosen = [(Path(path), split) for path, split in list(source or ())[:n]]
    if not chosen:
        raise ValueError(f"no source images to {what}; pass a --source folder holding images")
    return chosen


def _to_tensor(arrays: np.ndarray, device: torch.device) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float in [-1, 1] on ``device``."""
    return torch.from_numpy(arrays).permute(0, 3, 1, 2).float().div(127.5).sub(1.0).to(device)


def _translation_jobs(pair: GanPair, n: int | None,
                      source: Sequence[tuple[str | Path, str]] | None, direction: str,
                      device: torch.device) -> tuple[list[_Job], Producer]:
    if source is None:
        raise ValueError(f"generator {pair.name!r} translates images: give a source folder "
                         f"(--source DIR) and a direction ({' or '.join(DIRECTIONS)})")
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    step_class = get_family(pair.name).resolve_step_class()
    translate = getattr(step_class, "translate", None)
    if translate is None:
        raise ValueError(f"generator family {pair.name!r} provides no translate hook")
    resolution = pair.config["resolution"]
    read_source = getattr(step_class, "read_source",
                          lambda _, path: square_rgb(load_image(path), resolution))
    jobs = [_Job(f"{path.stem}_{direction}.png",
                 {"seed": None, "source": str(path), "split": split, "direction": direction},
                 path)
            for path, split in _sources(source, n, "translate")]

    def produce(items: list) -> np.ndarray:
        arrays = np.stack([read_source(pair, p) for p in items])
        with torch.inference_mode():
            return tensor_to_uint8(translate(pair.eval(), _to_tensor(arrays, device), direction))

    return jobs, produce


def _reconstruction_jobs(pair: GanPair, n: int | None,
                         source: Sequence[tuple[str | Path, str]] | None,
                         reconstruct: Callable[[GanPair, torch.Tensor], torch.Tensor],
                         device: torch.device) -> tuple[list[_Job], Producer]:
    if source is None:
        raise ValueError(f"generator {pair.name!r} reconstructs real images: give a source "
                         "folder (--source DIR)")
    chosen = _sources(source, n, "reconstruct")
    # Named by the path under the folder of all sources (not only the first n), so a rerun
    # with another --n names each image the same.
    root = Path(os.path.commonpath([Path(path).parent for path, _ in source]))
    jobs = [_Job(path.relative_to(root).with_suffix(".png").as_posix(),
                 {"seed": None, "source": str(path), "split": split, "resolution": None}, path)
            for path, split in chosen]

    def produce(items: list) -> list[np.ndarray]:
        images = []
        with torch.inference_mode():
            for path in items:  # one at a time: each keeps its own size
                image = _to_tensor(load_image(path)[None], device)
                images.append(tensor_to_uint8(reconstruct(pair.eval(), image))[0])
        return images

    return jobs, produce


def _write_samples(out_dir: Path, jobs: list[_Job], produce: Producer, common: dict,
                   batch_size: int, progress: bool) -> list[dict]:
    # Folders are made as images are written: a refusal in the first batch leaves nothing.
    for job in jobs:  # a run killed mid-write leaves its atomic-write temp file behind
        for stale in (out_dir / job.path).parent.glob(f".{Path(job.path).name}.*.tmp"):
            stale.unlink(missing_ok=True)
    manifest = manifest_path(out_dir)
    rows_by_path = {row["path"]: row for row in read_manifest_rows(out_dir, repair=True)}
    clashes = [job.path for job in jobs if job.path in rows_by_path
               and rows_by_path[job.path].get("checkpoint_sha256") != common["checkpoint_sha256"]]
    if clashes:
        raise ValueError(f"{manifest} already lists {clashes[0]} from another checkpoint "
                         f"({rows_by_path[clashes[0]].get('checkpoint')}); "
                         "sample each checkpoint into its own folder")
    todo = [job for job in jobs
            if not (job.path in rows_by_path and (out_dir / job.path).exists())]
    with tqdm(total=len(todo), desc=f"sample {common['generator']}", unit="img",
              disable=not progress or not todo) as bar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            images = produce([job.item for job in batch])
            new_rows = []
            for job, image in zip(batch, images):
                (out_dir / job.path).parent.mkdir(parents=True, exist_ok=True)
                save_png(image, out_dir / job.path)
                if job.path not in rows_by_path:
                    rows_by_path[job.path] = {"path": job.path, **common, **job.fields}
                    new_rows.append(rows_by_path[job.path])
            # Rows follow their PNGs, so a listed image always exists in full.
            append_manifest(out_dir, new_rows)
            bar.update(len(batch))
    return [rows_by_path[job.path] for job in jobs]
