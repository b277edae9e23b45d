"""One trainer for every GAN family: a resumable, self-explaining run folder, on 1 or N processes.

A run folder holds, besides the checkpoint files (``generators.checkpoint``: ``config.json``,
``weights.safetensors`` with G, D and EMA G, ``optim.safetensors`` with the step state, every
rank's RNG state and the data position):

- ``stats.jsonl``: one line per step: ``step``, ``loss_d``, ``loss_g`` (or one ``loss`` for a
  family without a discriminator), ``d_real`` / ``d_fake`` (the loss's score of D(x) and
  D(G(z)), averaged over ranks), whatever else the
  step reports (``skipped``, ``r1``, ``gp``, ...), ``seconds``; every ``diagnostics_every``
  steps also the mode-collapse figures of ``generators.diagnostics`` (``diversity_ratio``,
  ``nn_distinct``, ``nn_distinct_fraction``);
- ``samples.png``: an 8x8 grid of the sampling generator (eval mode, EMA when kept) on the
  latents of seeds 0..63 (classes cycling for conditional families), the same images
  ``sample_images(run_dir, 64, ..., seed=0)`` writes (unless the step draws the grid its own
  cheaper way, ``preview()``); ``samples_<step>.png`` every ``sample_every`` steps;
- ``curves.png``: losses; D(x) and D(G(z)) against the 0.5 line where D cannot tell; the
  diversity figures against 1.

The run watches its own health (``generators.diagnostics.HealthWatch``): mode collapse (the
diagnostics under their bars) or a runaway discriminator is logged once as a warning naming the
symptom and the ``--set`` options to try, and ``config.json`` records it under
``extra.health`` (``collapsed``, ``last_diagnostics``, ``warnings``), which ``zoo sample`` reads.

``--resume`` continues the run in place: weights, step state, RNG and data position come back,
``stats.jsonl`` keeps its rows up to the checkpoint's step, and on the CPU the weights after
``3 + 3`` steps equal those of 6 uninterrupted steps bit for bit.

Under ``torchrun --nproc_per_node N`` each process trains on its shard of the data with its own
seed (``seed * N + rank``), the nets are wrapped in DistributedDataParallel, and only rank 0
writes (``generators.distributed``).

Step contract (a family's ``register_generator(..., step_class=...)``; default
``generators.steps.AdversarialStep``):

- ``__init__(self, pair: GanPair, device: torch.device, *, amp: bool)``: build optimizers,
  scalers, EMA, pools from ``pair.config``. Under torchrun the nets in ``pair`` are DDP
  wrappers: call them through ``forward``; see ``generators.distributed`` for ``unwrap`` and
  ``no_sync``.
- ``__call__(batch) -> dict[str, float]``: one training step on a batch of the family's
  dataset kind (``generators.registry.DATASET_KINDS``); returns ``loss_d``, ``loss_g`` (a
  family without a discriminator: one ``loss``) and, where meaningful, ``d_real`` /
  ``d_fake`` (in [0, 1]) plus any other float statistics.
  Randomness comes from torch's global generator (seeded per rank, saved in checkpoints).
- ``state_dict() -> dict`` / ``load_state_dict(state)``: everything needed to continue
  bit-exactly (optimizers, GradScalers, EMA weights, pools, counters), as a tree of dicts,
  lists, tensors and JSON scalars (stored without pickle by ``crashsafe.tensors``).
- optional ``sample_model() -> nn.Module``: the net to sample from (e.g. the EMA generator);
  latent generators expose ``z_dim`` and take ``forward(z, [labels], [truncation=psi])``.
- optional ``preview() -> Tensor (N, 3, R, R)``: images for the grid and diagnostics, used
  in place of the sample model's seeds 0..63: for families whose sample model takes no
  latents (translation families), or samples them slowly (ddpm: fewer DDIM steps).
- optional ``@staticmethod translate(pair, images, direction) -> images``: what
  ``sample_images(..., source=[(path, split), ...], direction="AtoB"|"BtoA")`` calls (paired
  and aligned families); optional ``@staticmethod read_source(pair, path) -> (R, R, 3) uint8``:
  the generator's input made from a source file (default: the image resized and cropped).
- optional ``@staticmethod reconstruct(pair, image) -> image``: what ``sample_images(...,
  source=[(path, split), ...])`` calls with each source image (1, 3, H, W) at its own size
  (families that remake real images, e.g. the upsampler autoencoders).
- optional ``@staticmethod unfinished(config, steps_done) -> str | None``: why a latent
  family's run cannot sample its final images yet (e.g. a progressive GAN not fully grown),
  None when it can; ``sample_images`` warns with that reason and names the samples
  ``<name>-unfinished``.
"""

