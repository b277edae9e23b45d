"""The ``forensics`` command line: corpora, the generator zoo, detectors, scanning, evaluation."""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from forensics import __version__
from forensics.images import DEFAULT_LIMITS, ImageLimits

log = logging.getLogger("forensics")
APP_DEFAULT_DETECTOR, APP_DEFAULT_ROOT = "runs/demo/detector", "runs"
# How `forensics app` configures the Streamlit app (read by app/components.py, AppConfig).
APP_ENV_DETECTOR, APP_ENV_ROOT = "FORENSICS_APP_DETECTOR", "FORENSICS_APP_ROOT"
APP_ENV_MAX_BYTES, APP_ENV_MAX_PIXELS = "FORENSICS_APP_MAX_BYTES", "FORENSICS_APP_MAX_PIXELS"


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

    try:
        with tqdm(total=args.count, desc="patches", unit="img", disable=args.quiet) as bar:
            out = write_bundled_corpus(args.out, size=args.size, count=args.count,
                                       seed=args.seed, progress=bar.update)
    except ValueError as exc:  # --size or --count out of range
        raise CliError(str(exc)) from None
    print(f"wrote {args.count} real patches of {args.size} px to {out} (manifest.jsonl)")
    return 0


# --- zoo ------------------------------------------------------------------------------------

ZOO_TRAIN_DEFAULTS = {"steps": None, "seed": None, "device": "auto", "sample_every": 0,
                      "checkpoint_every": 0, "diagnostics_every": 50, "max_minutes": None,
                      "data": None, "data_b": None, "class_key": None, "split": "train"}


def _gan_training_items(dirs: Sequence[str], split: str,
                        class_key: str | None = None) -> list[tuple[Path, str]]:
    """Real images to train a GAN on, each with a class name.

    From a corpus: its real images of ``split``; from a plain folder: all its images. The class
    is the manifest field ``class_key`` when given (a manifest corpus only), else the first
    subfolder of the ``--data`` folder the image lies in (the folder's own name for images
    directly inside it).
    """
    from forensics.corpus import REAL, CorpusError, discover_corpus, iter_image_files

    def folder_class(path: Path, root: Path) -> str:
        parts = path.relative_to(root).parts
        return parts[0] if len(parts) > 1 else root.resolve().name

    items: list[tuple[Path, str]] = []
    for d in dirs:
        root = Path(d)
        try:
            chosen = discover_corpus(d).select(split=split, label=REAL)
        except CorpusError:
            if not root.is_dir():
                raise
            if class_key:
                raise CliError(f"--class-key {class_key} reads a manifest.jsonl field, but {d} "
                               "has no manifest; use class subfolders instead") from None
            items += [(p, folder_class(p, root)) for p in iter_image_files([d])]
            continue
        for it in chosen:
            if class_key and it.meta.get(class_key) is None:
                raise CliError(f"{it.path}: its manifest row has no {class_key!r} field; add "
                               "it to every row or choose another --class-key")
            items.append((it.path, str(it.meta[class_key]) if class_key
                          else folder_class(it.path, root)))
    if not items:
        raise CliError(f"no real training images found in {', '.join(dirs)} (split {split}); "
                       "pass corpora with real images in that split (real/, or manifest rows "
                       "labelled real; --split all takes every split) or a plain folder of images")
    return items


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


def _is_main_process() -> bool:
    """False on the torchrun ranks other than 0, which train silently."""
    return os.environ.get("RANK", "0") == "0"


def cmd_zoo_list(args: argparse.Namespace) -> int:
    from generators.registry import get_family, list_generators

    for name, cfg in list_generators().items():
        print(f"{name} (data: {get_family(name).dataset}): {json.dumps(cfg)}")
    return 0


