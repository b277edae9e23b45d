"""Robustness runs: every image under every perturbation of a grid, scored by every detector.

The work is cut into *units*: a chunk of up to ``batch_size`` consecutive images (and up to
16 MP, read from the headers; a larger image is a chunk of its own) times one perturbation
family (see :mod:`forensics.grid`). Chunks depend only on the image files, so a resumed run, a
run with another number of workers and a ``torchrun`` run with any number of ranks score the same
batches and get bit-identical scores (a detector's scores can change in the last bits with the
batch around them). A chunk is decoded once for all its families, each unit
perturbs it level by level and scores each batch with all detectors on a worker pool, and the
unit's rows are appended to the rank's results shard in one write with flush + fsync.

An output folder (its files: :mod:`forensics.robustness_results`) holds:

* ``run.json``: what the run is over (detectors with their sha256, corpora, split, images, grid,
  image limits); a rerun with other inputs is refused unless ``fresh`` starts it over. Other
  image limits count as other inputs: they decide which files are scored and which are errors,
  so rows kept from the first limits would not match the new ones;
* ``shards/rank-NNNNN.jsonl``: append-only rows, one file per rank; a rerun reads every shard
  (ignoring a last line cut off by a kill), skips what is done and appends the rest;
* ``results.jsonl``: all rows merged by rank 0, one per (image, detector, perturbation), sorted
  by path, detector and grid order, each a ``robustness_results.result_row``.

Under ``torchrun`` (``RANK`` and ``WORLD_SIZE`` set) rank r takes chunks r, r + N, ...; rank 0
waits at a gloo barrier for the others, then merges.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

import forensics
from crashsafe.documents import NOT_JSON, DocumentError
from crashsafe.images import DEFAULT_LIMITS, ImageError, ImageLimits
from forensics.corpus import LABEL_NAMES, Corpus, discover_corpus
from forensics.detectors import Detector, load_detector
from forensics.evaluation import resolve_split
from forensics.grid import families, load_grid
from forensics.perturb import Perturbation
from forensics.ranks import Ranks
from forensics.robustness_results import (RUN_FORMAT, RUN_FORMAT_VERSION, RUN_FILE,
                                          RobustnessError, ShardWriter, discard_results,
                                          has_run, has_shards, read_run_manifest, result_row,
                                          shard_rows, write_results, write_run_manifest)
from forensics.scoring import _predict as predict_batch
from forensics.scoring import DECODE_PIXEL_BUDGET, decode_groups, plan_batches

__all__ = [
    "RunMismatchError",
    "RunResult",
    "bundle_sha256",
    "perturbation_seed",
    "run_robustness",
]

log = logging.getLogger(__name__)

# run.json keys that must match for a rerun to continue the same run.
_IDENTITY_KEYS = ("detectors", "corpora", "split", "batch_size", "grid", "images_sha256",
                  "image_limits")
# What a run.json written before image limits were recorded was run with.
_DEFAULTS_OF_OLD_RUNS = {"image_limits": {"max_pixels": DEFAULT_LIMITS.max_pixels,
                                          "max_bytes": DEFAULT_LIMITS.max_bytes}}

Key = tuple[str, str, str]  # (path, detector, perturbation id)


class RunMismatchError(RobustnessError):
    """An output folder that holds a run over other inputs than the ones given."""


@dataclass(frozen=True)
class RunImage:
    """One image of a run: ``relpath`` (to its corpus root) seeds its random perturbations."""

    path: str
    relpath: str
    label: int
    generator: str | None


@dataclass(frozen=True)
class RunResult:
    """A finished run as rank 0 sees it: its folder, its run.json and the merged rows."""

    out: Path
    manifest: dict[str, Any]
    rows: list[dict[str, Any]]


# --- inputs ---------------------------------------------------------------------------------

def bundle_sha256(folder: str | os.PathLike) -> str:
    """SHA-256 over every file of a detector bundle (relative paths and contents, sorted)."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def detector_names(bundles: Sequence[str | os.PathLike]) -> list[str]:
    """Short unique names for bundle folders: the folder name, plus parents where names clash."""
    parts = [Path(b).resolve().parts for b in bundles]
    if len(set(parts)) < len(parts):
        twice = next(b for b, p in zip(bundles, parts) if parts.count(p) > 1)
        raise RobustnessError(f"the detector bundle {twice} is given twice to --detector; "
                              "give each bundle once")
    depth = 1
    while len({p[-depth:] for p in parts}) < len(parts):
        depth += 1
    return ["/".join(p[-depth:]) for p in parts]


