"""Adversarial training of a GanPair from a list of real images, into a self-explaining run folder.

A run folder holds, besides the checkpoint files (see ``generators.checkpoint``):

- ``stats.jsonl``: one line per step: ``step``, ``loss_d``, ``loss_g``, ``d_real`` (mean
  sigmoid D(x)), ``d_fake`` (mean sigmoid D(G(z)) before D's update), ``seconds``;
- ``samples.png``: an 8x8 grid of the generator (eval mode) on the latents of seeds 0..63, the
  same images ``sample_images(run_dir, 64, ..., seed=0)`` writes; ``samples_<step>.png`` every
  ``sample_every`` steps;
- ``curves.png``: losses, and D(x) / D(G(z)) against the 0.5 line where D cannot tell.

The per-step recipe is an object (``AdversarialStep``: a D update on real and detached fake
images, then a G update on the same fakes, losses from ``generators.losses``); families that
need more (regularisers, EMA, cycle losses) can bring their own step with the same interface.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .checkpoint import save_checkpoint
from .data import ImageFolderDataset
from .files import atomic_write_bytes, json_safe, read_jsonl
from .images import image_grid, save_png, tensor_to_uint8
from .losses import get_loss
from .registry import GanPair, create_generator
from .runtime import resolve_device, seed_everything
from .sampling import seed_latents

STATS_FILE = "stats.jsonl"
SAMPLES_FILE = "samples.png"
CURVES_FILE = "curves.png"
GRID_SEEDS = range(64)
STAT_NAMES = ("loss_d", "loss_g", "d_real", "d_fake")


class AdversarialStep:
    """One training step of a generator/discriminator pair with Adam and a named GAN loss.

    Holds the optimizers (``optimizers["G"]``, ``optimizers["D"]``; lr and betas from the config)
    and, with ``amp`` (CUDA only), float16 autocast with one GradScaler per network.
    Calling it with a real batch (N, 3, R, R) in [-1, 1] returns the step's statistics.
    """

    def __init__(self, pair: GanPair, device: torch.device, *, amp: bool = False):
        config = pair.config
        self.pair = pair
        self.device = device
        self.amp = amp
        self.channels_last = device.type == "cuda"
        self.loss = get_loss(config["loss"])
        self.optimizers = {
            "G": torch.optim.Adam(pair.generator.parameters(), lr=config["lr"],
                                  betas=config["betas"]),
            "D": torch.optim.Adam(pair.discriminator.parameters(), lr=config["lr"],
                                  betas=config["betas"]),
        }
        self.scalers = {name: torch.amp.GradScaler(device.type, enabled=amp)
                        for name in self.optimizers}

    def _update(self, name: str, loss: torch.Tensor) -> None:
        optimizer, scaler = self.optimizers[name], self.scalers[name]
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    def __call__(self, real: torch.Tensor) -> dict[str, float]:
        generator, discriminator = self.pair.generator, self.pair.discriminator
        real = real.to(self.device, non_blocking=True)
        if self.channels_last:
            real = real.contiguous(memory_format=torch.channels_last)
        z = torch.randn(real.shape[0], generator.z_dim, device=self.device)
        autocast = torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp)

        with autocast:
            fake = generator(z)
            real_logits = discriminator(real)
            fake_logits = discriminator(fake.detach())
            loss_d = self.loss.discriminator(real_logits, fake_logits)
        self._update("D", loss_d)

        # D's weights get no gradient from G's loss: skipping them saves a third of D's backward.
        discriminator.requires_grad_(False)
        try:
            with autocast:
                loss_g = self.loss.generator(discriminator(fake))
            self._update("G", loss_g)
        finally:
            discriminator.requires_grad_(True)

        values = torch.stack([
            loss_d.detach().float(), loss_g.detach().float(),
            torch.sigmoid(real_logits.detach().float()).mean(),
            torch.sigmoid(fake_logits.detach().float()).mean(),
        ]).tolist()  # the step's only host sync
        return dict(zip(STAT_NAMES, values))


def _infinite_batches(dataset: torch.utils.data.Dataset, batch_size: int, seed: int,
                      pin_memory: bool) -> Iterator[torch.Tensor]:
    """Shuffled full batches forever; a dataset smaller than a batch gives batches of its size."""
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=min(batch_size, len(dataset)), shuffle=True, drop_last=True,
        num_workers=0, pin_memory=pin_memory, generator=torch.Generator().manual_seed(seed))
    while True:
        yield from loader


def render_sample_grid(generator: torch.nn.Module, device: torch.device,
                       seeds: Sequence[int] = GRID_SEEDS, ncols: int = 8) -> np.ndarray:
    """The generator's images (eval mode) for ``seeds`` tiled into one (H, W, 3) uint8 grid."""
    was_training = generator.training
    generator.eval()
    try:
        with torch.inference_mode():
            images = generator(seed_latents(seeds, generator.z_dim).to(device))
    finally:
        generator.train(was_training)
    return image_grid(tensor_to_uint8(images), ncols=ncols)


def read_stats(run_dir: str | Path) -> list[dict]:
    """The rows of a run's ``stats.jsonl``, in step order."""
    return read_jsonl(Path(run_dir) / STATS_FILE)


def _smooth(values: np.ndarray) -> np.ndarray:
    """Exponential moving average with a span of about 2% of the curve (NaNs carried over)."""
    alpha = min(1.0, 50.0 / max(len(values), 1))
    out = np.empty_like(values)
    level = np.nan
    for i, v in enumerate(values):
        level = v if np.isnan(level) else (level if np.isnan(v) else level + alpha * (v - level))
        out[i] = level
    return out


