"""`forensics scan|evaluate|robustness`: score files, measure detectors, stress them."""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from crashsafe.images import IMAGE_EXTENSIONS
from forensics.cli.common import (CliError, add_io_options, add_limit_options, detector_folder,
                                  image_limits)
from forensics.ranks import Ranks
from forensics.scan_results import SCAN_FORMATS
from forensics.verdict import DEFAULT_BAND, MAX_BAND


def band_width(text: str) -> float:
    """argparse type of --band: a number from 0 to forensics.verdict.MAX_BAND."""
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0 <= value <= MAX_BAND:
        raise argparse.ArgumentTypeError(
            f"expected a number from 0 to {MAX_BAND:g} (0: plain fake/real), got {text!r}")
    return value


def cmd_scan(args: argparse.Namespace) -> int:
    from forensics.corpus import iter_image_files
    from forensics.detectors import load_detector
    from forensics.scan_results import scan_records, write_results
    from forensics.scoring import score_files
    from forensics.verdict import VERDICTS

    detector = load_detector(detector_folder(args.detector))
    skipped: Counter[str] = Counter()
    paths = list(iter_image_files(args.paths, all_files=args.all_files, skipped=skipped))
    if not paths:
        note = f" ({_skipped_note(skipped)}: --all-files reads them)" if skipped else ""
        raise CliError(f"no image files found in {', '.join(args.paths)}{note}; give image "
                       f"files ({', '.join(sorted(IMAGE_EXTENSIONS))}) or folders holding them")
    with Ranks() as ranks:  # under torchrun each process scores its share; rank 0 writes
        rows = score_files(paths, detector, batch_size=args.batch_size, workers=args.workers,
                           limits=image_limits(args), progress=not args.quiet,
                           stability=args.stability, ranks=ranks)
    if ranks.rank:
        return 0
    threshold = detector.threshold_
    records = scan_records(rows, threshold, args.band, args.stability)
    out = write_results(args.out, records, args.format)
    counts = Counter(r["verdict"] for r in records)
    bad = [r for r in records if r["error"]]
    print(f"scanned {len(records)} files: "
          f"{', '.join(f'{counts[word]} {word}' for word in VERDICTS)}, {len(bad)} unreadable "
          f"(threshold {threshold:.3f}, uncertain band {args.band:g}, stability check "
          f"{'on' if args.stability else 'off'}) -> {out}")
    for r in bad:
        print(f"  error: {r['path']}: {r['error']}")
    for advice, count in Counter(r.advice for r in rows if r.error and r.advice).items():
        print(f"  what to do ({count} file{'s' if count > 1 else ''}): {advice}")
    if skipped:
        print(f"  {_skipped_note(skipped)}, not read: pass --all-files to read every file by "
              "its content")
    return 0


def _skipped_note(skipped: Counter[str]) -> str:
    """E.g. "3 files skipped for their extension (2 .txt, 1 .json)"."""
    total = sum(skipped.values())
    by_count = sorted(skipped.items(), key=lambda item: (-item[1], item[0]))
    kinds = ", ".join(f"{n} {ext}" for ext, n in by_count)
    return f"{total} file{'s' if total > 1 else ''} skipped for their extension ({kinds})"


def cmd_evaluate(args: argparse.Namespace) -> int:
    from forensics import evaluation as protocol
    from forensics.corpus import discover_corpus
    from forensics.detectors import load_detector
    from forensics.evaluation_results import write_evaluation
    from forensics.plots import plot_matrix

    detector = load_detector(detector_folder(args.detector))
    corpora = [discover_corpus(d) for d in args.corpus]
    with Ranks() as ranks:  # under torchrun each process scores its share; rank 0 goes on
        plots = Path(args.plots) if args.plots and ranks.rank == 0 else None
        try:
            result = protocol.evaluate_corpora(
                detector, corpora, split=args.split, batch_size=args.batch_size,
                workers=args.workers, progress=not args.quiet, bootstrap=args.bootstrap,
                seed=args.seed, plots=plots, limits=image_limits(args), ranks=ranks)
        except ValueError as exc:  # no images in the split
            raise CliError(str(exc)) from None
    if ranks.rank:
        return 0
    print(f"split: {result['split']}, {result['n_scored']} of {result['n_images']} images scored, "
          f"threshold {detector.threshold_:.3f} (from validation; ap_95ci: bootstrap interval)")
    print(protocol.evaluation_table(result))
    for err in result["errors"]:
        print(f"  error: {err['path']}: {err['error']}")
    if args.leave_one_out or args.cross_generator:
        data = protocol.ProtocolData(corpora, workers=args.workers, progress=not args.quiet,
                                     limits=image_limits(args))
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
        write_evaluation(args.out, result)
        print(f"wrote {args.out}")
    return 0


