"""The end-to-end demo: bundled photos -> four GANs and a diffusion model -> fake corpora ->
detectors -> evaluation.

Detectors train on the reals and two "seen" generators (DCGAN, StyleGAN) and are evaluated on
all five, so the table shows how they carry over to the unseen cGAN, CycleGAN and DDPM
(diffusion traces against GAN ones); a
leave-one-generator-out table and a small robustness grid follow. Beside that ensemble of the
zoo's own fakes, the general recipe (``forensics.general_recipe``) is trained at demo size, and
both, with the shipped general detector, are scored on data each did not train on: the zoo's
GAN fakes, the recipe's simulated-upsampling pairs and, when given, a folder of GAN images met
in the wild.

This is orchestration only: it owns no model code and is, with the CLI, the one place where
``forensics`` and ``generators`` meet.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from crashsafe.files import atomic_write_text
from forensics.bundled import write_bundled_corpus
from forensics.corpus import REAL, Corpus, discover_corpus
from forensics.detectors import load_detector
from forensics.detectors.base import BUNDLE_CONFIG_NAME
from forensics.evaluation import (ProtocolData, evaluate_corpora, evaluation_table,
                                  leave_one_out, leave_one_out_table)
from forensics.evaluation_results import EVALUATION_FILE, write_evaluation
from forensics.metrics import format_table
from forensics.plots import plot_mean_spectra
from forensics.report import write_report
from forensics.robustness import run_robustness
from forensics.spectra import spectra_by_generator
from forensics.training import train_detector

log = logging.getLogger(__name__)

GENERATORS = ("dcgan", "cgan", "stylegan", "cyclegan", "ddpm")
QUALITY_BACKBONE = "tf_efficientnet_lite0"  # the offline ImageNet features of the FD
SEEN = ("dcgan", "stylegan")  # detectors train on these; cgan, cyclegan and ddpm stay unseen


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo: patch size, corpus sizes, steps and overrides per generator
    (``fakes``: a generator's number of fakes where it differs from ``n_fake``)."""

    size: int
    n_real: int
    n_fake: int
    steps: dict[str, int]
    gan: dict[str, dict[str, Any]]
    cnn: dict[str, Any]
    robustness_limit: int | None
    general_scale: float
    fakes: dict[str, int] = field(default_factory=dict)
    quality_images: int = 256  # fakes (and reals) per generator for FD, KID and IS
    loo: dict[str, Any] = field(default_factory=lambda: {"features": "fft"})


# A small DDPM for the demo: one block a level, 10 DDIM steps to sample (its preview too).
DEMO_DDPM = {"channels": 32, "channel_mults": [1, 2, 2], "num_res_blocks": 1,
             "attention_resolution": 8, "batch_size": 16, "lr": 5e-4, "sampling_steps": 10,
             "preview_steps": 10}
QUICK = DemoConfig(
    size=32, n_real=600, n_fake=300,
    steps={"dcgan": 300, "cgan": 300, "stylegan": 30, "cyclegan": 25, "ddpm": 30},
    gan={"dcgan": {"ngf": 32, "ndf": 32}, "cgan": {"ngf": 32, "ndf": 32},
         "stylegan": {"channel_max": 64}, "cyclegan": {"input_skip": True, "total_steps": 25},
         "ddpm": DEMO_DDPM},
    cnn={"epochs": 2, "steps_per_epoch": 15, "patience": 2},
    robustness_limit=15, general_scale=0.04, fakes={"ddpm": 150}, quality_images=64)
# CycleGAN's lr decays to 0 at total_steps, its input skip keeps the 32 px translations from
# all taking one tone (generators/nets/cyclegan.py has the figures).
# 32 px: at 64 px no GAN family got past the collapse bars within the time promise on 2 CPU
# cores (DCGAN: 900 steps, 3 min, diversity ratio 0.65 and 56% distinct; StyleGAN ~4x slower).
FULL = DemoConfig(
    size=32, n_real=2000, n_fake=800,
    steps={"dcgan": 800, "cgan": 1000, "stylegan": 350, "cyclegan": 300, "ddpm": 150},
    gan={"dcgan": {"ngf": 32, "ndf": 32}, "cgan": {"ngf": 32, "ndf": 32},
         "stylegan": {"channel_max": 64}, "cyclegan": {"input_skip": True, "total_steps": 300},
         "ddpm": DEMO_DDPM},
    cnn={"epochs": 5, "steps_per_epoch": 30},
    robustness_limit=90, general_scale=0.12, fakes={"ddpm": 400})


def _write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