from __future__ import annotations

import io
import json
import logging
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from crashsafe.files import append_jsonl, atomic_write_bytes, atomic_write_text, json_safe
from crashsafe.images import save_png
from crashsafe.runtime import rng_state, seed_everything, set_rng_state
from crashsafe.torchrun import Place, all_gather, from_rank_zero, leave_group, mean_over_ranks

from .checkpoint import (has_checkpoint, load_checkpoint, load_train_state, read_checkpoint_config,
                         recover_checkpoint, save_checkpoint)
from .data import BatchStream, ImageFolderDataset, RandomCropDataset, labelled_dataset
from .data_aligned import AlignedDataset, PairTask
from .diagnostics import CollapseProbe, HealthWatch, pool_for_probe
from .distributed import init_distributed, unwrap, wrap
from .images import image_grid, tensor_to_uint8
from .registry import GanPair, GeneratorFamily, create_generator, get_family, resolve_config
from .run_folder import CURVES_FILE, SAMPLES_FILE, STATS_FILE, read_stats
from .sampling import cycled_labels, generate
from .steps import AdversarialStep

__all__ = ["AdversarialStep", "TrainResult", "TrainingDiverged", "plot_training_curves",
           "train_gan"]

GRID_SEEDS = range(64)
# The real images the 64 samples are compared with. 64 real patches of the bundled corpus
# matched against 64 others have only 34-48% distinct nearest neighbours (hubness), under the
# 50% collapse bar; against 512 they have 75-89%, so a faithful generator clears the bar.
PROBE_SIZE = 512
log = logging.getLogger(__name__)
NAN_PATIENCE = 20  # consecutive steps with a non-finite loss before training gives up
LOSS_KEYS = ("loss_d", "loss_g", "loss")  # "loss": families without a discriminator


class TrainingDiverged(RuntimeError):
    """The losses or weights stopped being finite numbers."""


@dataclass(frozen=True)
class TrainResult:
    """Where a training call left its run: the step it started from, the checkpoint's step, the
    target, and why it stopped early (``"time limit"``) or None when it reached the target."""

    run_dir: Path
    start_step: int
    step: int
    target_steps: int
    stopped: str | None = None


def train_gan(name: str, data: Sequence[Any], out_dir: str | Path, *, steps: int,
              data_b: Sequence[str | Path] | None = None, seed: int | None = None,
              device: str = "auto", config_overrides: dict | None = None,
              sample_every: int = 0, checkpoint_every: int = 0, diagnostics_every: int = 50,
              max_minutes: float | None = None, resume: bool = False,
              progress: bool = True) -> TrainResult:
    """Train the registered family ``name`` into the run folder ``out_dir`` up to ``steps``.

    ``data`` is a list of image paths, or of (path, class name) pairs for a ``"labelled"``
    family; a ``"paired"`` family takes domain A in ``data`` and domain B in ``data_b``. Images
    are resized and centre-cropped to the config's resolution, or, for a family registered with
    ``crop="random"``, cut into random crops of that size at their own resolution.
    ``device="auto"`` uses CUDA (mixed precision, channels_last) when present, else the CPU. A
    checkpoint, ``samples.png`` and ``curves.png`` are written every ``checkpoint_every`` steps
    (0: only at the end) and when ``max_minutes`` runs out; extra grids every ``sample_every``
    steps (0: never).

    Without ``resume`` a run already in ``out_dir`` is replaced; with it the run continues
    from its checkpoint (its saved config and seed; ``config_overrides`` and ``seed`` may only
    repeat them). Raises ValueError for bad arguments and :class:`TrainingDiverged` when the
    losses stay non-finite (the last checkpoint is left intact).
    """
    if steps < 1:
        raise ValueError(f"--steps must be 1 or more, got {steps}")
    if max_minutes is not None and max_minutes <= 0:
        raise ValueError(f"--max-minutes must be more than 0, got {max_minutes}")
    context, torch_device = init_distributed(device)
    try:
        trainer = _Trainer(get_family(name), data, data_b, Path(out_dir), steps=steps,
                           seed=seed, device=torch_device, context=context,
                           overrides=dict(config_overrides or {}), resume=resume)
        return trainer.run(sample_every=sample_every, checkpoint_every=checkpoint_every,
                           diagnostics_every=diagnostics_every, max_minutes=max_minutes,
                           progress=progress)
    finally:
        if context.is_distributed:
            leave_group(wait=True)


