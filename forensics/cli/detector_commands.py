"""`forensics detector train|info|list`: fit detectors into bundles, describe them, list kinds."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from forensics.cli.common import CliError, parse_overrides


def _detector_params(args: argparse.Namespace) -> dict[str, Any]:
    """Constructor parameters from --set KEY=VALUE and the --features/--classifier/--members flags."""
    params = parse_overrides(args.set)
    for key in ("features", "classifier", "members"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    return params


def cmd_recipe_train(args: argparse.Namespace) -> int:
    """`detector train --recipe general`: simulators, aligned pairs and the residual CNN."""
    from forensics.general_recipe import GeneralRecipe, build_general_detector

    if args.kind is not None or args.set or args.members or args.features or args.classifier:
        raise CliError("--recipe general sets the detector itself; drop --kind, --set, "
                       "--members, --features and --classifier (or train without --recipe)")
    work = Path(args.work or Path(args.out).with_name(Path(args.out).name + "-work"))
    det = build_general_detector(args.out, work, recipe=GeneralRecipe(),
                                 extra_real=args.corpus or (), seed=args.seed,
                                 progress=not args.quiet)
    minutes = det.training_info_["recipe"]["minutes"]
    print(f"saved the general detector to {args.out}: threshold {det.threshold_:.3f}, "
          f"{sum(minutes.values()):.1f} min ({', '.join(f'{k} {v}' for k, v in minutes.items())});"
          f" simulators and aligned pairs in {work}")
    return 0


def cmd_detector_train(args: argparse.Namespace) -> int:
    """`detector train`; under torchrun the CNN kinds train data-parallel, rank 0 saves."""
    from forensics.ranks import Ranks

    with Ranks() as ranks:
        if args.recipe:
            if ranks.size > 1:
                raise CliError("--recipe general runs in one process: start it without "
                               "torchrun (torchrun trains --kind cnn or ensemble bundles)")
            return cmd_recipe_train(args)
        return _train(args, ranks.rank)


def _train(args: argparse.Namespace, rank: int) -> int:
    from forensics.detectors import create_detector
    from forensics.training import train_detector

    if not args.corpus:
        raise CliError("--corpus is required (corpus folders holding the training images), "
                       "unless --recipe general builds its own data")
    args.kind = args.kind or "spectral"
    params = _detector_params(args)
    try:
        # Wrong kinds and parameter names fail before decoding.
        resumes = create_detector(args.kind, **params).resumes_training()
        if not rank:  # the other ranks train their share silently
            _say_what_becomes_of_the_state(args, resumes)
        det = train_detector(args.kind, args.corpus, args.out, params=params,
                             workers=args.workers, progress=not args.quiet and not rank,
                             resume=args.resume, save=not rank)
    except TypeError as exc:
        raise CliError(f"--kind {args.kind} does not take these parameters ({exc}); "
                       f"it takes {_constructor_parameters(args.kind)}") from None
    except ValueError as exc:  # bad parameter values or unusable training data
        raise CliError(str(exc)) from None
    if rank:
        return 0
    val = det.validation_metrics_ or {}
    ap = val.get("ap")
    print(f"saved {args.kind} detector to {args.out}: threshold {det.threshold_:.3f}"
          + (f", validation AP {ap:.3f}" if ap is not None else ""))
    return 0


def _say_what_becomes_of_the_state(args: argparse.Namespace, resumes: bool) -> None:
    """Tell whether --resume continues, retrains or discards a training state."""
    from forensics.training import train_state_dir

    if args.resume and not resumes:
        print(f"--resume: a {args.kind} detector fits in seconds, so it is simply trained again")
    elif resumes:
        state = train_state_dir(args.out)
        found = any(state.rglob("state.json"))
        if args.resume and not found:
            print(f"--resume: no training state in {state}; training from scratch")
        elif found and not args.resume:
            print(f"discarding the training state of an interrupted run in {state} "
                  "(pass --resume to continue it)")


def _constructor_parameters(kind: str) -> str:
    """The --set KEY names a detector kind takes, for error messages."""
    from forensics.detectors import DETECTOR_KINDS

    entry = DETECTOR_KINDS.get(kind)
    return ", ".join(entry.defaults if entry else ()) or "no parameters"


def cmd_detector_list(args: argparse.Namespace) -> int:
    """`detector list`: every kind with its description and defaults (imports none of them)."""
    from forensics.detectors import DETECTOR_KINDS

    kinds = [DETECTOR_KINDS[name] for name in sorted(DETECTOR_KINDS)]
    if args.json:
        print(json.dumps([kind.as_dict() for kind in kinds], indent=2))
        return 0
    for kind in kinds:
        print(f"{kind.name}: {kind.description}")
        for name, value in kind.defaults.items():
            note = f"  # {kind.notes[name]}" if name in kind.notes else ""
            print(f"    {name} = {json.dumps(value)}{note}")
    return 0


def cmd_detector_info(args: argparse.Namespace) -> int:
    from forensics.detectors import load_detector
    from forensics.detectors.card import format_model_card, model_card

    load_detector(args.bundle)  # validates the bundle before describing it
    card = model_card(args.bundle)
    print(json.dumps(card, indent=2) if args.json else format_model_card(card))
    return 0


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """The `detector` command group."""
    det = sub.add_parser("detector", help="train, describe or list detectors")
    dsub = det.add_subparsers(dest="detector_command", required=True, metavar="ACTION")
    dtrain = dsub.add_parser("train", parents=[common], help="train on the train split, threshold on val")
    dtrain.add_argument("--kind", help="spectral (default), cnn, oneclass or ensemble")
    dtrain.add_argument("--recipe", choices=["general"],
                        help="general: build the general detector from the package's own data "
                             "(bundled photos, the zoo's upsampler simulators, aligned pairs, "
                             "the residual CNN); --corpus adds real folders to its sources")
    dtrain.add_argument("--work", help="--recipe: folder for its simulators and pairs (default "
                                       "OUT-work)")
    dtrain.add_argument("--seed", type=int, default=0, help="--recipe: random seed")
    dtrain.add_argument("--corpus", nargs="+",
                        help="corpus folders; --kind oneclass fits on their real images and "
                             "needs no fakes")
    dtrain.add_argument("--out", required=True, help="bundle folder to write")
    dtrain.add_argument("--features", help="spectral and oneclass: fft, dct, residual, npr, "
                                           "selfdesc or a '+' join (e.g. fft+npr); default "
                                           "fft (spectral), selfdesc (oneclass)")
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
    dlist = dsub.add_parser("list", parents=[common],
                            help="the detector kinds, what each does and its default parameters")
    dlist.add_argument("--json", action="store_true", help="print the kinds as JSON")
    dlist.set_defaults(func=cmd_detector_list)
