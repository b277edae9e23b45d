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

from forensics.detectors.base import Detector
from forensics.images import DEFAULT_LIMITS, ImageError, ImageLimits, load_image
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


def decode_batches(paths: Sequence[Path], *, batch_size: int = 64, workers: int = 2,
                   limits: ImageLimits = DEFAULT_LIMITS
                   ) -> Iterator[list[tuple[Path, np.ndarray | ImageError]]]:
    """Decode files in order, ``batch_size`` at a time, on a thread pool (Pillow releases the
    GIL); the next batch decodes while the caller works on this one."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        def submit(start: int) -> list[tuple[Path, Future]]:
            return [(p, pool.submit(_decode, p, limits)) for p in paths[start:start + batch_size]]

        ahead = submit(0)
        for start in range(0, len(paths), batch_size):
            current, ahead = ahead, submit(start + batch_size)
            yield [(path, future.result()) for path, future in current]


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
    two groups per worker are in flight, so memory stays bounded on any folder."""
    rows: list[ScoreRow] = []

    def collect(future: Future) -> None:
        done = future.result()
        rows.extend(done)
        bar.update(len(done))

    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque[Future] = deque()
        for start in range(0, len(paths), _GROUP):
            pending.append(pool.submit(_decode_and_score, paths[start:start + _GROUP], detector,
                                       limits, stability))
            if len(pending) >= 2 * workers:
                collect(pending.popleft())
        while pending:
            collect(pending.popleft())
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
