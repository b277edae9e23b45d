"""`forensics demo` and `forensics app`: the pipeline in miniature, and the Streamlit app."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from forensics.cli.common import (CliError, add_limit_options, detector_folder, image_limits,
                                  positive_int)
from forensics.serving import DEFAULT_ROOT, AppConfig


# Wall times as measured (how: README, "What the demo does"); a test keeps the README in step.
QUICK_DEMO_TIME, FULL_DEMO_TIME = "about 2.5 minutes on 2 cores", "about 9 minutes"


def cmd_demo(args: argparse.Namespace) -> int:
    from forensics.pipeline import demo_summary, run_demo

    if args.wild is not None and not Path(args.wild).is_dir():
        raise CliError(f"--wild {args.wild}: not a folder")
    result = run_demo(args.out, quick=args.quick, seed=args.seed, device=args.device,
                      wild=args.wild, progress=not args.quiet)
    print(demo_summary(result, args.out))
    return 0


def cmd_app(args: argparse.Namespace) -> int:
    """Serve app/Home.py with Streamlit, with ``--detector`` or the shipped general detector."""
    app = Path(__file__).resolve().parents[2] / "app" / "Home.py"
    if not app.is_file():
        raise CliError(f"the app is not installed ({app} is missing); run from a source checkout")
    from forensics.detectors.base import BUNDLE_CONFIG_NAME

    bundle = detector_folder(args.detector)
    if not (bundle / BUNDLE_CONFIG_NAME).is_file():
        raise CliError(f"{bundle}: no {BUNDLE_CONFIG_NAME}; pass a bundle from `forensics "
                       "detector train`, or leave --detector out to use the shipped general "
                       "detector")
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    settings = AppConfig(detector=bundle.resolve(), root=root.resolve(),
                         limits=image_limits(args), scoring_slots=args.scoring_slots)
    env = {**os.environ, **settings.to_env()}
    command = [sys.executable, "-m", "streamlit", "run", str(app),
               "--server.headless", "true", "--server.address", "127.0.0.1",
               "--server.port", str(args.port), "--browser.gatherUsageStats", "false",
               "--server.fileWatcherType", "none", "--client.toolbarMode", "minimal",
               "--server.maxUploadSize", str(max(1, -(-args.max_bytes // 2**20)))]
    print(f"GAN forensics app on http://127.0.0.1:{args.port} (detector {bundle}, "
          f"browsing {root}); Ctrl+C stops it.", flush=True)
    os.execve(sys.executable, command, env)  # this process becomes the server: signals reach it
    return 0  # not reached


def add_demo_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """The `demo` command."""
    demo = sub.add_parser("demo", parents=[common], help="the whole pipeline in miniature on the bundled photos")
    demo.add_argument("--quick", action="store_true",
                      help=f"smaller and faster ({QUICK_DEMO_TIME}; the full demo "
                           f"{FULL_DEMO_TIME})")
    demo.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    demo.add_argument("--wild", metavar="DIR",
                      help="also score this folder of real and GAN images from elsewhere "
                           "(CNNDetection layout or a manifest) with the ensemble and the general "
                           "detectors; it is only measured, never trained on")
    demo.set_defaults(func=cmd_demo)


def add_app_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """The `app` command."""
    app = sub.add_parser("app", parents=[common], help="the Streamlit app: verdicts, evidence, corpora")
    app.add_argument("--detector", help="bundle folder (default: the shipped general detector)")
    app.add_argument("--port", type=int, default=8501)
    app.add_argument("--root", default=DEFAULT_ROOT,
                     help="corpora, runs and robustness results under it can be browsed "
                          f"(default {DEFAULT_ROOT})")
    app.add_argument("--scoring-slots", type=positive_int, default=1, metavar="N",
                     help="uploads scored at once across all users; the others wait in a "
                          "queue that tells each user their place (default 1: a 40 MP upload "
                          "holds about 0.5 GB while it is scored)")
    add_limit_options(app)
    app.set_defaults(func=cmd_app)
