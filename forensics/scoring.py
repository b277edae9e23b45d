"""Score image files with a detector in batches, reporting bad files instead of stopping."""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from tqdm.auto import tqdm

from crashsafe.images import (DEFAULT_LIMITS, ImageError, ImageLimits, header_pixels,
                             load_image)
from forensics.detectors.base import Detector
from forensics.ranks import Ranks, interleave
from forensics.verdict import score_images


@dataclass(frozen=True)
class ScoreRow:
    """The outcome for one file: ``p_fake`` when scored, otherwise ``error`` says why not and
    ``advice`` what to do.

    ``members`` holds each member's P(fake) when the detector is an ensemble, else is empty;
    ``copies`` the P(fake) of each stability copy (``forensics.verdict``) when they were scored.
    """

    path: Path
    p_fake: float | None
    error: str = ""
    members: dict[str, float] = field(default_factory=dict, compare=False)
    advice: str = field(default="", compare=False)
    copies: dict[str, float] = field(default_factory=dict, compare=False)


def _decode(path: Path, limits: ImageLimits) -> np.ndarray | ImageError:
    try:
        return load_image(path, limits=limits)
    except ImageError as exc:
        return exc


# Decoded pixels a scan holds at once (the batch being scored, the decodes ahead of it): 32 MP,
# 96 MB of RGB. Small images still come 64 to a batch; a larger image is decoded alone, so a
# folder of 64 MP photos holds one at a time, not the 128 that count-only batches held.
DECODE_PIXEL_BUDGET = 32_000_000