def plot_training_curves(stats: Sequence[dict], out_png: str | Path) -> None:
    """Write a two-panel PNG: D and G losses; D(x) and D(G(z)) with the 0.5 line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    steps = np.array([row["step"] for row in stats], dtype=float)

    def column(name: str) -> np.ndarray:
        return np.array([np.nan if row.get(name) is None else row[name] for row in stats],
                        dtype=float)

    figure = Figure(figsize=(10, 4), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    losses, outputs = figure.subplots(1, 2)
    panels = ((losses, ("loss_d", "loss_g"), "loss"),
              (outputs, ("d_real", "d_fake"), "mean sigmoid(D)"))
    labels = {"loss_d": "D loss", "loss_g": "G loss", "d_real": "D(x) real",
              "d_fake": "D(G(z)) fake"}
    for axis, names, ylabel in panels:
        for name, colour in zip(names, ("tab:blue", "tab:orange")):
            values = column(name)
            if len(values) > 50:
                axis.plot(steps, values, color=colour, alpha=0.25, linewidth=0.8)
                values = _smooth(values)
            axis.plot(steps, values, color=colour, label=labels[name])
        axis.set_xlabel("step")
        axis.set_ylabel(ylabel)
        axis.grid(alpha=0.3)
    outputs.axhline(0.5, color="grey", linestyle="--", linewidth=1, label="0.5 (D undecided)")
    outputs.set_ylim(0, 1)
    losses.set_title("losses")
    outputs.set_title("discriminator outputs")
    for axis in (losses, outputs):
        axis.legend(loc="best", fontsize="small")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    atomic_write_bytes(out_png, buffer.getvalue())


def train_pair(pair: GanPair, dataset: torch.utils.data.Dataset, run_dir: str | Path, *,
               steps: int, seed: int = 0, device: str = "auto", sample_every: int = 0,
               checkpoint_every: int = 0, progress: bool = True,
               extra_config: dict | None = None) -> Path:
    """Train ``pair`` on ``dataset`` for ``steps`` steps, writing the run folder ``run_dir``.

    ``run_dir`` is the run folder itself; a run already there is replaced. Seed the global
    generators before building ``pair`` for reproducible initial weights (``train_gan`` does).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch_device = resolve_device(device)
    amp = torch_device.type == "cuda"
    pair.to(torch_device)
    if torch_device.type == "cuda":
        pair.to(memory_format=torch.channels_last)
    pair.train()
    step_fn = AdversarialStep(pair, torch_device, amp=amp)
    batch_size = min(pair.config["batch_size"], len(dataset))
    batches = _infinite_batches(dataset, batch_size, seed, pin_memory=amp)
    extra = {**(extra_config or {}),
             "training": {"seed": seed, "steps": steps, "device": str(torch_device), "amp": amp,
                          "batch_size": batch_size, "num_images": len(dataset)}}

    stats: list[dict] = []

    def snapshot(step: int) -> None:
        save_checkpoint(run_dir, pair, step, extra, optimizers=step_fn.optimizers)
        save_png(run_dir / SAMPLES_FILE, render_sample_grid(pair.generator, torch_device))
        plot_training_curves(stats, run_dir / CURVES_FILE)

    with open(run_dir / STATS_FILE, "w", encoding="utf-8") as log, \
            tqdm(range(1, steps + 1), desc=f"train {pair.name}", unit="step",
                 disable=not progress) as bar:
        for step in bar:
            started = time.perf_counter()
            row = {"step": step, **step_fn(next(batches))}
            row["seconds"] = round(time.perf_counter() - started, 6)
            stats.append(row)
            log.write(json.dumps(json_safe(row)) + "\n")
            log.flush()
            bar.set_postfix(loss_d=f"{row['loss_d']:.3f}", loss_g=f"{row['loss_g']:.3f}",
                            refresh=False)
            if sample_every > 0 and step % sample_every == 0:
                save_png(run_dir / f"samples_{step:06d}.png",
                         render_sample_grid(pair.generator, torch_device))
            if (checkpoint_every > 0 and step % checkpoint_every == 0) or step == steps:
                snapshot(step)
    return run_dir


def train_gan(name: str, image_paths: Sequence[str | Path], out_dir: str | Path, *, steps: int,
              seed: int = 0, device: str = "auto", config_overrides: dict | None = None,
              sample_every: int = 0, checkpoint_every: int = 0, progress: bool = True) -> Path:
    """Build the registered family ``name`` (defaults + ``config_overrides``), train it on the
    images at ``image_paths`` (resized and centre-cropped to the config's resolution) and
    return the run folder ``out_dir``.

    ``device="auto"`` uses CUDA (float16 autocast, channels_last) when present, else the CPU.
    A checkpoint, ``samples.png`` and ``curves.png`` are written at the end and every
    ``checkpoint_every`` steps; extra sample grids every ``sample_every`` steps (0: never).
    """
    seed_everything(seed)
    pair = create_generator(name, **(config_overrides or {}))
    dataset = ImageFolderDataset(image_paths, pair.config["resolution"])
    extra = {"dataset": {"num_images": len(dataset), "skipped_images": len(dataset.skipped)}}
    return train_pair(pair, dataset, out_dir, steps=steps, seed=seed, device=device,
                      sample_every=sample_every, checkpoint_every=checkpoint_every,
                      progress=progress, extra_config=extra)