def _stable_key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()


def perturbation_seed(relpath: str, perturbation_id: str) -> int:
    """The seed of ``perturbation_id`` on an image: the same in every run, on every rank."""
    return int.from_bytes(_stable_key(f"{relpath}\n{perturbation_id}")[:8], "big")


def select_images(corpora: Sequence[Corpus], split: str,
                  limit: int | None = None) -> list[RunImage]:
    """The images of ``split`` ("all" for every split) in the corpora, in corpus and path order.

    ``limit`` keeps at most that many of each (label, generator), picked by a hash of the
    relative path so that the choice is stable and spread over the corpus.
    """
    images: dict[str, RunImage] = {}
    for corpus in corpora:
        for item in corpus.select(split=split):
            rel = item.path.relative_to(corpus.root).as_posix()
            image = RunImage(str(item.path), rel, item.label, item.generator)
            images.setdefault(image.path, image)
    chosen = list(images.values())
    if limit is not None:
        groups: dict[tuple[int, str | None], list[RunImage]] = {}
        for image in chosen:
            groups.setdefault((image.label, image.generator), []).append(image)
        keep = {im.path for group in groups.values()
                for im in sorted(group, key=lambda im: _stable_key(im.relpath))[:limit]}
        chosen = [im for im in chosen if im.path in keep]
    return chosen


def _run_split(detectors: Sequence[Detector], corpora: Sequence[Corpus], split: str) -> str:
    """``auto``: ``test`` if any detector was trained on one of the corpora (so none is scored
    on its own training images), else ``all``."""
    if split != "auto":
        return split
    resolved = {resolve_split(det, corpora, "auto") for det in detectors}
    return "test" if "test" in resolved else "all"


@dataclass(frozen=True)
class _Plan:
    """Everything a run is over, checked and loaded."""

    names: list[str]
    detectors: list[Detector]
    images: list[RunImage]
    perturbations: list[Perturbation]
    manifest: dict[str, Any]


def _plan(bundles: Sequence[str | os.PathLike], corpus_dirs: Sequence[str | os.PathLike],
          grid: str | os.PathLike | Sequence[Perturbation], split: str, limit: int | None,
          batch_size: int, limits: ImageLimits = DEFAULT_LIMITS) -> _Plan:
    """Load the detectors, the grid and the image list, and describe them in run.json form."""
    if not bundles or not corpus_dirs:
        raise RobustnessError("a robustness run needs at least one detector bundle and one corpus")
    if batch_size < 1 or (limit is not None and limit < 1):
        raise RobustnessError(f"--batch-size and --limit must be at least 1, got {batch_size} "
                              f"and {limit}; pass positive numbers")
    bundles = [Path(b).resolve() for b in bundles]
    detectors = [load_detector(b) for b in bundles]
    names = detector_names(bundles)
    perturbations = list(grid) if not isinstance(grid, (str, os.PathLike)) else load_grid(grid)
    if not perturbations:
        raise RobustnessError(f"the grid {grid} holds no perturbations; list at least one "
                              "(see forensics/grid.py for the format)")
    corpora = [discover_corpus(Path(d).resolve()) for d in corpus_dirs]
    split = _run_split(detectors, corpora, split)
    images = select_images(corpora, split, limit)
    if not images:
        raise RobustnessError(f"no images in split {split!r} of {', '.join(map(str, corpus_dirs))}")
    listing = "\n".join(f"{im.path}\t{im.label}\t{im.generator}" for im in images)
    manifest = {
        "format": RUN_FORMAT,
        "format_version": RUN_FORMAT_VERSION,
        "detectors": [{"name": n, "sha256": bundle_sha256(b)} for n, b in zip(names, bundles)],
        "corpora": [str(c.root) for c in corpora],
        "split": split,
        "limit": limit,
        "batch_size": batch_size,
        "grid": [p.id for p in perturbations],
        "images": len(images),
        "images_sha256": hashlib.sha256(listing.encode("utf-8", "surrogateescape")).hexdigest(),
        "image_limits": {"max_pixels": limits.max_pixels, "max_bytes": limits.max_bytes},
        "thresholds": {n: float(d.threshold_) for n, d in zip(names, detectors)},
        "bundles": {n: str(b) for n, b in zip(names, bundles)},
        "library_version": forensics.__version__,
    }
    return _Plan(names, detectors, images, perturbations, manifest)