@dataclass(frozen=True)
class GeneratorData:
    """What one demo generator trains on and samples from: ``data`` (paths, or (path, class)
    pairs), domain B for CycleGAN, and the (path, split) sources it translates (or None)."""

    data: list[Any]
    data_b: list[Path] | None = None
    source: list[tuple[Path, str]] | None = None


def generator_data(name: str, real: Corpus) -> GeneratorData:
    """The demo's data for generator ``name`` from a bundled real corpus: its train patches;
    cGAN's classes are the tone of the source photo; CycleGAN maps colour to grey patches and
    translates colour patches of every split, each into its source's split, so no translation
    of a test photo lands in the detectors' training data."""
    train = real.select(split="train", label=REAL)
    if name == "cgan":
        return GeneratorData([(it.path, it.meta["tone"]) for it in train])
    if name == "cyclegan":
        return GeneratorData([it.path for it in train if it.meta["tone"] == "colour"],
                             [it.path for it in train if it.meta["tone"] == "grey"],
                             [(it.path, it.split) for it in real.select(label=REAL)
                              if it.meta["tone"] == "colour"])
    return GeneratorData([it.path for it in train])


def _train_generators(cfg: DemoConfig, real: Corpus, out: Path, seed: int, device: str,
                      progress: bool) -> dict[str, Path]:
    """Train each generator on real train patches and sample it into ``out/fake_<name>``."""
    from generators.sampling import sample_images
    from generators.trainer import train_gan

    fake_dirs = {}
    for name in GENERATORS:
        run, fake, inputs = out / "runs" / name, out / f"fake_{name}", generator_data(name, real)
        log.info("training %s for %d steps", name, cfg.steps[name])
        train_gan(name, inputs.data, run, data_b=inputs.data_b, steps=cfg.steps[name],
                  seed=seed, device=device, progress=progress,
                  config_overrides={"resolution": cfg.size, **cfg.gan[name]})
        if fake.exists():
            shutil.rmtree(fake)  # a demo rerun starts its fake corpora afresh
        sample_images(run, cfg.fakes.get(name, cfg.n_fake), fake, seed=seed + 1_000_000,
                      device=device, progress=progress, source=inputs.source)
        fake_dirs[name] = fake
    return fake_dirs


def quality_space() -> Any:
    """The feature space of the demo's FD, KID, precision/recall and IS: the offline
    EfficientNet-Lite0 (a ``generators.quality.FeatureSpace``)."""
    from forensics.zoo_bridge import feature_space

    return feature_space(QUALITY_BACKBONE)


def draw_paths(paths: list[Path], n: int, rng: np.random.Generator) -> list[Path]:
    """Up to ``n`` of ``paths`` without replacement, in their order."""
    return [paths[i] for i in sorted(rng.choice(len(paths), min(n, len(paths)), replace=False))]


def _sample_quality(real: Corpus, fake_dirs: dict[str, Path], n: int, seed: int,
                    progress: bool) -> dict[str, dict[str, float]]:
    """FD, KID, precision/recall and IS (:func:`quality_space`) of up to ``n`` fakes of each
    generator against up to ``n`` real training patches."""
    from generators.quality import sample_quality

    space, rng = quality_space(), np.random.default_rng(seed)
    reals = space.embed(draw_paths([it.path for it in real.select(split="train", label=REAL)],
                                   n, rng))
    figures = {}
    for name, folder in tqdm(fake_dirs.items(), desc="sample quality", disable=not progress):
        fakes = space.embed(draw_paths([it.path for it in discover_corpus(folder).items], n, rng))
        figures[name] = sample_quality(reals, fakes, QUALITY_BACKBONE)
    return figures


def _generator_health(runs: Path, quality: dict[str, dict[str, float]]
                      ) -> list[dict[str, Any]]:
    """Each zoo run's last diagnostics and whether it ended collapsed (its config.json's
    ``extra.health``, written by the trainer's health watch), with its sample quality."""
    from generators import GeneratorRun

    rows = []
    for name in GENERATORS:
        health = GeneratorRun.from_pretrained(runs / name).health
        last = health.get("last_diagnostics") or {}
        figures = quality.get(name, {})
        rows.append({"generator": name,
                     "diversity_ratio": round(last["diversity_ratio"], 3) if last else "-",
                     "distinct_neighbours": round(last["nn_distinct_fraction"], 3)
                     if last else "-",
                     **{key: round(figures[f"{key}_{QUALITY_BACKBONE}"], 3 if key != "FD"
                                   else 1) if figures else "-"
                        for key in ("FD", "precision", "recall")},
                     "status": ("collapsed" if health.get("collapsed") else "healthy")
                     if last else "no diagnostics",
                     "warnings": "; ".join(f"{w['symptom']} at step {w['step']}"
                                           for w in health.get("warnings", [])) or "-"})
    return rows


