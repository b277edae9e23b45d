"""The end-to-end demo: bundled photos -> DCGAN -> fake corpus -> spectral detector -> evaluation.

This is orchestration only: it owns no model code and is, with the CLI, the one place where
``forensics`` and ``generators`` meet.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from forensics.bundled import write_bundled_corpus
from forensics.corpus import FAKE, REAL, discover_corpus
from forensics.evaluation import evaluate_corpora, evaluation_table
from forensics.features import azimuthal_spectra
from forensics.plots import plot_mean_spectra
from forensics.training import load_items, train_detector

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo. ``QUICK`` fits in about 2 minutes and ``FULL`` in about 10 on 2 cores."""

    size: int
    n_real: int
    n_fake: int
    gan_steps: int
    gan_width: int
    batch_size: int


QUICK = DemoConfig(size=32, n_real=600, n_fake=600, gan_steps=400, gan_width=64, batch_size=64)
FULL = DemoConfig(size=64, n_real=2000, n_fake=2000, gan_steps=800, gan_width=64, batch_size=64)


def run_demo(out: str | os.PathLike = "runs/demo", *, quick: bool = False, seed: int = 0,
             device: str = "auto", progress: bool = True) -> dict[str, Any]:
    """Run the whole slice under ``out`` and return the evaluation (also saved as JSON)."""
    from generators.sampling import sample_images
    from generators.trainer import plot_training_curves, read_stats, train_gan

    cfg = QUICK if quick else FULL
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "demo_config.json").write_text(json.dumps({"quick": quick, "seed": seed,
                                                      **asdict(cfg)}, indent=2))
    real_dir, run_dir = out / "real", out / "dcgan_run"
    fake_dir, bundle = out / "fake_dcgan", out / "detector"
    plots = out / "plots"

    log.info("1/5 writing %d bundled real patches of %d px to %s", cfg.n_real, cfg.size, real_dir)
    write_bundled_corpus(real_dir, size=cfg.size, count=cfg.n_real, seed=seed)
    real = discover_corpus(real_dir)
    gan_data = [it.path for it in real.select(split="train", label=REAL)]

    log.info("2/5 training DCGAN for %d steps on %d real patches", cfg.gan_steps, len(gan_data))
    overrides = {"resolution": cfg.size, "ngf": cfg.gan_width, "ndf": cfg.gan_width,
                 "batch_size": cfg.batch_size}
    train_gan("dcgan", gan_data, run_dir, steps=cfg.gan_steps, seed=seed, device=device,
              config_overrides=overrides, progress=progress)

    log.info("3/5 sampling %d fakes to %s", cfg.n_fake, fake_dir)
    if fake_dir.exists():
        shutil.rmtree(fake_dir)  # a demo rerun starts its fake corpus afresh
    sample_images(run_dir, cfg.n_fake, fake_dir, seed=seed + 1_000_000, device=device,
                  progress=progress)

    log.info("4/5 training the spectral detector on the train split")
    detector = train_detector("spectral", [real_dir, fake_dir], bundle, progress=progress)

    log.info("5/5 evaluating on the held-out test split")
    corpora = [real, discover_corpus(fake_dir)]
    result = evaluate_corpora(detector, corpora, split="test", progress=progress)
    (out / "evaluation.json").write_text(json.dumps(result, indent=2))

    plots.mkdir(exist_ok=True)
    plot_training_curves(read_stats(run_dir), plots / "training_curves.png")
    shutil.copyfile(run_dir / "samples.png", plots / "samples.png")
    test_items = [it for c in corpora for it in c.select(split="test")]
    images, labels, _ = load_items(test_items, desc="spectra", progress=progress)
    spectra = azimuthal_spectra(images)
    plot_mean_spectra({"real (test)": spectra[labels == REAL],
                       "DCGAN fake (test)": spectra[labels == FAKE]},
                      plots / "mean_spectrum.png",
                      title="Held-out real vs DCGAN patches: azimuthal log power spectrum")
    return result


def demo_summary(result: dict[str, Any], out: str | os.PathLike) -> str:
    """The text printed at the end of the demo: the table and where everything was written."""
    out = Path(out)
    return "\n".join([
        f"Evaluation on the held-out test split ({result['n_scored']} images, "
        f"threshold {result['detector']['threshold']:.3f} chosen on the val split):",
        evaluation_table(result),
        "",
        f"real corpus     {out / 'real'}",
        f"DCGAN run       {out / 'dcgan_run'}  (config.json, weights.safetensors, stats.jsonl)",
        f"fake corpus     {out / 'fake_dcgan'}  (PNG + manifest.jsonl)",
        f"detector        {out / 'detector'}  (detector.json + weights.npz)",
        f"evaluation      {out / 'evaluation.json'}",
        f"plots           {out / 'plots'}  (training_curves.png, samples.png, mean_spectrum.png)",
    ])