def cmd_robustness(args: argparse.Namespace) -> int:
    from forensics.grid import GridError
    from forensics.report import break_bars, settings_table, write_report
    from forensics.robustness import run_robustness
    from forensics.robustness_results import (METRICS_CSV, METRICS_JSON, RESULTS_FILE,
                                              RobustnessError)

    # Checked before the run, which can take hours, rather than when the report is written.
    bars = break_bars(args.break_metric, args.break_below, args.break_balanced_below)
    try:
        result = run_robustness(args.detector, args.corpus, args.out, grid=args.grid,
                                split=args.split, limit=args.limit, batch_size=args.batch_size,
                                workers=args.workers, fresh=args.fresh,
                                progress=not args.quiet, limits=image_limits(args))
    except (GridError, RobustnessError) as exc:
        raise CliError(str(exc)) from None
    if result is None:  # a torchrun rank other than 0: rank 0 merges and reports
        return 0
    report = write_report(args.out, bars=bars, rows=result.rows)
    n_errors = sum(bool(row["error"]) for row in result.rows)
    print(f"{len(result.rows)} results ({n_errors} with errors): {result.manifest['images']} "
          f"images (split {result.manifest['split']}) x {len(result.manifest['grid'])} "
          f"perturbations x {len(result.manifest['detectors'])} detectors")
    print("every setting, all images pooled (accuracies at each detector's saved threshold):")
    print(settings_table(report.metrics, bars))
    print("where each detector breaks:")
    for point in report.breaking_points:
        print(f"  {'BROKEN ' if point['broken_by'] else ''}{point['detector']} {point['text']}")
    print(f"wrote {report.html} ({args.out}/{RESULTS_FILE}, {METRICS_CSV}, {METRICS_JSON}, "
          f"{len(report.plots)} plots)")
    return 0


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """The `scan`, `evaluate` and `robustness` commands."""
    scan = sub.add_parser("scan", parents=[common], help="score image files and folders")
    scan.add_argument("paths", nargs="+", help="files and folders (searched recursively)")
    scan.add_argument("--all-files", action="store_true",
                      help="in folders, read every file by its content, not only image "
                           "extensions (other files are then reported as not images)")
    scan.add_argument("--detector", help="bundle folder (default: the shipped general detector)")
    scan.add_argument("--out", default="results.csv")
    scan.add_argument("--format", choices=SCAN_FORMATS, default="csv")
    scan.add_argument("--band", type=band_width, default=DEFAULT_BAND, metavar="B",
                      help="call a score within B of the threshold 'uncertain', as the app does "
                           f"(default {DEFAULT_BAND:g}; 0: plain fake/real)")
    scan.add_argument("--stability", action="store_true",
                      help="also score a JPEG 90 and a 0.75 downscaled copy of each image (3x "
                           "the work), write their scores and call the image 'unsure' when a "
                           "copy flips the call, as the app does")
    add_limit_options(scan)
    add_io_options(scan)
    scan.set_defaults(func=cmd_scan)

    ev = sub.add_parser("evaluate", parents=[common], help="metrics per generator on labelled corpora")
    ev.add_argument("--detector", help="bundle folder (default: the shipped general detector)")
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
    rob.add_argument("--break-metric", default="ap", choices=["ap", "roc_auc"],
                     help="the ranking figure checked against --break-below (default ap)")
    rob.add_argument("--break-below", type=float, default=0.8,
                     help="a detector breaks where the ranking figure falls below this "
                          "(default 0.8)")
    rob.add_argument("--break-balanced-below", type=float, default=0.7,
                     help="a detector also breaks where its balanced accuracy at its saved "
                          "threshold falls below this (default 0.7): AP can stay high while "
                          "every fake is called real")
    add_limit_options(rob)
    add_io_options(rob)
    rob.set_defaults(func=cmd_robustness)