def _plots(corpora: list[Corpus], out: Path, progress: bool) -> None:
    """Training curves and sample grids of every run, and the mean spectra of the test split."""
    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    from generators import GeneratorRun

    for name in GENERATORS:
        run = GeneratorRun.from_pretrained(out / "runs" / name)
        for png in (run.curves_path, run.samples_path):
            if png.is_file():
                shutil.copyfile(png, plots / f"{name}_{png.name}")
    groups = spectra_by_generator(corpora, split="test", progress=progress)
    plot_mean_spectra({f"{name} (test)": rows for name, rows in groups.items()},
                      plots / "mean_spectrum.png",
                      title="Held-out real, GAN and diffusion patches: azimuthal log power "
                            "spectrum")


def _general_at_demo_size(cfg: DemoConfig, out: Path, seed: int, progress: bool) -> Path:
    """The general recipe scaled to the demo (fewer simulators, steps, crops and epochs)."""
    from forensics.general_recipe import GeneralRecipe, build_general_detector

    recipe = GeneralRecipe().scaled(cfg.general_scale)
    build_general_detector(out / "general", out / "general_work", recipe=recipe, seed=seed,
                           progress=progress)
    return out / "general"


def compare_detectors(detectors: dict[str, Path], datasets: dict[str, tuple[list[Corpus], str]],
                      *, known: dict[tuple[str, str], dict[str, Any]] | None = None,
                      progress: bool = True) -> list[dict[str, Any]]:
    """One row per detector: mean AP over generators and pooled ROC-AUC on every dataset
    (name -> (corpora, split)); ``known`` holds evaluations already made, by (detector, data)."""
    known = known or {}
    rows = []
    for name, path in detectors.items():
        detector, row = load_detector(path), {"detector": name}
        for data, (corpora, split) in datasets.items():
            result = known.get((name, data)) or evaluate_corpora(
                detector, corpora, split=split, bootstrap=0, progress=progress)
            row[f"{data} AP"] = result["mean"]["ap"]
            row[f"{data} AUC"] = result["overall"]["roc_auc"]
        rows.append(row)
    return rows


def run_demo(out: str | os.PathLike = "runs/demo", *, quick: bool = False, seed: int = 0,
             device: str = "auto", wild: str | os.PathLike | None = None,
             progress: bool = True) -> dict[str, Any]:
    """Run the whole slice under ``out``; return the results (also saved as JSON there).

    ``wild``: a folder of real and GAN images from elsewhere (CNNDetection layout or a
    manifest), scored by the ensemble and the general detectors for comparison only.
    """
    from forensics.detectors.general import general_detector_path

    cfg = QUICK if quick else FULL
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "demo_config.json", {"quick": quick, "seed": seed, **asdict(cfg)})

    log.info("1/7 writing %d bundled real patches of %d px", cfg.n_real, cfg.size)
    real = discover_corpus(write_bundled_corpus(out / "real", size=cfg.size, count=cfg.n_real,
                                                seed=seed))
    log.info("2/7 training and sampling %s", ", ".join(GENERATORS))
    fake_dirs = _train_generators(cfg, real, out, seed, device, progress)
    quality = _sample_quality(real, fake_dirs, cfg.quality_images, seed, progress)
    _write_json(out / "sample_quality.json", quality)
    corpora = [real] + [discover_corpus(d) for d in fake_dirs.values()]

    log.info("3/7 training the ensemble (spectral + cnn) on reals + %s", ", ".join(SEEN))
    bundle = out / "detector"
    members = [{"name": "spectral", "kind": "spectral", "params": {"features": "fft"}},
               {"name": "cnn", "kind": "cnn", "params": cfg.cnn}]
    train_detector("ensemble", [out / "real", *(fake_dirs[g] for g in SEEN)], bundle,
                   params={"members": members}, progress=progress)

    log.info("4/7 training the general recipe at demo size (scale %.2f)", cfg.general_scale)
    general = _general_at_demo_size(cfg, out, seed, progress)

    log.info("5/7 evaluating every detector on the held-out test split of all generators")
    detectors = {"ensemble": bundle, **{p.name: p for p in sorted((bundle / "members").iterdir())
                                        if (p / BUNDLE_CONFIG_NAME).is_file()}}
    evaluations = {name: evaluate_corpora(load_detector(path), corpora, split="test",
                                          progress=progress, plots=out / "plots" / name)
                   for name, path in detectors.items()}
    write_evaluation(out / EVALUATION_FILE, {**evaluations["ensemble"],
                                             "members": {k: v for k, v in evaluations.items()
                                                         if k != "ensemble"}})
    datasets = {"zoo fakes": (corpora, "test"),
                "simulated": ([discover_corpus(out / "general_work" / "pairs")], "test")}
    if wild is not None:
        datasets["wild"] = ([discover_corpus(wild)], "all")
    comparison = compare_detectors(
        {"ensemble": bundle, "general (demo size)": general,
         "general (shipped)": general_detector_path()},
        datasets, known={("ensemble", "zoo fakes"): evaluations["ensemble"]}, progress=progress)
    _write_json(out / "comparison.json", {"wild": None if wild is None else str(wild),
                                          "rows": comparison})

    log.info("6/7 leave-one-generator-out with the spectral detector")
    loo = leave_one_out("spectral", cfg.loo, ProtocolData(corpora, progress=progress))
    _write_json(out / "leave_one_out.json", loo)

    log.info("7/7 robustness: a small grid over the detectors")
    run_robustness(list(detectors.values()), [c.root for c in corpora], out / "robustness",
                   grid="small", split="test", limit=cfg.robustness_limit, fresh=True,
                   progress=progress)
    report = write_report(out / "robustness")
    _plots(corpora, out, progress)
    return {"evaluations": evaluations, "comparison": comparison, "leave_one_out": loo,
            "robustness": str(report.html), "generators": _generator_health(out / "runs", quality)}


