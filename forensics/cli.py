"""The ``forensics`` command line: corpora, the generator zoo, detectors, scanning, evaluation."""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from forensics import __version__
from forensics.images import DEFAULT_LIMITS, ImageLimits

log = logging.getLogger("forensics")


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status 2, no traceback."""


def _write_json(path: str | Path, data: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


# --- corpus -------------------------------------------------------------------------------------

def cmd_corpus_info(args: argparse.Namespace) -> int:
    from forensics.corpus import SPLITS, discover_corpus
    from forensics.metrics import format_table

    corpus = discover_corpus(args.dir)
    rows = corpus.counts()
    if args.json:
        print(json.dumps({"root": str(corpus.root), "layout": corpus.layout, "counts": rows},
                         indent=2))
        return 0
    print(f"{corpus.root}  (layout: {corpus.layout}, {len(corpus.items)} images, "
          f"generators: {', '.join(corpus.generators) or '-'})")
    print(format_table(rows, ["label", "generator", *SPLITS, "total"]))
    return 0


def cmd_corpus_bundled(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from forensics.bundled import write_bundled_corpus

    with tqdm(total=args.count, desc="patches", unit="img", disable=args.quiet) as bar:
        out = write_bundled_corpus(args.out, size=args.size, count=args.count, seed=args.seed,
                                   progress=bar.update)
    print(f"wrote {args.count} real patches of {args.size} px to {out} (manifest.jsonl)")
    return 0


# --- zoo ------------------------------------------------------------------------------------

def _gan_training_paths(dirs: Sequence[str], split: str) -> list[Path]:
    """Real images to train a GAN on: a corpus's real images of ``split``, or a plain folder."""
    from forensics.corpus import REAL, CorpusError, discover_corpus, iter_image_files

    paths: list[Path] = []
    for d in dirs:
        try:
            paths += [it.path for it in discover_corpus(d).select(split=split, label=REAL)]
        except CorpusError:
            if not Path(d).is_dir():
                raise
            paths += list(iter_image_files([d]))  # a plain folder of images: all are real
    if not paths:
        raise CliError(f"no real training images found in {', '.join(dirs)} (split {split})")
    return paths