def cmd_zoo_train(args: argparse.Namespace) -> int:
    from generators.config import TRAIN_OPTIONS, RunFile, merge_options, read_run_file
    from generators.registry import get_family
    from generators.trainer import TrainingDiverged, train_gan

    try:
        run_file = read_run_file(args.config) if args.config else RunFile()
        name = args.name or run_file.name
        if not name:
            raise CliError("name the generator (`forensics zoo train NAME`) or set name in "
                           "the --config file")
        options = merge_options(ZOO_TRAIN_DEFAULTS, run_file.train,
                                {key: getattr(args, key) for key in TRAIN_OPTIONS})
        for key in ("steps", "data"):
            if options[key] is None:
                raise CliError(f"--{key} is required (on the command line or under [train] "
                               "in the --config file)")
        as_list = (lambda v: [v] if isinstance(v, str) else list(v))
        overrides = {**run_file.config, **_parse_overrides(args.set)}
        for key in ("resolution", "batch_size"):
            if getattr(args, key) is not None:
                overrides[key] = getattr(args, key)
        family = get_family(name)
        items = _gan_training_items(as_list(options["data"]), options["split"],
                                    options["class_key"])
        data = items if family.dataset == "labelled" else [path for path, _ in items]
        data_b = ([path for path, _ in _gan_training_items(as_list(options["data_b"]),
                                                           options["split"])]
                  if options["data_b"] else None)
        result = train_gan(name, data, Path(args.out), steps=options["steps"], data_b=data_b,
                           seed=options["seed"], device=options["device"],
                           config_overrides=overrides, sample_every=options["sample_every"],
                           checkpoint_every=options["checkpoint_every"],
                           diagnostics_every=options["diagnostics_every"],
                           max_minutes=options["max_minutes"], resume=args.resume,
                           progress=not args.quiet)
    except (ValueError, TrainingDiverged) as exc:
        raise CliError(str(exc)) from None
    if not _is_main_process():
        return 0
    if result.stopped:
        print(f"stopped by the {result.stopped} (--max-minutes) at step {result.step} of "
              f"{result.target_steps}; checkpoint saved in {result.run_dir}: continue with "
              "the same command and --resume")
    elif result.start_step >= result.target_steps:
        print(f"{result.run_dir} is already at step {result.step} (target "
              f"{result.target_steps}); nothing to do")
    else:
        print(f"trained {name} to step {result.step} on {len(data)} images"
              + (f" + {len(data_b)}" if data_b else "")
              + f" -> {result.run_dir} (samples.png, curves.png, stats.jsonl)")
    return 0


def cmd_zoo_sample(args: argparse.Namespace) -> int:
    from generators.sampling import sample_images

    try:
        rows = sample_images(Path(args.run), args.n, Path(args.out), seed=args.seed,
                             batch_size=args.batch_size, device=args.device,
                             progress=not args.quiet, class_name=args.class_name,
                             truncation=args.truncation, source=args.source,
                             direction=args.direction)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    print(f"{len(rows)} images in {args.out} (manifest.jsonl)")
    return 0


