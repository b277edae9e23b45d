"""What every command group shares: the user-error type, option helpers, JSON output."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

from crashsafe.files import atomic_write_text
from crashsafe.images import DEFAULT_LIMITS, ImageLimits
from crashsafe.torchrun import place


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status 2, no traceback."""


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON atomically, creating parent folders."""
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """--set KEY=VALUE pairs as a dict; values are JSON when they parse, else strings."""
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


def is_main_process() -> bool:
    """False on the torchrun ranks other than 0, which train silently."""
    return place().is_main


def image_limits(args: argparse.Namespace) -> ImageLimits:
    """The --max-pixels / --max-bytes of a command that took add_limit_options."""
    return ImageLimits(max_pixels=args.max_pixels, max_bytes=args.max_bytes)


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_limit_options(sp: argparse.ArgumentParser) -> None:
    """--max-pixels and --max-bytes (ImageLimits): larger files are reported, not decoded."""
    sp.add_argument("--max-pixels", type=positive_int, default=DEFAULT_LIMITS.max_pixels,
                    metavar="N", help="refuse images of more pixels, read from the header "
                                      f"before decoding (default {DEFAULT_LIMITS.max_pixels:,})")
    sp.add_argument("--max-bytes", type=positive_int, default=DEFAULT_LIMITS.max_bytes,
                    metavar="N", help="refuse image files larger than this "
                                      f"(default {DEFAULT_LIMITS.max_bytes:,} = 100 MB)")


def add_io_options(sp: argparse.ArgumentParser) -> None:
    """--batch-size and --workers of the commands that decode many images."""
    sp.add_argument("--batch-size", type=int, default=64)
    sp.add_argument("--workers", type=int, default=2, help="decoding threads")


def detector_folder(detector: str | None) -> Path:
    """The bundle a command uses: ``--detector`` when given, else the shipped general one."""
    if detector:
        return Path(detector)
    from forensics.detectors.general import general_detector_path

    return general_detector_path()