def _parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise CliError(f"--set expects KEY=VALUE, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def cmd_zoo_list(args: argparse.Namespace) -> int:
    from generators.registry import list_generators

    for name, cfg in list_generators().items():
        print(f"{name}: {json.dumps(cfg)}")
    return 0


def cmd_zoo_train(args: argparse.Namespace) -> int:
    from generators.trainer import train_gan

    paths = _gan_training_paths(args.data, args.split)
    overrides = _parse_overrides(args.set)
    for key in ("resolution", "batch_size"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    run = train_gan(args.name, paths, Path(args.out), steps=args.steps, seed=args.seed,
                    device=args.device, config_overrides=overrides, progress=not args.quiet)
    print(f"trained {args.name} for {args.steps} steps on {len(paths)} images -> {run}")
    return 0


def cmd_zoo_sample(args: argparse.Namespace) -> int:
    from generators.sampling import sample_images

    rows = sample_images(Path(args.run), args.n, Path(args.out), seed=args.seed,
                         batch_size=args.batch_size, device=args.device, progress=not args.quiet)
    print(f"{len(rows)} images in {args.out} (manifest.jsonl)")
    return 0


# --- detectors, scan, evaluate ---------------------------------------------------------------

def cmd_detector_train(args: argparse.Namespace) -> int:
    from forensics.training import train_detector

    det = train_detector(args.kind, args.corpus, args.out, progress=not args.quiet)
    val = det.validation_metrics_ or {}
    ap = val.get("ap")
    print(f"saved {args.kind} detector to {args.out}: threshold {det.threshold_:.3f}"
          + (f", validation AP {ap:.3f}" if ap is not None else ""))
    return 0


def cmd_detector_info(args: argparse.Namespace) -> int:
    from forensics.detectors import load_detector

    load_detector(args.bundle)  # validates the bundle before describing it
    meta = json.loads((Path(args.bundle) / "detector.json").read_text(encoding="utf-8"))
    print(json.dumps({k: meta.get(k) for k in ("kind", "threshold", "preprocessing", "training",
                                              "validation", "created", "library_version")},
                     indent=2))
    return 0


def _limits(args: argparse.Namespace) -> ImageLimits:
    return ImageLimits(max_pixels=args.max_pixels, max_bytes=args.max_bytes)


def cmd_scan(args: argparse.Namespace) -> int:
    from forensics.corpus import iter_image_files
    from forensics.detectors import load_detector
    from forensics.scoring import score_files

    detector = load_detector(args.detector)
    paths = list(iter_image_files(args.paths))
    if not paths:
        raise CliError(f"no image files found in {', '.join(args.paths)}")
    rows = score_files(paths, detector, batch_size=args.batch_size, workers=args.workers,
                       limits=_limits(args), progress=not args.quiet)
    records = [{"path": str(r.path),
                "p_fake": "" if r.p_fake is None else round(r.p_fake, 6),
                "verdict": "" if r.p_fake is None else
                ("fake" if r.p_fake >= detector.threshold_ else "real"),
                "error": r.error} for r in rows]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as fh:
        if args.format == "jsonl":
            for rec in records:
                fh.write(json.dumps({**rec, "p_fake": rec["p_fake"] if rec["p_fake"] != "" else None,
                                     "verdict": rec["verdict"] or None}) + "\n")
        else:
            writer = csv.DictWriter(fh, fieldnames=["path", "p_fake", "verdict", "error"])
            writer.writeheader()
            writer.writerows(records)
    n_fake = sum(r["verdict"] == "fake" for r in records)
    n_real = sum(r["verdict"] == "real" for r in records)
    bad = [r for r in records if r["error"]]
    print(f"scanned {len(records)} files: {n_fake} fake, {n_real} real, {len(bad)} unreadable "
          f"(threshold {detector.threshold_:.3f}) -> {out}")
    for r in bad:
        print(f"  error: {r['path']}: {r['error']}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from forensics.corpus import discover_corpus
    from forensics.detectors import load_detector
    from forensics.evaluation import evaluate_corpora, evaluation_table

    detector = load_detector(args.detector)
    corpora = [discover_corpus(d) for d in args.corpus]
    result = evaluate_corpora(detector, corpora, split=args.split, batch_size=args.batch_size,
                              workers=args.workers, progress=not args.quiet)
    print(f"split: {result['split']}, {result['n_scored']} of {result['n_images']} images scored, "
          f"threshold {detector.threshold_:.3f}")
    print(evaluation_table(result))
    for err in result["errors"]:
        print(f"  error: {err['path']}: {err['error']}")
    if args.out:
        _write_json(args.out, result)
        print(f"wrote {args.out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from forensics.pipeline import demo_summary, run_demo

    result = run_demo(args.out, quick=args.quick, seed=args.seed, device=args.device,
                      progress=not args.quiet)
    print(demo_summary(result, args.out))
    return 0


# --- parser ---------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    """The argument parser; each sub-command's ``func`` does the work."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p = argparse.ArgumentParser(prog="forensics", description=__doc__)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", parents=[common], help="the whole pipeline in miniature on the bundled photos")
    demo.add_argument("--quick", action="store_true", help="smaller and faster (about 2 minutes)")
    demo.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    demo.set_defaults(func=cmd_demo)

    corpus = sub.add_parser("corpus", help="inspect or create labelled corpora")
    csub = corpus.add_subparsers(dest="corpus_command", required=True, metavar="ACTION")
    info = csub.add_parser("info", parents=[common], help="counts per label, generator and split")
    info.add_argument("dir")
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    info.set_defaults(func=cmd_corpus_info)
    bundled = csub.add_parser("bundled", parents=[common], help="write random patches of the bundled photographs")
    bundled.add_argument("out")
    bundled.add_argument("--size", type=int, default=64, help="patch side in px (default 64)")
    bundled.add_argument("--count", type=int, default=1000, help="number of patches")
    bundled.add_argument("--seed", type=int, default=0)
    bundled.set_defaults(func=cmd_corpus_bundled)

    zoo = sub.add_parser("zoo", help="train and sample generators")
    zsub = zoo.add_subparsers(dest="zoo_command", required=True, metavar="ACTION")
    zsub.add_parser("list", parents=[common], help="generators and their default configs").set_defaults(
        func=cmd_zoo_list)
    train = zsub.add_parser("train", parents=[common], help="train a generator on real images")
    train.add_argument("name", help="generator name (see `forensics zoo list`)")
    train.add_argument("--data", nargs="+", required=True,
                       help="corpus folders (their real images) or plain image folders")
    train.add_argument("--split", default="train", choices=["train", "val", "test", "all"],
                       help="which split of a corpus to train on (default train)")
    train.add_argument("--out", required=True, help="run folder")
    train.add_argument("--steps", type=int, required=True)
    train.add_argument("--resolution", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value (JSON values), repeatable")
    train.set_defaults(func=cmd_zoo_train)
    sample = zsub.add_parser("sample", parents=[common], help="sample a trained generator into a fake corpus")
    sample.add_argument("run", help="run folder from `zoo train`")
    sample.add_argument("--n", type=int, required=True, help="number of images")
    sample.add_argument("--out", required=True)
    sample.add_argument("--seed", type=int, default=0, help="first seed; image i uses seed+i")
    sample.add_argument("--batch-size", type=int, default=64)
    sample.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    sample.set_defaults(func=cmd_zoo_sample)

    det = sub.add_parser("detector", help="train or describe detectors")
    dsub = det.add_subparsers(dest="detector_command", required=True, metavar="ACTION")
    dtrain = dsub.add_parser("train", parents=[common], help="train on the train split, threshold on val")
    dtrain.add_argument("--kind", default="spectral")
    dtrain.add_argument("--corpus", nargs="+", required=True)
    dtrain.add_argument("--out", required=True, help="bundle folder to write")
    dtrain.set_defaults(func=cmd_detector_train)
    dinfo = dsub.add_parser("info", parents=[common], help="what a bundle was trained on and how it scored")
    dinfo.add_argument("bundle")
    dinfo.set_defaults(func=cmd_detector_info)

    def add_io_options(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--batch-size", type=int, default=64)
        sp.add_argument("--workers", type=int, default=2, help="decoding threads")

    scan = sub.add_parser("scan", parents=[common], help="score image files and folders")
    scan.add_argument("paths", nargs="+", help="files and folders (searched recursively)")
    scan.add_argument("--detector", required=True, help="bundle folder")
    scan.add_argument("--out", default="results.csv")
    scan.add_argument("--format", choices=["csv", "jsonl"], default="csv")
    scan.add_argument("--max-pixels", type=int, default=DEFAULT_LIMITS.max_pixels)
    scan.add_argument("--max-bytes", type=int, default=DEFAULT_LIMITS.max_bytes)
    add_io_options(scan)
    scan.set_defaults(func=cmd_scan)

    ev = sub.add_parser("evaluate", parents=[common], help="metrics per generator on labelled corpora")
    ev.add_argument("--detector", required=True)
    ev.add_argument("--corpus", nargs="+", required=True)
    ev.add_argument("--split", default="auto", choices=["auto", "train", "val", "test", "all"],
                    help="auto: test if the detector was trained on these corpora, else all")
    ev.add_argument("--out", help="write the full result as JSON")
    add_io_options(ev)
    ev.set_defaults(func=cmd_evaluate)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``forensics`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    from forensics.corpus import CorpusError
    from forensics.detectors import BundleError

    try:
        return args.func(args)
    except (CliError, CorpusError, BundleError, FileNotFoundError) as exc:
        print(f"forensics: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("forensics: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
