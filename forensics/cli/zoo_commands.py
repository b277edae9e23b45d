"""`forensics zoo list|train|sample|metrics`: the generator zoo."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from crashsafe.corpus_manifest import CORPUS_MANIFEST_NAME
from forensics.cli.common import CliError, is_main_process, parse_overrides, write_json


ZOO_TRAIN_DEFAULTS = {"steps": None, "seed": None, "device": "auto", "sample_every": 0,
                      "checkpoint_every": 0, "diagnostics_every": 50, "max_minutes": None,
                      "data": None, "data_b": None, "class_key": None, "split": "train"}


def cmd_zoo_list(args: argparse.Namespace) -> int:
    from generators.registry import CROP_MODES, get_family, list_generators

    for name, cfg in list_generators().items():
        family = get_family(name)
        crops = "" if family.crop == "resize" else f"; {CROP_MODES[family.crop]}"
        print(f"{name} (data: {family.dataset}{crops}): {json.dumps(cfg)}")
        if family.choices:
            print("  supports " + ", ".join(f"{key} in {list(values)}"
                                            for key, values in family.choices.items()))
    return 0


def cmd_zoo_train(args: argparse.Namespace) -> int:
    from forensics.zoo_bridge import zoo_training_data
    from generators import GeneratorRun
    from generators.config import TRAIN_OPTIONS, RunFile, merge_options, read_run_file
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
        overrides = {**run_file.config, **parse_overrides(args.set)}
        for key in ("resolution", "batch_size"):
            if getattr(args, key) is not None:
                overrides[key] = getattr(args, key)
        data, data_b = zoo_training_data(name, options["data"], options["split"],
                                         options["class_key"], options["data_b"])
        result = train_gan(name, data, Path(args.out), steps=options["steps"], data_b=data_b,
                           seed=options["seed"], device=options["device"],
                           config_overrides=overrides, sample_every=options["sample_every"],
                           checkpoint_every=options["checkpoint_every"],
                           diagnostics_every=options["diagnostics_every"],
                           max_minutes=options["max_minutes"], resume=args.resume,
                           progress=not args.quiet)
    except (ValueError, TrainingDiverged) as exc:
        raise CliError(str(exc)) from None
    if not is_main_process():
        return 0
    if result.stopped:
        print(f"stopped by the {result.stopped} (--max-minutes) at step {result.step} of "
              f"{result.target_steps}; checkpoint saved in {result.run_dir}: continue with "
              "the same command and --resume")
    elif result.start_step >= result.target_steps:
        print(f"{result.run_dir} is already at step {result.step} (target "
              f"{result.target_steps}); nothing to do")
    else:
        run = GeneratorRun.from_pretrained(result.run_dir)
        written = (run.samples_path, run.curves_path, run.stats_path)
        print(f"trained {name} to step {result.step} on {len(data)} images"
              + (f" + {len(data_b)}" if data_b else "")
              + f" -> {result.run_dir} ({', '.join(path.name for path in written)})")
    return 0


def cmd_zoo_sample(args: argparse.Namespace) -> int:
    from forensics.corpus import image_splits
    from generators import GeneratorRun
    from generators.sampling import sample_images

    try:
        source = None if args.source is None else image_splits(args.source)
        if source is not None and not source:
            raise CliError(f"--source {args.source} holds no images; pass a folder of images "
                           "to translate or reconstruct")
        rows = sample_images(Path(args.run), args.n, Path(args.out), seed=args.seed,
                             batch_size=args.batch_size, device=args.device,
                             progress=not args.quiet, class_name=args.class_name,
                             truncation=args.truncation, source=source,
                             direction=args.direction)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    print(f"{len(rows)} images in {args.out} ({CORPUS_MANIFEST_NAME})")
    run = GeneratorRun.from_pretrained(args.run)
    if run.health.get("collapsed"):
        last = ", ".join(f"{key} {value:.2f}"
                         for key, value in run.health["last_diagnostics"].items())
        print(f"  warning: {args.run} ended collapsed ({last}): these fakes repeat a few images; "
              f"its {run.config_path.name} lists what to try")
    return 0


def cmd_zoo_metrics(args: argparse.Namespace) -> int:
    from forensics.zoo_bridge import quality_report

    try:
        report = quality_report(args.real, args.fake, backbone=args.backbone,
                                device=args.device, batch_size=args.batch_size,
                                is_splits=args.is_splits, kid_subset_size=args.kid_subset_size,
                                k=args.k, inception_weights=args.inception_weights)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    print(f"{report['n_real']} real vs {report['n_fake']} fake images; features: "
          f"{args.backbone} at {report['input_size']} px")
    for key, value in report.items():
        if key.startswith(("FD_", "KID_", "IS_", "precision_", "recall_")) and value is not None:
            print(f"  {key}: {value:.6g}")
    if "note" in report:
        print(f"  {report['note']}")
    if args.out:
        write_json(args.out, report)
        print(f"wrote {args.out}")
    return 0


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """The `zoo` command group."""
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
    sample.add_argument("--n", type=int,
                        help="number of images (required for latent models; with --source: the "
                             "first N source images, default all)")
    sample.add_argument("--out", required=True)
    sample.add_argument("--seed", type=int, default=0, help="first seed; image i uses seed+i")
    sample.add_argument("--class", dest="class_name",
                        help="conditional models: draw every image from this class "
                             "(default: classes cycle with the seed)")
    sample.add_argument("--truncation", type=float, metavar="PSI",
                        help="truncation psi (stylegan: w pulled to its mean by psi; "
                             "biggan: latents truncated to [-psi, psi])")
    sample.add_argument("--source", help="translation models (cyclegan): folder of images to "
                                         "translate; autoencoder: folder of images to "
                                         "reconstruct, each at its own size; each fake keeps "
                                         "its source's split (from the folder's "
                                         f"{CORPUS_MANIFEST_NAME}, else the path's hash)")
    sample.add_argument("--direction", choices=["AtoB", "BtoA"], default="AtoB")
    sample.add_argument("--batch-size", type=int, default=64)
    sample.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    sample.set_defaults(func=cmd_zoo_sample)
    metrics = zsub.add_parser("metrics", parents=[common],
                              help="FD, KID, precision/recall and Inception Score of fakes "
                                   "against reals")
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
    metrics.add_argument("--is-splits", type=int, default=10,
                         help="parts of the fakes the Inception Score is averaged over "
                              "(fewer when there are under 2 fakes a part)")
    metrics.add_argument("--batch-size", type=int, default=32)
    metrics.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    metrics.add_argument("--out", help="write the figures as JSON")
    metrics.set_defaults(func=cmd_zoo_metrics)