def plan_batches(paths: Sequence[Path], batch_size: int = 64,
                 pixel_budget: int = DECODE_PIXEL_BUDGET) -> Iterator[tuple[list[int], int]]:
    """Consecutive indices of ``paths`` in batches of up to ``batch_size`` files and half of
    ``pixel_budget`` pixels (read from the headers as it goes; a larger image is a batch of its
    own), each with its pixel count: half, so that the next batch decodes while one is scored."""
    batch: list[int] = []
    pixels = 0
    for index, path in enumerate(paths):
        size = header_pixels(path)
        if batch and (len(batch) == batch_size or pixels + size > pixel_budget // 2):
            yield batch, pixels
            batch, pixels = [], 0
        batch.append(index)
        pixels += size
    if batch:
        yield batch, pixels


def decode_groups(groups: Sequence[tuple[Sequence[Path], int]], *, workers: int = 2,
                  limits: ImageLimits = DEFAULT_LIMITS,
                  pixel_budget: int = DECODE_PIXEL_BUDGET
                  ) -> Iterator[list[tuple[Path, np.ndarray | ImageError]]]:
    """Decode groups of files (paths, their pixel count) in order on a thread pool (Pillow
    releases the GIL); the next groups decode while the caller works on one, as long as the
    pixels held, the group out with the caller included, stay within ``pixel_budget``. A
    group larger than that is decoded when nothing else is held."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        ahead: deque[tuple[list[tuple[Path, Future]], int]] = deque()
        held = next_group = 0
        while next_group < len(groups) or ahead:
            while next_group < len(groups) and (
                    not held or held + groups[next_group][1] <= pixel_budget):
                paths, pixels = groups[next_group]
                ahead.append(([(p, pool.submit(_decode, p, limits)) for p in paths], pixels))
                held, next_group = held + pixels, next_group + 1
            futures, pixels = ahead.popleft()
            yield [(path, future.result()) for path, future in futures]
            held -= pixels  # the caller is done with it


def decode_batches(paths: Sequence[Path], *, batch_size: int = 64, workers: int = 2,
                   limits: ImageLimits = DEFAULT_LIMITS,
                   pixel_budget: int = DECODE_PIXEL_BUDGET
                   ) -> Iterator[list[tuple[Path, np.ndarray | ImageError]]]:
    """Decode files in order in the batches of :func:`plan_batches`, the next decoding while
    the caller works on one, within ``pixel_budget`` (:func:`decode_groups`)."""
    groups = [([paths[i] for i in indices], pixels)
              for indices, pixels in plan_batches(paths, batch_size, pixel_budget)]
    yield from decode_groups(groups, workers=workers, limits=limits, pixel_budget=pixel_budget)


def score_files(paths: Sequence[str | os.PathLike], detector: Detector, *, batch_size: int = 64,
                workers: int = 2, limits: ImageLimits = DEFAULT_LIMITS,
                progress: bool = True, desc: str = "scoring",
                stability: bool = False, ranks: Ranks | None = None) -> list[ScoreRow]:
    """P(fake) for every file, in the given order; a file that fails gets its reason instead.

    With ``ranks`` of several ``torchrun`` processes, each scores its share of the files and
    every rank gets all the rows, in order, as one process would have made them.

    Feature detectors (``Detector.scores_in_threads``) run on ``workers`` threads, each
    decoding a few files and scoring them at once. Detectors that run torch score
    ``batch_size`` files at a time in this thread, on torch's own threads, while ``workers``
    threads decode the next batch. ``stability`` also scores each image's stability copies
    (three times the work).
    """
    paths = [Path(p) for p in paths]
    if ranks is not None and ranks.size > 1:
        mine = score_files(ranks.share(paths), detector, batch_size=batch_size, workers=workers,
                           limits=limits, progress=progress and ranks.rank == 0, desc=desc,
                           stability=stability)
        return interleave(ranks.all_gather(mine))
    with tqdm(total=len(paths), desc=desc, unit="img", disable=not progress) as bar:
        if detector.scores_in_threads:
            return _score_on_workers(paths, detector, max(1, workers), limits, stability, bar)
        rows: list[ScoreRow] = []
        for batch in decode_batches(paths, batch_size=batch_size, workers=workers, limits=limits):
            rows += _rows(batch, detector, stability)
            bar.update(len(batch))
        return rows


# Files per task of _score_on_workers: enough to spread a call's fixed cost, few enough that
# the pixels a worker decodes are still in its cache when it scores them.
_GROUP = 16


def _score_on_workers(paths: list[Path], detector: Detector, workers: int, limits: ImageLimits,
                      stability: bool, bar: tqdm) -> list[ScoreRow]:
    """Rows of ``paths`` in order, each of ``workers`` threads decoding a group of files and
    scoring it at once (feature detectors: their FFTs and decoders release the GIL). At most
    two groups per worker, and ``DECODE_PIXEL_BUDGET`` pixels (one image, if larger), are in
    flight, so memory stays bounded on any folder."""
    rows: list[ScoreRow] = []

    def collect(future: Future) -> None:
        done = future.result()
        rows.extend(done)
        bar.update(len(done))

    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque[tuple[Future, int]] = deque()
        held = 0
        # Groups of up to _GROUP files and DECODE_PIXEL_BUDGET / (2 workers) pixels.
        for indices, pixels in plan_batches(paths, _GROUP, DECODE_PIXEL_BUDGET // workers):
            group = [paths[i] for i in indices]
            while pending and (len(pending) >= 2 * workers
                               or held + pixels > DECODE_PIXEL_BUDGET):
                future, done = pending.popleft()
                collect(future)
                held -= done
            pending.append((pool.submit(_decode_and_score, group, detector, limits, stability),
                            pixels))
            held += pixels
        while pending:
            collect(pending.popleft()[0])
    return rows


def _decode_and_score(paths: list[Path], detector: Detector, limits: ImageLimits,
                      stability: bool) -> list[ScoreRow]:
    return _rows([(path, _decode(path, limits)) for path in paths], detector, stability)


def _rows(batch: list[tuple[Path, np.ndarray | ImageError]], detector: Detector,
          stability: bool) -> list[ScoreRow]:
    """Rows of decoded files in order: the images scored in one call, the failures explained."""
    good = [img for _, img in batch if not isinstance(img, ImageError)]
    scores = iter(_predict(detector, good, stability))
    return [ScoreRow(path, None, img.reason, advice=img.advice) if isinstance(img, ImageError)
            else ScoreRow(path, *next(scores)) for path, img in batch]


def _predict(detector: Detector, images: list[np.ndarray], stability: bool = False
             ) -> list[tuple[float | None, str, dict[str, float], str, dict[str, float]]]:
    """(p_fake, error, members, advice, copies) for a batch; if the batch fails, score one by
    one so one odd image fails alone."""
    try:
        return [(s.p_fake, "", s.members, "", s.copies)
                for s in score_images(detector, images, stability=stability)]
    except Exception as exc:  # noqa: BLE001 - a per-file failure is reported, not raised
        if len(images) == 1:
            return [(None, f"detector failed on this image: {exc}", {},
                     "report it with the image attached; the other images were scored", {})]
    return [_predict(detector, [img], stability)[0] for img in images]
