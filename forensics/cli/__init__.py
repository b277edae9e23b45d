"""The ``forensics`` command line: corpora, the generator zoo, detectors, scanning, evaluation."""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import sys
from typing import Sequence

from forensics import __version__
from forensics.cli import (app_commands, corpus_commands, detector_commands, scoring_commands,
                           zoo_commands)
from forensics.cli.common import CliError, add_limit_options, positive_int

__all__ = ["CliError", "add_limit_options", "build_parser", "main", "run"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; each sub-command's ``func`` does the work."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    common.add_argument("--threads", type=positive_int, metavar="N",
                        help="CPU threads of torch (default: every CPU this process may use)")
    p = argparse.ArgumentParser(prog="forensics", description=__doc__)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    app_commands.add_demo_parser(sub, common)
    corpus_commands.add_parsers(sub, common)
    zoo_commands.add_parsers(sub, common)
    detector_commands.add_parsers(sub, common)
    scoring_commands.add_parsers(sub, common)
    app_commands.add_app_parser(sub, common)
    return p


def run() -> None:
    """The ``forensics`` console script: :func:`main`, then the end of the process once the
    Python exit handlers have run and the output is flushed, without the C library
    destructors, which in torch's CUDA build touch about 130 MB more at exit (a 64 MP scan
    peaked there, after its work was done)."""
    code = main()
    atexit._run_exitfuncs()  # logging.shutdown and every other Python exit handler
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line's work, returning its exit status (tests and programs call this; the
    console script is :func:`run`)."""
    args = build_parser().parse_args(argv)
    if hasattr(sys.stdout, "reconfigure"):  # print non-UTF-8 file names as their bytes, not crash
        sys.stdout.reconfigure(errors="surrogateescape")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    from forensics.corpus import CorpusError
    from forensics.detectors import BundleError
    from crashsafe.runtime import keep_freed_memory, set_threads

    keep_freed_memory()
    set_threads(getattr(args, "threads", None))

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