def _datasets(family: GeneratorFamily, data: Sequence[Any],
              data_b: Sequence[str | Path] | None, config: dict
              ) -> tuple[list[ImageFolderDataset | RandomCropDataset | AlignedDataset], dict,
                         list[str] | None]:
    """The datasets of a family's kind and crop mode, their summary for ``config.json``, the
    class names."""
    kind, resolution = family.dataset, config["resolution"]
    if kind == "paired" and not data_b:
        raise ValueError("this family trains on two image domains: give domain B (--data-b)")
    if kind != "paired" and data_b:
        raise ValueError("only paired families (cyclegan) take a second domain (--data-b)")
    classes = None
    if kind == "labelled":
        if not all(isinstance(item, (tuple, list)) and len(item) == 2 for item in data):
            raise ValueError("a conditional family needs (path, class name) pairs")
        dataset, classes = labelled_dataset(data, resolution)
        datasets = [dataset]
    elif kind == "aligned":
        datasets = [AlignedDataset(data, PairTask.from_config(config), flip=config["flip"])]
    elif family.crop == "random":
        datasets = [RandomCropDataset(data, resolution)]
    else:
        datasets = [ImageFolderDataset(paths, resolution)
                    for paths in ([data, data_b] if kind == "paired" else [data])]
    summary: dict[str, Any] = {}
    for suffix, dataset in zip(("", "_b"), datasets):
        summary[f"num_images{suffix}"] = len(dataset)
        summary[f"skipped_images{suffix}"] = len(dataset.skipped)
    return datasets, summary, classes