def _prepare_folder(out: Path, manifest: dict[str, Any], fresh: bool) -> None:
    """Start ``out`` (or start it over with ``fresh``), or check that it holds this same run."""
    if fresh:
        discard_results(out)
    elif has_run(out):
        try:
            old = read_run_manifest(out)
        except DocumentError as error:
            what = (f"is not valid JSON ({error.detail})" if error.problem == NOT_JSON
                    else f"is not a robustness run of this version ({error.problem})")
            raise RunMismatchError(f"{out / RUN_FILE} {what}; pass --fresh to start the run "
                                   "over") from None
        differ = [k for k in _IDENTITY_KEYS
                  if old.get(k, _DEFAULTS_OF_OLD_RUNS.get(k)) != manifest[k]]
        if differ:
            raise RunMismatchError(
                f"{out} holds a robustness run over other inputs ({', '.join(differ)} differ); "
                "use another output folder, or pass --fresh to discard its results"
            )
        return
    elif has_shards(out):
        raise RunMismatchError(f"{out} has results but no {RUN_FILE}; pass --fresh to discard them")
    write_run_manifest(out, manifest)


# --- the results store ----------------------------------------------------------------------

def _key(row: dict[str, Any]) -> Key:
    return row["path"], row["detector"], row["perturbation"]


def _merge(out: Path, plan: _Plan) -> list[dict[str, Any]]:
    """Write ``results.jsonl``: shard rows, each key once, sorted; all of the plan must be done."""
    order = {p.id: i for i, p in enumerate(plan.perturbations)}
    detector_order = {n: i for i, n in enumerate(plan.names)}
    unique = {_key(row): row for row in reversed(shard_rows(out))}  # the first row of a key wins
    rows = sorted(unique.values(), key=lambda r: (r["path"], detector_order[r["detector"]],
                                                  order[r["perturbation"]]))
    expected = len(plan.images) * len(plan.names) * len(plan.perturbations)
    if len(rows) != expected:
        raise RobustnessError(f"{out}: {len(rows)} of {expected} results are done; rerun the "
                              "same command to finish the run")
    write_results(out, rows)
    return rows


# --- scoring one unit -----------------------------------------------------------------------

Outcome = tuple[float | None, str]  # (score, error)


def _perturb(image: np.ndarray | ImageError, relpath: str,
             perturbation: Perturbation) -> np.ndarray | str:
    """The perturbed image, or why there is none."""
    if isinstance(image, ImageError):
        return image.reason
    try:
        return perturbation.apply(image, seed=perturbation_seed(relpath, perturbation.id))
    except Exception as error:  # noqa: BLE001 - a per-image failure is reported, not raised
        return f"perturbation {perturbation.id} failed: {error}"


def score_unit(images: Sequence[np.ndarray | ImageError], relpaths: Sequence[str],
               perturbations: Sequence[Perturbation],
               detectors: Sequence[Detector]) -> list[list[list[Outcome]]]:
    """Outcomes ``[perturbation][detector][image]`` of a chunk of decoded images.

    Images that failed to decode, perturb or score get (None, reason) instead of a score.
    """
    outcomes = []
    for perturbation in perturbations:
        perturbed = [_perturb(im, rel, perturbation) for im, rel in zip(images, relpaths)]
        good = [im for im in perturbed if not isinstance(im, str)]
        per_detector = []
        for detector in detectors:
            scores = iter(predict_batch(detector, good))  # (score, error, ensemble members)
            per_detector.append([(None, im) if isinstance(im, str) else next(scores)[:2]
                                 for im in perturbed])
        outcomes.append(per_detector)
    return outcomes


# --- the runner -----------------------------------------------------------------------------

