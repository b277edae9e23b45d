"""`forensics corpus info|bundled`: inspect and create labelled corpora."""

from __future__ import annotations

import argparse
import json

from crashsafe.corpus_manifest import CORPUS_MANIFEST_NAME
from forensics.cli.common import CliError


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
    print(f"wrote {args.count} real patches of {args.size} px to {out} "
          f"({CORPUS_MANIFEST_NAME})")
    return 0


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """The `corpus` command group."""
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