class _Trainer:
    """The state of one training call; ``run`` does the steps."""

    def __init__(self, family: GeneratorFamily, data: Sequence[Any],
                 data_b: Sequence[str | Path] | None, run_dir: Path, *, steps: int,
                 seed: int | None, device: torch.device, context: Place, overrides: dict,
                 resume: bool):
        self.run_dir, self.steps, self.device, self.context = run_dir, steps, device, context
        if resume and context.is_main:
            recover_checkpoint(run_dir)  # finish a save a crash cut, before any rank reads
        all_gather(None)
        if resume and not has_checkpoint(run_dir) and (run_dir / STATS_FILE).exists():
            warnings.warn(f"--resume: {run_dir} holds no complete checkpoint (the run stopped "
                          "before its first one was saved); starting it from step 0",
                          stacklevel=3)
            resume = False  # a folder without any trace of a run is still refused below
        document = read_checkpoint_config(run_dir) if resume else None
        if document is not None and document["name"] != family.name:
            raise ValueError(f"{run_dir} holds a {document['name']!r} run, not {family.name!r}: resume "
                             f"it as {document['name']!r} or train {family.name!r} into another "
                             "--out")
        saved_seed = document["extra"]["training"]["seed"] if document else None
        if seed is not None and saved_seed is not None and seed != saved_seed:
            raise ValueError(f"{run_dir} was trained with seed {saved_seed}; a resumed run "
                             f"keeps it (got seed {seed}): drop --seed, or train into another "
                             "--out")
        self.seed = saved_seed if saved_seed is not None else (seed or 0)
        config = resolve_config(family.name, **(document["config"] if document else overrides))
        if document:
            _check_unchanged(config, resolve_config(family.name, **{**config, **overrides}),
                             run_dir)

        datasets, summary, classes = _datasets(family, data, data_b, config)
        if classes is not None:
            config = _with_classes(family.name, config, classes, overrides, document)
        self.classes = classes
        seed_everything(self.seed * context.world_size + context.rank)
        if document:
            self.pair, _ = load_checkpoint(run_dir, device)
            self.pair.generator_ema = None  # the step's own EMA is restored from its state
        else:
            self.pair = create_generator(family.name, **config)
        self.pair.to(device)
        if device.type == "cuda":
            self.pair.to(memory_format=torch.channels_last)
            torch.backends.cudnn.benchmark = True
        self.pair.train()
        view = self.pair
        if context.is_distributed:
            view = GanPair(family.name, {k: wrap(v, device) for k, v in self.pair.nets.items()},
                           self.pair.config, self.pair.dataset)
        self.amp = device.type == "cuda"
        self.step_fn = family.resolve_step_class()(view, device, amp=self.amp)
        self.stream = BatchStream(datasets, config["batch_size"], self.seed,
                                  rank=context.rank, world_size=context.world_size)
        self.real_probe = datasets[-1]
        self.extra = {
            "training": {"seed": self.seed, "steps": steps, "device": str(device),
                         "amp": self.amp, "world_size": context.world_size,
                         "batch_size": self.stream.batch_size * context.world_size},
            "dataset": summary,
        }
        if classes is not None:
            self.extra["classes"] = classes
        self.start_step = 0
        self.stats: list[dict] = []
        if document:
            self._restore(document)
        self.health = HealthWatch(self.pair.config)
        for row in self.stats:  # a resumed run replays its rows (their warnings were said)
            self.health.observe(row)
        self.last_checkpoint = self.start_step if document else None
        self.probe: CollapseProbe | None = None
        self.bad_steps = 0

    def _restore(self, document: dict) -> None:
        """Step state, RNG, data position and the stats rows up to the checkpoint's step."""
        state = load_train_state(self.run_dir)
        self.step_fn.load_state_dict(state["step"])
        self.start_step = document["step"]
        exact = (state["world_size"] == self.context.world_size
                 and document["extra"]["dataset"] == self.extra["dataset"])
        if exact:
            self.stream.load_state_dict(state["data"])
            set_rng_state(state["rng"][self.context.rank])
        else:
            warnings.warn(f"resuming {self.run_dir} with other data or another number of "
                          "processes: continuing, but not bit-exactly", stacklevel=3)
            seed_everything((self.seed + self.start_step) * self.context.world_size
                            + self.context.rank)
        self.stats = [row for row in read_stats(self.run_dir) if row["step"] <= self.start_step]
        if self.context.is_main:
            atomic_write_text(self.run_dir / STATS_FILE, "".join(
                json.dumps(json_safe(row)) + "\n" for row in self.stats))

    def run(self, *, sample_every: int, checkpoint_every: int, diagnostics_every: int,
            max_minutes: float | None, progress: bool) -> TrainResult:
        main = self.context.is_main
        if self.start_step >= self.steps:
            return TrainResult(self.run_dir, self.start_step, self.start_step, self.steps)
        if main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if not self.start_step:
                (self.run_dir / STATS_FILE).write_text("", encoding="utf-8")
        started = time.monotonic()
        step = self.start_step
        with tqdm(total=self.steps, initial=self.start_step, unit="step",
                  desc=f"train {self.pair.name}", disable=not (progress and main)) as bar:
            for step in range(self.start_step + 1, self.steps + 1):
                tick = time.perf_counter()
                stats = self.step_fn(self.stream.next())
                row = {"step": step, **dict(zip(stats, mean_over_ranks(list(stats.values()),
                                                                        self.device)))}
                row["seconds"] = round(time.perf_counter() - tick, 6)
                out_of_time = max_minutes is not None and from_rank_zero(
                    time.monotonic() - started > 60 * max_minutes)
                if main and diagnostics_every > 0 and (step % diagnostics_every == 0
                                                       or step == self.steps or out_of_time):
                    row.update(self._diagnose())  # the last row of a run always has them
                self.stats.append(row)
                if main:
                    append_jsonl(self.run_dir / STATS_FILE, [row], fsync=False)
                    for message in self.health.observe(row):
                        log.warning("training %s: %s", self.pair.name, message)
                self._guard(step, row)
                bar.update(1)
                bar.set_postfix({key: f"{value:.3f}" for key, value in _losses(row).items()},
                                refresh=False)
                if main and sample_every > 0 and step % sample_every == 0:
                    self._save_grid(f"samples_{step:06d}.png")
                if (checkpoint_every > 0 and step % checkpoint_every == 0) \
                        or step == self.steps or out_of_time:
                    self._checkpoint(step)
                if out_of_time:
                    return TrainResult(self.run_dir, self.start_step, step, self.steps,
                                       "time limit")
        return TrainResult(self.run_dir, self.start_step, step, self.steps)

    def _guard(self, step: int, row: dict) -> None:
        """Abort when the weights went non-finite or the losses stayed so for NAN_PATIENCE
        steps (the default step skips such updates, so its weights stay usable)."""
        losses = _losses(row)
        if all(math.isfinite(value) for value in losses.values()):
            self.bad_steps = 0
            return
        self.bad_steps += 1
        weights_ok = all(bool(torch.isfinite(p).all()) for p in self.pair.parameters())
        if weights_ok and self.bad_steps < NAN_PATIENCE:
            return
        why = ("the weights became NaN or infinite" if not weights_ok else
               f"the losses were not finite for {NAN_PATIENCE} steps in a row")
        saved = self.last_checkpoint
        raise TrainingDiverged(
            f"training {self.pair.name} diverged at step {step}: {why} ("
            + ", ".join(f"{key}={value}" for key, value in losses.items()) + "). "
            + (f"The checkpoint in {self.run_dir} (step {saved}) is intact. "
               if saved is not None else "")
            + ("Lower lr, try loss=hinge or r1_gamma>0 (--set)" if "loss_d" in losses
               else "Lower lr (--set)") + ", and train again"
            + (" with --resume." if saved is not None else "."))

    def _sample_model(self) -> torch.nn.Module | None:
        """The step's ``sample_model()``, else the pair's generator, else None."""
        sample_model = getattr(self.step_fn, "sample_model", None)
        if sample_model is not None:
            return unwrap(sample_model())
        return self.pair.sample_model() if "generator" in self.pair.net_names else None

    def _preview(self) -> torch.Tensor | None:
        """The fixed batch the grid and diagnostics show: the step's ``preview()`` when it has
        one, else seeds 0..63 (classes cycling); None when there is neither."""
        preview = getattr(self.step_fn, "preview", None)
        if preview is not None:
            return preview()
        model = self._sample_model()
        if model is not None and hasattr(model, "z_dim"):
            labels = cycled_labels(GRID_SEEDS, len(self.classes)) if self.classes else None
            return generate(model, GRID_SEEDS, self.device, labels=labels)
        return None

    def _save_grid(self, filename: str) -> None:
        images = self._preview()
        if images is not None:
            save_png(image_grid(tensor_to_uint8(images)), self.run_dir / filename)

    def _diagnose(self) -> dict[str, float]:
        fakes = self._preview()
        if fakes is None or len(fakes) < 2:
            return {}
        if self.probe is None:
            order = torch.randperm(len(self.real_probe), generator=torch.Generator().manual_seed(0))
            pooled = []  # decoded 64 at a time and pooled as the probe would (bounded memory)
            for chunk in order[:PROBE_SIZE].split(64):
                real = self.real_probe.batch(chunk)
                if isinstance(real, tuple):  # (images, labels), or (inputs, targets) if aligned
                    real = real[1] if self.pair.dataset == "aligned" else real[0]
                pooled.append(pool_for_probe(real))
            self.probe = CollapseProbe(torch.cat(pooled))
        return self.probe.measure(fakes)

    def _checkpoint(self, step: int) -> None:
        rng = all_gather(rng_state())  # every rank's generators, for an exact resume
        if not self.context.is_main:
            self.last_checkpoint = step
            return
        model = self._sample_model()
        ema = None if model is None or any(model is net for net in self.pair.nets.values()) \
            else model
        self.extra["health"] = self.health.summary()
        save_checkpoint(self.run_dir, self.pair, step, self.extra, ema=ema, train_state={
            "step": self.step_fn.state_dict(), "rng": rng, "data": self.stream.state_dict(),
            "world_size": self.context.world_size})
        self.last_checkpoint = step
        self._save_grid(SAMPLES_FILE)
        plot_training_curves(self.stats, self.run_dir / CURVES_FILE)


