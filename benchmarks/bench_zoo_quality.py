"""Quality over time: each demo generator trained for a fixed number of minutes on the bundled
corpus, with FD, KID, precision/recall (EfficientNet-Lite0 features) and the collapse
diagnostics measured after every slice of training.

    python benchmarks/bench_zoo_quality.py                  # the demo's families, 3 min each
    python benchmarks/bench_zoo_quality.py --minutes 10 --points 5 --families dcgan stylegan

Each family trains with the full demo's config (``forensics.pipeline.FULL``) in slices of
``minutes / points``; a slice ends with a checkpoint (``train_gan(max_minutes=...)``) and the
next resumes it, so the figures are those of one continuous run. After each slice
``--n-eval`` fakes are sampled and embedded; the time spent measuring is not counted as
training. Writes ``quality_over_time.csv``, ``quality_over_time.md`` and
``quality_over_time.png`` (FD and diversity ratio against minutes) under ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from forensics.bundled import write_bundled_corpus
from forensics.corpus import discover_corpus
from forensics.metrics import format_table
from forensics.pipeline import (FULL, GENERATORS, QUALITY_BACKBONE, draw_paths,
                                generator_data, quality_space)
from generators.diagnostics import COLLAPSE_BARS
from generators.quality import FeatureSpace, sample_quality
from generators.sampling import sample_images
from generators import read_stats, train_gan

COLUMNS = ("family", "minutes", "steps", "FD", "KID", "precision", "recall", "IS",
           "diversity_ratio", "distinct_neighbours", "collapsed")


def last_diagnostics(run: Path) -> dict:
    rows = [r for r in read_stats(run) if "diversity_ratio" in r]
    return rows[-1] if rows else {}


def measure(family: str, run: Path, inputs, reals, space: FeatureSpace, n_eval: int,
            work: Path, seed: int) -> dict:
    fakes_dir = work / f"eval_{family}"
    shutil.rmtree(fakes_dir, ignore_errors=True)
    sample_images(run, n_eval, fakes_dir, seed=seed, device="cpu", progress=False,
                  source=inputs.source)
    fakes = space.embed([it.path for it in discover_corpus(fakes_dir).items])
    figures = sample_quality(reals, fakes, space.name)
    diagnostics = last_diagnostics(run)
    name = space.name
    return {"FD": figures[f"FD_{name}"], "KID": figures[f"KID_{name}"],
            "precision": figures[f"precision_{name}"], "recall": figures[f"recall_{name}"],
            "IS": figures[f"IS_{name}"],
            "diversity_ratio": diagnostics.get("diversity_ratio", float("nan")),
            "distinct_neighbours": diagnostics.get("nn_distinct_fraction", float("nan")),
            "collapsed": any(diagnostics.get(k, 1.0) < bar for k, bar in COLLAPSE_BARS.items())}


def plot(rows: list[dict], out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (fd_ax, div_ax) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    for family in dict.fromkeys(r["family"] for r in rows):
        mine = [r for r in rows if r["family"] == family]
        minutes = [r["minutes"] for r in mine]
        fd_ax.plot(minutes, [r["FD"] for r in mine], marker="o", label=family)
        div_ax.plot(minutes, [r["diversity_ratio"] for r in mine], marker="o", label=family)
    div_ax.axhline(COLLAPSE_BARS["diversity_ratio"], color="grey", ls="--", lw=0.8,
                   label="collapse bar")
    fd_ax.set(xlabel="training minutes (CPU)", ylabel=f"FD ({QUALITY_BACKBONE})",
              title="Frechet distance to real patches (lower is closer)")
    div_ax.set(xlabel="training minutes (CPU)", ylabel="diversity ratio",
               title="Sample diversity / real diversity")
    for ax in (fd_ax, div_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=list(GENERATORS),
                        choices=list(GENERATORS))
    parser.add_argument("--minutes", type=float, default=3.0, help="training minutes a family")
    parser.add_argument("--points", type=int, default=3, help="measurements a family")
    parser.add_argument("--n-eval", type=int, default=256, help="fakes (and reals) measured")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/zoo_quality"))
    args = parser.parse_args()

    cfg = FULL
    work = args.out / "work"
    real_root = work / "real"
    if not (real_root / "manifest.jsonl").is_file():
        write_bundled_corpus(real_root, size=cfg.size, count=cfg.n_real, seed=args.seed)
    real = discover_corpus(real_root)
    space = quality_space()
    train_paths = [it.path for it in real.select(split="train")]
    reals = space.embed(draw_paths(train_paths, args.n_eval, np.random.default_rng(args.seed)))
    print(f"{cfg.size} px, {len(train_paths)} real train patches; {args.minutes:g} min a "
          f"family in {args.points} slices; {args.n_eval} fakes a measurement", flush=True)

    rows = []
    for family in args.families:
        inputs, run = generator_data(family, real), work / "runs" / family
        overrides = {"resolution": cfg.size, **cfg.gan[family]}
        if "total_steps" in overrides:  # CycleGAN's lr decays to 0 there: keep it constant
            overrides["total_steps"] = 10**7
        trained = 0.0
        for point in range(args.points):
            start = time.perf_counter()
            result = train_gan(family, inputs.data, run, data_b=inputs.data_b, steps=10**7,
                               seed=args.seed, device="cpu", config_overrides=overrides,
                               max_minutes=args.minutes / args.points, resume=point > 0,
                               progress=False)
            trained += time.perf_counter() - start
            row = {"family": family, "minutes": round(trained / 60, 2),
                   "steps": result.step,
                   **measure(family, run, inputs, reals, space, args.n_eval, work,
                             args.seed + 1_000_000)}
            rows.append(row)
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v
                              for k, v in row.items()}), flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "quality_over_time.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    table = format_table(rows, list(COLUMNS))
    (args.out / "quality_over_time.md").write_text(table + "\n")
    plot(rows, args.out / "quality_over_time.png")
    print(table)
    print(f"wrote {args.out}/quality_over_time.csv, .md and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