def _run_shard(out: Path, plan: _Plan, world: Ranks, workers: int, progress: bool,
               limits: ImageLimits = DEFAULT_LIMITS) -> None:
    """Score this rank's chunks that are not done yet, appending rows to its shard."""
    batch_size = plan.manifest["batch_size"]
    groups = families(plan.perturbations)
    done = {_key(row) for row in shard_rows(out)}
    # Chunks of up to batch_size images and a bounded number of pixels (a 64 MP image is a
    # chunk of its own), so a unit of work holds bounded memory whatever the image sizes.
    chunks = [([plan.images[i] for i in indices], pixels) for indices, pixels in
              plan_batches([Path(im.path) for im in plan.images], batch_size)]
    pending = []  # (chunk, its pixels, families with work left)
    for chunk, pixels in world.share(chunks):
        todo = [family for family, perts in groups.items()
                if any((im.path, name, p.id) not in done
                       for im in chunk for name in plan.names for p in perts)]
        if todo:
            pending.append((chunk, pixels, todo))
    total = sum(len(chunk) * len(groups[f]) for chunk, _, todo in pending for f in todo)
    log.info("%d images x %d perturbations x %d detectors: %d image-perturbations to do%s",
             len(plan.images), len(plan.perturbations), len(plan.names), total,
             f" on rank {world.rank} of {world.size}" if world.size > 1 else "")
    if not pending:
        return

    writer = ShardWriter(out, world.rank)
    # Threads, not processes: decoding, JPEG, OpenCV and FFTs release the GIL, the detectors are
    # loaded once and shared, and a GPU keeps one context. Process pools measured 4x slower on
    # 2 cores (benchmarks/RESULTS.md); processes scale out through torchrun ranks instead.
    # Detectors that run torch score from one thread (``Detector.scores_in_threads``).
    threaded = all(detector.scores_in_threads for detector in plan.detectors)
    executor = ThreadPoolExecutor(workers if threaded else 1)
    in_flight: deque[tuple[list[RunImage], str, Future]] = deque()
    bar = tqdm(total=total, desc="robustness", unit="img", disable=not progress or world.rank)

    def finish() -> None:
        chunk, family, future = in_flight.popleft()
        perts = groups[family]
        rows = []
        for pert, per_detector in zip(perts, future.result()):
            for name, outcomes in zip(plan.names, per_detector):
                for image, (score, error) in zip(chunk, outcomes):
                    if (image.path, name, pert.id) not in done:
                        rows.append(result_row(
                            path=image.path, label=LABEL_NAMES[image.label],
                            generator=image.generator, detector=name, perturbation=pert.id,
                            family=family, level=pert.level, score=score, error=error))
        writer.append(rows)
        bar.update(len(chunk) * len(perts))

    try:
        decoded = decode_groups([([Path(im.path) for im in chunk], pixels)
                                 for chunk, pixels, _ in pending], workers=workers, limits=limits)
        for (chunk, pixels, todo), batch in zip(pending, decoded, strict=True):
            images = [image for _, image in batch]
            relpaths = [im.relpath for im in chunk]
            # Bound memory, keep the workers busy; a chunk past half the pixel budget (a large
            # image) runs one unit at a time, done before the next chunk is even decoded.
            limit = 2 * workers if pixels <= DECODE_PIXEL_BUDGET // 2 else 0
            for family in todo:
                future = executor.submit(score_unit, images, relpaths, groups[family],
                                         plan.detectors)
                in_flight.append((chunk, family, future))
                while len(in_flight) > limit:
                    finish()
        while in_flight:
            finish()
    finally:  # on Ctrl-C: drop queued units, let running ones end; written rows are durable
        executor.shutdown(wait=True, cancel_futures=True)
        bar.close()
        writer.close()


def run_robustness(bundles: Sequence[str | os.PathLike], corpus_dirs: Sequence[str | os.PathLike],
                   out: str | os.PathLike, *,
                   grid: str | os.PathLike | Sequence[Perturbation] = "default",
                   split: str = "auto", limit: int | None = None, batch_size: int = 64,
                   workers: int = 2, fresh: bool = False, progress: bool = True,
                   limits: ImageLimits = DEFAULT_LIMITS) -> RunResult | None:
    """Score the corpora's images under every perturbation of ``grid`` with every detector.

    ``grid`` is a built-in grid name, a grid file or a list of perturbations; ``split`` is
    "auto", "train", "val", "test" or "all"; ``limit`` caps the images per (label, generator);
    ``workers`` threads perturb and score (one when a detector runs torch); files over
    ``limits`` get an error row. Resumes what ``out`` holds (RunMismatchError if it holds another run, unless ``fresh``). Under
    ``torchrun`` each rank scores its share; rank 0 merges and gets the RunResult, the other
    ranks get None.
    """
    out = Path(out)
    world = Ranks()
    try:
        plan = _plan(bundles, corpus_dirs, grid, split, limit, batch_size, limits)
        problem = None
        if world.rank == 0:
            try:
                _prepare_folder(out, plan.manifest, fresh)
            except RunMismatchError as error:
                problem = str(error)
        problem = world.broadcast(problem)
        if problem:
            raise RunMismatchError(problem)
        _run_shard(out, plan, world, max(1, workers), progress, limits)
        world.barrier()
        if world.rank:
            return None
        return RunResult(out, plan.manifest, _merge(out, plan))
    finally:
        world.close()