def _check_unchanged(saved: dict, requested: dict, run_dir: Path) -> None:
    changed = sorted(key for key in saved if saved[key] != requested[key])
    if changed:
        raise ValueError(f"--resume keeps the config of {run_dir}; these keys differ: "
                         + ", ".join(f"{k} (saved {saved[k]!r}, given {requested[k]!r})"
                                     for k in changed)
                         + ". Train into a new folder to change them.")


def _with_classes(name: str, config: dict, classes: list[str], overrides: dict,
                  document: dict | None) -> dict:
    """``config`` with ``num_classes`` set from the data's classes (checked against a resumed
    run's classes and an explicit override)."""
    if document is not None and document["extra"].get("classes") != classes:
        raise ValueError(f"the data's classes {classes} differ from the run's "
                         f"{document['extra'].get('classes')}: resume with the run's data, or "
                         "train into another --out")
    wanted = overrides.get("num_classes", len(classes))
    if wanted != len(classes):
        raise ValueError(f"num_classes={wanted} was asked for but the data has "
                         f"{len(classes)} classes: {classes}; drop --set num_classes (it is "
                         "read from the data)")
    return resolve_config(name, **{**config, "num_classes": len(classes)})


def _losses(row: dict) -> dict[str, float]:
    """The losses a stats row holds: D's and G's, or the one ``loss`` of a family without a
    discriminator (ddpm)."""
    return {key: row[key] for key in LOSS_KEYS if key in row}