def cmd_zoo_metrics(args: argparse.Namespace) -> int:
    from forensics.corpus import iter_image_files

    for side in ("real", "fake"):
        if not Path(getattr(args, side)).is_dir():
            raise CliError(f"--{side} {getattr(args, side)} is not a folder; pass a folder of "
                           f"{side} images")
    paths = {side: sorted(p for p in iter_image_files([folder]) if p.is_file())
             for side, folder in (("real", args.real), ("fake", args.fake))}
    for side, found in paths.items():
        if len(found) <= args.k:
            raise CliError(f"--{side} {getattr(args, side)} holds {len(found)} images; the "
                           f"metrics need more than k={args.k}: give a folder with more images "
                           "or a smaller --k")
    from forensics.backbones import BackboneError, create_backbone, normalisation
    from generators.quality import (INCEPTION_SIZE, embed_images, inception_feature_model,
                                    quality_report)
    from generators.runtime import resolve_device

    device = resolve_device(args.device)

    def figures(model: Any, name: str, size: int, mean: Sequence[float],
                std: Sequence[float]) -> dict:
        real, fake = (embed_images(paths[side], model, size=size, mean=mean, std=std,
                                   device=device, batch_size=args.batch_size)
                      for side in ("real", "fake"))
        return quality_report(real, fake, name, kid_subset_size=args.kid_subset_size, k=args.k)

    try:
        backbone = create_backbone(args.backbone, num_classes=0)
    except BackboneError as exc:
        raise CliError(str(exc)) from None
    size = int(backbone.pretrained_cfg.get("input_size", (3, 224, 224))[-1])
    report = {"real": str(args.real), "fake": str(args.fake), "backbone": args.backbone,
              "input_size": size, **figures(backbone, args.backbone, size,
                                            *normalisation(backbone))}
    if args.inception_weights:
        try:
            inception = inception_feature_model(args.inception_weights)
        except (OSError, ValueError) as exc:
            raise CliError(f"--inception-weights: {exc}") from None
        report.update(figures(inception, "inception_v3", INCEPTION_SIZE, (0.5,) * 3, (0.5,) * 3))
    else:
        report["FD_inception_v3"] = None
        report["note"] = ("Inception FID unavailable: no local Inception-v3 weights (pass "
                          "--inception-weights FILE, a torchvision inception_v3 state dict)")
    print(f"{report['n_real']} real vs {report['n_fake']} fake images; features: "
          f"{args.backbone} at {size} px")
    for key, value in report.items():
        if key.startswith(("FD_", "KID_", "precision_", "recall_")) and value is not None:
            print(f"  {key}: {value:.6g}")
    if "note" in report:
        print(f"  {report['note']}")
    if args.out:
        _write_json(args.out, report)
        print(f"wrote {args.out}")
    return 0


# --- detectors, scan, evaluate ---------------------------------------------------------------