def demo_summary(result: dict[str, Any], out: str | os.PathLike) -> str:
    """The text printed at the end of the demo: the tables and where everything was written."""
    out = Path(out)
    ens = result["evaluations"]["ensemble"]
    lines = [f"Ensemble on the held-out test split ({ens['n_scored']} images; trained on real + "
             f"{', '.join(SEEN)}; threshold {ens['detector']['threshold']:.3f} from the val split):",
             evaluation_table(ens),
             f"Held-out AP {ens['overall']['ap']:.3f} pooled, {ens['mean']['ap']:.3f} mean over "
             f"generators (ROC-AUC {ens['overall']['roc_auc']:.3f}, EER {ens['overall']['eer']:.3f})",
             ""]
    for name, res in result["evaluations"].items():
        if name != "ensemble":
            lines += [f"Member {name}:", evaluation_table(res), ""]
    comparison = result["comparison"]
    lines += ["Zoo-fakes ensemble vs general detectors, on data each did not train on (mean AP "
              "over generators, pooled ROC-AUC): 'zoo fakes' is the test split above (four GANs "
              "and a DDPM; the ensemble saw DCGAN and StyleGAN); 'simulated' is the general "
              "recipe's held-out "
              "upsampling pairs (the general detectors saw these simulators, on other photos)"
              + ("; 'wild' is the folder given with --wild (seen by none)"
                 if any("wild AP" in row for row in comparison) else "") + ":",
              format_table(comparison, list(comparison[0])), ""]
    generators = result["generators"]
    lines += ["Generators at the end of training (diversity ratio and the share of distinct "
              "real neighbours of 64 samples, collapsed under 0.7 or 0.5; FD, precision and "
              "recall of their fakes against real training patches in EfficientNet-Lite0 "
              "features, lower FD is closer, all figures in sample_quality.json; warnings: "
              "what the trainer flagged on the way, every GAN starts with near-identical "
              "samples, see each run's config.json):",
              format_table(generators, list(generators[0]))]
    collapsed = [row["generator"] for row in generators if row["status"] == "collapsed"]
    if collapsed:
        lines.append(f"Collapsed at this demo's budget: {', '.join(collapsed)}. Their fakes "
                     "still go to the detectors but repeat a few patterns; `python "
                     "benchmarks/bench_zoo_quality.py` shows what longer runs reach (README, "
                     "generator zoo).")
    lines.append("")
    lines += ["Leave one generator out (spectral detector; held-out generator's test split):",
              leave_one_out_table(result["leave_one_out"]), "",
              f"real corpus     {out / 'real'}",
              f"generator runs  {out / 'runs'}  (config.json, weights.safetensors, stats.jsonl)",
              f"fake corpora    {out}/fake_<generator>  (PNG + manifest.jsonl)",
              f"detector        {out / 'detector'}  (ensemble; members/ holds spectral and cnn)",
              f"general         {out / 'general'}  (the general recipe at demo size; "
              f"simulators and pairs in {out / 'general_work'})",
              f"evaluation      {out / 'evaluation.json'}, {out / 'comparison.json'}, "
              f"{out / 'leave_one_out.json'}",
              f"robustness      {result['robustness']}",
              f"plots           {out / 'plots'}"]
    return "\n".join(lines)