def _smooth(values: np.ndarray) -> np.ndarray:
    """Exponential moving average with a span of about 2% of the curve (NaNs carried over)."""
    alpha = min(1.0, 50.0 / max(len(values), 1))
    out = np.empty_like(values)
    level = np.nan
    for i, v in enumerate(values):
        level = v if np.isnan(level) else (level if np.isnan(v) else level + alpha * (v - level))
        out[i] = level
    return out


_CURVE_LABELS = {"loss_d": "D loss", "loss_g": "G loss", "loss": "loss",
                 "d_real": "D(x) real", "d_fake": "D(G(z)) fake",
                 "diversity_ratio": "sample / real spread",
                 "nn_distinct_fraction": "distinct real nearest neighbours"}


def plot_training_curves(stats: Sequence[dict], out_png: str | Path) -> None:
    """Write a three-panel PNG: D and G losses (or the one ``loss`` of a family without D);
    D(x) and D(G(z)) with the 0.5 line; the mode-collapse figures (sparse rows, drawn as
    points) with the line at 1."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    steps = np.array([row["step"] for row in stats], dtype=float)

    def column(name: str) -> np.ndarray:
        return np.array([np.nan if row.get(name) is None else row[name] for row in stats],
                        dtype=float)

    figure = Figure(figsize=(15, 4), dpi=100)
    FigureCanvasAgg(figure)
    # Fixed margins: a constrained layout costs more than drawing the curves.
    figure.subplots_adjust(left=0.05, right=0.99, bottom=0.13, top=0.92, wspace=0.22)
    losses, outputs, diversity = figure.subplots(1, 3, sharex=True)
    loss_names = [key for key in LOSS_KEYS if any(key in row for row in stats)] \
        or ["loss_d", "loss_g"]
    for axis, names in ((losses, loss_names), (outputs, ("d_real", "d_fake"))):
        for name, colour in zip(names, ("tab:blue", "tab:orange")):
            values = column(name)
            if len(values) > 50:
                axis.plot(steps, values, color=colour, alpha=0.25, linewidth=0.8)
                values = _smooth(values)
            axis.plot(steps, values, color=colour, label=_CURVE_LABELS[name])
    for name, colour in (("diversity_ratio", "tab:green"), ("nn_distinct_fraction", "tab:red")):
        values = column(name)
        shown = ~np.isnan(values)
        diversity.plot(steps[shown], values[shown], color=colour, marker="o", markersize=3,
                       label=_CURVE_LABELS[name])
    if np.isnan(column("d_real")).all():
        outputs.text(0.5, 0.7, "no discriminator outputs logged", ha="center", va="center",
                     transform=outputs.transAxes, color="grey")
    if np.isnan(column("diversity_ratio")).all():
        diversity.text(0.5, 0.5, "no diagnostics logged yet\n(see diagnostics_every)",
                       ha="center", va="center", transform=diversity.transAxes, color="grey")
    outputs.axhline(0.5, color="grey", linestyle="--", linewidth=1, label="0.5 (D undecided)")
    outputs.set_ylim(0, 1)
    diversity.axhline(1.0, color="grey", linestyle="--", linewidth=1,
                      label="1 (as varied as the data)")
    diversity.set_ylim(bottom=0)
    titles = (("losses", "loss"), ("discriminator outputs", "score of D"),
              ("mode collapse (-> 0: collapsed)", "ratio"))
    for axis, (title, ylabel) in zip((losses, outputs, diversity), titles):
        axis.set_title(title)
        axis.set_xlabel("step")
        axis.set_ylabel(ylabel)
        axis.grid(alpha=0.3)
        axis.legend(loc="best", fontsize="small")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    atomic_write_bytes(out_png, buffer.getvalue())