def _detector_params(args: argparse.Namespace) -> dict[str, Any]:
    """Constructor parameters from --set KEY=VALUE and the --features/--classifier/--members flags."""
    params = _parse_overrides(args.set)
    for key in ("features", "classifier", "members"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    return params


def cmd_detector_train(args: argparse.Namespace) -> int:
    from forensics.detectors import create_detector
    from forensics.training import train_detector, train_state_dir

    params = _detector_params(args)
    try:
        # Wrong kinds and parameter names fail before decoding.
        resumes = create_detector(args.kind, **params).resumes_training()
        if args.resume and not resumes:
            print(f"--resume: a {args.kind} detector fits in seconds, so it is simply trained "
                  "again")
        elif resumes:
            state = train_state_dir(args.out)
            found = any(state.rglob("state.json"))
            if args.resume and not found:
                print(f"--resume: no training state in {state}; training from scratch")
            elif found and not args.resume:
                print(f"discarding the training state of an interrupted run in {state} "
                      "(pass --resume to continue it)")
        det = train_detector(args.kind, args.corpus, args.out, params=params,
                             workers=args.workers, progress=not args.quiet, resume=args.resume)
    except TypeError as exc:
        raise CliError(f"--kind {args.kind} does not take these parameters ({exc}); "
                       f"it takes {_constructor_parameters(args.kind)}") from None
    except ValueError as exc:  # bad parameter values or unusable training data
        raise CliError(str(exc)) from None
    val = det.validation_metrics_ or {}
    ap = val.get("ap")
    print(f"saved {args.kind} detector to {args.out}: threshold {det.threshold_:.3f}"
          + (f", validation AP {ap:.3f}" if ap is not None else ""))
    return 0


def _constructor_parameters(kind: str) -> str:
    """The --set KEY names a detector kind takes, for error messages."""
    import inspect

    from forensics.detectors import registered_detectors

    cls = registered_detectors(kind).get(kind)
    names = [] if cls is None else [n for n in inspect.signature(cls).parameters
                                    if n not in ("self", "args", "kwargs")]
    return ", ".join(names) or "no parameters"


def cmd_detector_info(args: argparse.Namespace) -> int:
    from forensics.detectors import load_detector
    from forensics.detectors.card import format_model_card, model_card

    load_detector(args.bundle)  # validates the bundle before describing it
    card = model_card(args.bundle)
    print(json.dumps(card, indent=2) if args.json else format_model_card(card))
    return 0


def _limits(args: argparse.Namespace) -> ImageLimits:
    """The --max-pixels / --max-bytes of a command that took add_limit_options."""
    return ImageLimits(max_pixels=args.max_pixels, max_bytes=args.max_bytes)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_limit_options(sp: argparse.ArgumentParser) -> None:
    """--max-pixels and --max-bytes (ImageLimits): larger files are reported, not decoded."""
    sp.add_argument("--max-pixels", type=_positive_int, default=DEFAULT_LIMITS.max_pixels,
                    metavar="N", help="refuse images of more pixels, read from the header "
                                      f"before decoding (default {DEFAULT_LIMITS.max_pixels:,})")
    sp.add_argument("--max-bytes", type=_positive_int, default=DEFAULT_LIMITS.max_bytes,
                    metavar="N", help="refuse image files larger than this "
                                      f"(default {DEFAULT_LIMITS.max_bytes:,} = 100 MB)")


def cmd_scan(args: argparse.Namespace) -> int:
    from forensics.corpus import iter_image_files
    from forensics.detectors import load_detector
    from forensics.scoring import score_files

    detector = load_detector(args.detector)
    paths = list(iter_image_files(args.paths))
    if not paths:
        raise CliError(f"no image files found in {', '.join(args.paths)}; give image files "
                       "(.png, .jpg, .webp, .bmp, .tif, .gif) or folders holding them")
    rows = score_files(paths, detector, batch_size=args.batch_size, workers=args.workers,
                       limits=_limits(args), progress=not args.quiet)
    members = sorted({name for r in rows for name in r.members})  # ensembles only
    records = [{"path": str(r.path),
                "p_fake": "" if r.p_fake is None else round(r.p_fake, 6),
                "verdict": "" if r.p_fake is None else
                ("fake" if r.p_fake >= detector.threshold_ else "real"),
                **{f"p_fake_{m}": round(r.members[m], 6) if m in r.members else "" for m in members},
                "error": r.error} for r in rows]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # surrogateescape writes a non-UTF-8 file name back as its original bytes instead of failing
    with out.open("w", newline="", encoding="utf-8", errors="surrogateescape") as fh:
        if args.format == "jsonl":
            for rec in records:
                fh.write(json.dumps({k: None if v == "" and k != "error" else v
                                     for k, v in rec.items()}) + "\n")
        else:
            writer = csv.DictWriter(fh, fieldnames=list(records[0]))
            writer.writeheader()
            writer.writerows(records)
    n_fake = sum(r["verdict"] == "fake" for r in records)
    n_real = sum(r["verdict"] == "real" for r in records)
    bad = [r for r in records if r["error"]]
    print(f"scanned {len(records)} files: {n_fake} fake, {n_real} real, {len(bad)} unreadable "
          f"(threshold {detector.threshold_:.3f}) -> {out}")
    for r in bad:
        print(f"  error: {r['path']}: {r['error']}")
    for advice, count in Counter(r.advice for r in rows if r.error and r.advice).items():
        print(f"  what to do ({count} file{'s' if count > 1 else ''}): {advice}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from forensics import evaluation as protocol
    from forensics.corpus import discover_corpus
    from forensics.detectors import load_detector
    from forensics.plots import plot_matrix

    detector = load_detector(args.detector)
    corpora = [discover_corpus(d) for d in args.corpus]
    plots = Path(args.plots) if args.plots else None
    try:
        result = protocol.evaluate_corpora(detector, corpora, split=args.split,
                                           batch_size=args.batch_size, workers=args.workers,
                                           progress=not args.quiet, bootstrap=args.bootstrap,
                                           seed=args.seed, plots=plots, limits=_limits(args))
    except ValueError as exc:  # no images in the split
        raise CliError(str(exc)) from None
    print(f"split: {result['split']}, {result['n_scored']} of {result['n_images']} images scored, "
          f"threshold {detector.threshold_:.3f} (from validation; ap_95ci: bootstrap interval)")
    print(protocol.evaluation_table(result))
    for err in result["errors"]:
        print(f"  error: {err['path']}: {err['error']}")
    if args.leave_one_out or args.cross_generator:
        data = protocol.ProtocolData(corpora, workers=args.workers, progress=not args.quiet,
                                     limits=_limits(args))
        kind, params = detector.kind, detector.get_params()
        try:
            if args.leave_one_out:
                result["leave_one_out"] = protocol.leave_one_out(kind, params, data)
                print(f"leave one generator out (a fresh {kind} detector per row, trained "
                      "without that generator):")
                print(protocol.leave_one_out_table(result["leave_one_out"]))
            if args.cross_generator:
                matrix = result["cross_generator"] = protocol.cross_generator_matrix(
                    kind, params, data)
                print("cross-generator AP (row: trained on, column: tested on):")
                print(protocol.matrix_table(matrix))
                if plots is not None:
                    result["plots"].append(str(plot_matrix(
                        matrix["ap"], matrix["generators"], plots / "cross_generator_ap.png")))
        except ValueError as exc:  # too few generators, or splits without both classes
            raise CliError(str(exc)) from None
    if plots is not None:
        print(f"plots: {', '.join(result['plots'])}")
    if args.out:
        _write_json(args.out, result)
        print(f"wrote {args.out}")
    return 0


def cmd_robustness(args: argparse.Namespace) -> int:
    from forensics.grid import GridError
    from forensics.report import write_report
    from forensics.robustness import RobustnessError, run_robustness

    try:
        result = run_robustness(args.detector, args.corpus, args.out, grid=args.grid,
                                split=args.split, limit=args.limit, batch_size=args.batch_size,
                                workers=args.workers, fresh=args.fresh,
                                progress=not args.quiet, limits=_limits(args))
    except (GridError, RobustnessError) as exc:
        raise CliError(str(exc)) from None
    if result is None:  # a torchrun rank other than 0: rank 0 merges and reports
        return 0
    report = write_report(args.out, metric=args.break_metric, below=args.break_below,
                          rows=result.rows)
    n_errors = sum(bool(row["error"]) for row in result.rows)
    print(f"{len(result.rows)} results ({n_errors} with errors): {result.manifest['images']} "
          f"images (split {result.manifest['split']}) x {len(result.manifest['grid'])} "
          f"perturbations x {len(result.manifest['detectors'])} detectors")
    for point in report.breaking_points:
        print(f"  {point['detector']}: {point['text']}")
    print(f"wrote {report.html} ({args.out}/results.jsonl, metrics.csv, metrics.json, "
          f"{len(report.plots)} plots)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from forensics.pipeline import demo_summary, run_demo

    result = run_demo(args.out, quick=args.quick, seed=args.seed, device=args.device,
                      progress=not args.quiet)
    print(demo_summary(result, args.out))
    return 0


def cmd_app(args: argparse.Namespace) -> int:
    """Serve app/Home.py with Streamlit; the default detector is trained by the quick demo first."""
    app = Path(__file__).resolve().parent.parent / "app" / "Home.py"
    if not app.is_file():
        raise CliError(f"the app is not installed ({app} is missing); run from a source checkout")
    bundle = Path(args.detector)
    if not (bundle / "detector.json").is_file():
        if args.detector != APP_DEFAULT_DETECTOR:
            raise CliError(f"{bundle}: no detector.json; pass a bundle from `forensics detector "
                           "train`, or leave --detector out to use the demo's")
        print(f"No detector at {bundle} yet: training the quick demo first "
              f"(`forensics demo --quick --out {bundle.parent}`, about 2 minutes on 2 cores).",
              flush=True)
        from forensics.pipeline import run_demo

        run_demo(bundle.parent, quick=True, progress=not args.quiet)
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, APP_ENV_DETECTOR: str(bundle.resolve()),
           APP_ENV_ROOT: str(root.resolve()), APP_ENV_MAX_BYTES: str(args.max_bytes),
           APP_ENV_MAX_PIXELS: str(args.max_pixels)}
    command = [sys.executable, "-m", "streamlit", "run", str(app),
               "--server.headless", "true", "--server.address", "127.0.0.1",
               "--server.port", str(args.port), "--browser.gatherUsageStats", "false",
               "--server.fileWatcherType", "none", "--client.toolbarMode", "minimal",
               "--server.maxUploadSize", str(max(1, -(-args.max_bytes // 2**20)))]
    print(f"GAN forensics app on http://127.0.0.1:{args.port} (detector {bundle}, "
          f"browsing {root}); Ctrl+C stops it.", flush=True)
    os.execve(sys.executable, command, env)  # this process becomes the server: signals reach it
    return 0  # not reached


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

    zoo = sub.add_parser("zoo", help="train, sample and score generators")
    zsub = zoo.add_subparsers(dest="zoo_command", required=True, metavar="ACTION")
    zsub.add_parser("list", parents=[common], help="generators and their default configs").set_defaults(
        func=cmd_zoo_list)
    train = zsub.add_parser(
        "train", parents=[common], help="train a generator on real images",
        description="Train a generator into a run folder. Runs under `torchrun --nproc_per_node "
                    "N` unchanged (DDP; rank 0 writes). Precedence: defaults < --config file "
                    "< flags.")
    train.add_argument("name", nargs="?", help="generator name (see `forensics zoo list`)")
    train.add_argument("--data", nargs="+",
                       help="corpus folders (their real images) or plain image folders; for "
                            "cgan the classes are their subfolders (or see --class-key)")
    train.add_argument("--data-b", nargs="+", help="domain B images (cyclegan)")
    train.add_argument("--class-key", help="cgan on a manifest corpus: the manifest field "
                                           "naming each image's class (e.g. source)")
    train.add_argument("--split", choices=["train", "val", "test", "all"],
                       help="which split of a corpus to train on (default train)")
    train.add_argument("--out", required=True, help="run folder")
    train.add_argument("--steps", type=int, help="total steps to reach (also when resuming)")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in --out from its checkpoint")
    train.add_argument("--max-minutes", type=float,
                       help="stop cleanly (with a checkpoint) after this long")
    train.add_argument("--config", help="run file (.yaml/.toml) with name, [config], [train]")
    train.add_argument("--checkpoint-every", type=int, help="steps between checkpoints "
                                                            "(default: only at the end)")
    train.add_argument("--sample-every", type=int, help="steps between extra sample grids")
    train.add_argument("--diagnostics-every", type=int,
                       help="steps between mode-collapse diagnostics (default 50; 0: off)")
    train.add_argument("--resolution", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--seed", type=int)
    train.add_argument("--device", choices=["auto", "cpu", "cuda"])
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value (JSON values), repeatable")
    train.set_defaults(func=cmd_zoo_train)
    sample = zsub.add_parser("sample", parents=[common], help="sample a trained generator into a fake corpus")
    sample.add_argument("run", help="run folder from `zoo train`")
    sample.add_argument("--n", type=int, required=True,
                        help="number of images (translations: of source images)")
    sample.add_argument("--out", required=True)
    sample.add_argument("--seed", type=int, default=0, help="first seed; image i uses seed+i")
    sample.add_argument("--class", dest="class_name",
                        help="conditional models: draw every image from this class "
                             "(default: classes cycle with the seed)")
    sample.add_argument("--truncation", type=float, metavar="PSI",
                        help="truncation psi (stylegan)")
    sample.add_argument("--source", help="translation models: folder of images to translate")
    sample.add_argument("--direction", choices=["AtoB", "BtoA"], default="AtoB")
    sample.add_argument("--batch-size", type=int, default=64)
    sample.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    sample.set_defaults(func=cmd_zoo_sample)
    metrics = zsub.add_parser("metrics", parents=[common],
                              help="FD, KID and precision/recall of fakes against reals")
    metrics.add_argument("--real", required=True, help="folder of real images")
    metrics.add_argument("--fake", required=True, help="folder of generated images")
    metrics.add_argument("--backbone", default="tf_efficientnet_lite0",
                         help="feature extractor with offline ImageNet weights (named in "
                              "every figure)")
    metrics.add_argument("--inception-weights", metavar="FILE",
                         help="torchvision inception_v3 state dict (.safetensors or .pth) for "
                              "the Inception FID")
    metrics.add_argument("--kid-subset-size", type=int, default=1000)
    metrics.add_argument("--k", type=int, default=3, help="neighbours for precision/recall")
    metrics.add_argument("--batch-size", type=int, default=32)
    metrics.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    metrics.add_argument("--out", help="write the figures as JSON")
    metrics.set_defaults(func=cmd_zoo_metrics)

    det = sub.add_parser("detector", help="train or describe detectors")
    dsub = det.add_subparsers(dest="detector_command", required=True, metavar="ACTION")
    dtrain = dsub.add_parser("train", parents=[common], help="train on the train split, threshold on val")
    dtrain.add_argument("--kind", default="spectral")
    dtrain.add_argument("--corpus", nargs="+", required=True)
    dtrain.add_argument("--out", required=True, help="bundle folder to write")
    dtrain.add_argument("--features", help="spectral: fft, dct, residual, npr or a '+' join "
                                           "(e.g. fft+npr); default fft")
    dtrain.add_argument("--classifier", choices=["logreg", "svm", "gbm"],
                        help="spectral: the classifier (default logreg)")
    dtrain.add_argument("--members", help="ensemble: comma-separated kind[:variant] members, "
                                          "e.g. spectral:fft,spectral:npr,cnn")
    dtrain.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any constructor parameter (JSON values), repeatable, e.g. "
                             "--set n_bins=32 --set 'classifier_params={\"C\": 0.1}'")
    dtrain.add_argument("--workers", type=int, default=2, help="decoding threads")
    dtrain.add_argument("--resume", action="store_true",
                        help="continue an interrupted training from its state in "
                             "OUT/.train-state/ (a hidden folder the CNN, and the CNN members "
                             "of an ensemble, update after every epoch and which is removed "
                             "once the bundle is saved), so at most the epoch in progress is "
                             "redone; same corpora and --set options required. Without "
                             "--resume that state is discarded. Spectral detectors fit in "
                             "seconds and are simply retrained")
    dtrain.set_defaults(func=cmd_detector_train)
    dinfo = dsub.add_parser("info", parents=[common], help="what a bundle was trained on and how it scored")
    dinfo.add_argument("bundle")
    dinfo.add_argument("--json", action="store_true", help="print the model card as JSON")
    dinfo.set_defaults(func=cmd_detector_info)

    def add_io_options(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--batch-size", type=int, default=64)
        sp.add_argument("--workers", type=int, default=2, help="decoding threads")

    scan = sub.add_parser("scan", parents=[common], help="score image files and folders")
    scan.add_argument("paths", nargs="+", help="files and folders (searched recursively)")
    scan.add_argument("--detector", required=True, help="bundle folder")
    scan.add_argument("--out", default="results.csv")
    scan.add_argument("--format", choices=["csv", "jsonl"], default="csv")
    add_limit_options(scan)
    add_io_options(scan)
    scan.set_defaults(func=cmd_scan)

    ev = sub.add_parser("evaluate", parents=[common], help="metrics per generator on labelled corpora")
    ev.add_argument("--detector", required=True)
    ev.add_argument("--corpus", nargs="+", required=True)
    ev.add_argument("--split", default="auto", choices=["auto", "train", "val", "test", "all"],
                    help="auto: test if the detector was trained on these corpora, else all")
    ev.add_argument("--out", help="write the full result as JSON")
    ev.add_argument("--plots", metavar="DIR",
                    help="write ROC/PR curves, a reliability diagram (and the matrix heat map)")
    ev.add_argument("--bootstrap", type=int, default=1000,
                    help="resamples for 95%% intervals of AP, AUC and accuracy (0: none)")
    ev.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    ev.add_argument("--leave-one-out", action="store_true",
                    help="per generator: train a fresh detector of this kind and parameters "
                         "without it (train/val splits), test on it")
    ev.add_argument("--cross-generator", action="store_true",
                    help="train on each generator, test on each: an AP matrix")
    add_limit_options(ev)
    add_io_options(ev)
    ev.set_defaults(func=cmd_evaluate)

    rob = sub.add_parser("robustness", parents=[common],
                         help="score corpora under a perturbation grid; resumable; torchrun-ready")
    rob.add_argument("--detector", nargs="+", required=True, help="bundle folders")
    rob.add_argument("--corpus", nargs="+", required=True, help="corpus folders")
    rob.add_argument("--out", required=True,
                     help="run folder: results (resumed when rerun), metrics, plots, report.html")
    rob.add_argument("--grid", default="default",
                     help="built-in grid (default, small) or a .yaml/.toml/.json grid file")
    rob.add_argument("--split", default="auto", choices=["auto", "train", "val", "test", "all"],
                     help="auto: test if a detector was trained on these corpora, else all")
    rob.add_argument("--limit", type=int, help="at most N images per label and generator")
    rob.add_argument("--fresh", action="store_true", help="discard results already in --out")
    rob.add_argument("--break-metric", default="ap",
                     choices=["ap", "roc_auc", "accuracy", "balanced_accuracy"],
                     help="the metric whose fall the report describes (default ap)")
    rob.add_argument("--break-below", type=float, default=0.8,
                     help="a detector breaks where the metric falls below this (default 0.8)")
    add_limit_options(rob)
    add_io_options(rob)
    rob.set_defaults(func=cmd_robustness)

    app = sub.add_parser("app", parents=[common], help="the Streamlit app: verdicts, evidence, corpora")
    app.add_argument("--detector", default=APP_DEFAULT_DETECTOR,
                     help=f"bundle folder (default {APP_DEFAULT_DETECTOR}, trained by the quick "
                          "demo when missing)")
    app.add_argument("--port", type=int, default=8501)
    app.add_argument("--root", default=APP_DEFAULT_ROOT,
                     help="corpora, runs and robustness results under it can be browsed "
                          f"(default {APP_DEFAULT_ROOT})")
    add_limit_options(app)
    app.set_defaults(func=cmd_app)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``forensics`` console script."""
    args = build_parser().parse_args(argv)
    if hasattr(sys.stdout, "reconfigure"):  # print non-UTF-8 file names as their bytes, not crash
        sys.stdout.reconfigure(errors="surrogateescape")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    from forensics.corpus import CorpusError
    from forensics.detectors import BundleError

    try:
        return args.func(args)
    except (CliError, CorpusError, BundleError, ValueError) as exc:
        # ValueError: the library's way to refuse bad input, with a message saying what and where
        print(f"forensics: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except OSError as exc:  # a path that is missing, unreadable or unwritable
        print(f"forensics: error: {_os_error_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("forensics: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - a bug: one line, the traceback with -v
        if args.verbose:
            raise
        print(f"forensics: internal error: {type(exc).__name__}: {' '.join(str(exc).split())} "
              "(a bug, not a problem with your input: rerun with -v for the traceback and "
              "report it)", file=sys.stderr)
        return 1


def _os_error_message(exc: OSError) -> str:
    """One line naming the path, what went wrong and what to do."""
    if exc.filename is None:  # an OSError raised with a message of our own
        return str(exc)
    where = os.fsdecode(exc.filename) + (f" -> {os.fsdecode(exc.filename2)}"
                                         if exc.filename2 else "")
    what = exc.strerror or str(exc)
    advice = {FileNotFoundError: "check the path",
              PermissionError: "check its permissions or choose another path",
              IsADirectoryError: "pass a file, not a folder",
              NotADirectoryError: "pass a folder, not a file"}
    for kind, text in advice.items():
        if isinstance(exc, kind):
            return f"{where}: {what}; {text}"
    return f"{where}: {what}; check the path and that the disk has room"


if __name__ == "__main__":
    sys.exit(main())
