"""Train a detector on the train split of labelled corpora and save it as a bundle."""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from crashsafe.images import DEFAULT_LIMITS, ImageError, ImageLimits
from forensics.corpus import LABEL_NAMES, Corpus, CorpusItem, discover_corpus
from forensics.detectors import create_detector, detector_class
from forensics.detectors.base import Detector
from forensics.detectors.train_state import TRAIN_STATE_DIR, discard_train_state
from forensics.scoring import decode_batches

log = logging.getLogger(__name__)

Labelled = tuple[list[np.ndarray], np.ndarray]


def decode_items(items: Sequence[CorpusItem], *, desc: str = "decoding", workers: int = 2,
                 progress: bool = True, limits: ImageLimits = DEFAULT_LIMITS
                 ) -> tuple[list[CorpusItem], list[np.ndarray], list[dict[str, str]]]:
    """Decode items into (the items that decoded, their images, errors); bad files (including
    those over ``limits``) are logged."""
    good, images, errors = [], [], []
    by_path = {it.path: it for it in items}
    with tqdm(total=len(items), desc=desc, unit="img", disable=not progress) as bar:
        for batch in decode_batches([it.path for it in items], workers=workers, limits=limits):
            for path, img in batch:
                if isinstance(img, ImageError):
                    log.warning("skipping %s", img)
                    errors.append({"path": str(path), "error": img.reason})
                else:
                    good.append(by_path[path])
                    images.append(img)
            bar.update(len(batch))
    return good, images, errors


def load_items(items: Sequence[CorpusItem], *, desc: str = "decoding", workers: int = 2,
               progress: bool = True) -> tuple[list[np.ndarray], np.ndarray, list[dict[str, str]]]:
    """Decode items into (images, labels, errors); bad files are logged and left out."""
    good, images, errors = decode_items(items, desc=desc, workers=workers, progress=progress)
    return images, np.asarray([it.label for it in good], dtype=np.int64), errors


def corpus_summary(corpora: Sequence[Corpus], items: Sequence[CorpusItem]) -> dict[str, Any]:
    """What a bundle records of its training data: corpus roots, counts per label and generator."""
    counts = Counter(it.generator or LABEL_NAMES[it.label] for it in items)
    return {
        "corpora": [str(c.root.resolve()) for c in corpora],
        "generators": sorted({it.generator for it in items if it.generator}),
        "counts": dict(sorted(counts.items())),
    }


def fit_detector(kind: str, params: dict[str, Any] | None, train: Labelled,
                 val: Labelled, *, state_dir: str | os.PathLike | None = None) -> Detector:
    """A new ``kind`` detector fit on ``train``; ``val`` calibrates it and sets its threshold.

    Validation data with a single class is no use for either and is left out, except real
    images for a one-class detector (``needs_fakes`` False), which sets its false-alarm rate
    on them. ``state_dir`` becomes the ``train_state_dir`` of the kinds that resume (see
    ``Detector``).
    """
    detector = create_detector(kind, **(params or {}))
    if "train_state_dir" in detector.get_params():
        detector.set_params(train_state_dir=state_dir)
    classes = set(val[1].tolist())
    has_val = classes == {0, 1} or (not detector.needs_fakes and 0 in classes)
    return detector.fit(*train, val_images=val[0] if has_val else None,
                        val_labels=val[1] if has_val else None)


def _check_classes(labels: np.ndarray, corpus_dirs: Sequence[str | os.PathLike],
                   n_unreadable: int, needs_fakes: bool = True) -> None:
    """Refuse training data without both classes (without reals, for a one-class detector),
    naming the corpora and what to add."""
    where = ", ".join(map(str, corpus_dirs))
    counts = {name: int((labels == label).sum()) for label, name in LABEL_NAMES.items()}
    missing = [name for name, n in counts.items() if n == 0 and (needs_fakes or name == "real")]
    if not missing:
        return
    unreadable = f", {n_unreadable} unreadable" if n_unreadable else ""
    add = {"fake": "fake images (fake/<generator>/ or manifest rows labelled fake, e.g. from "
                   "`forensics zoo sample`)",
           "real": "real images (real/ or manifest rows labelled real, e.g. from "
                   "`forensics corpus bundled`)"}
    needs = "needs both" if needs_fakes else "models real images, so it needs them"
    raise ValueError(f"the train split of {where} holds {counts['real']} real and "
                     f"{counts['fake']} fake images{unreadable}; a detector {needs}: add "
                     + " and ".join(add[name] for name in missing))


def train_state_dir(out: str | os.PathLike) -> Path:
    """Where ``train_detector`` keeps the training state of the bundle folder ``out``."""
    return Path(out) / TRAIN_STATE_DIR


def train_detector(kind: str, corpus_dirs: Sequence[str | os.PathLike], out: str | os.PathLike,
                   *, params: dict[str, Any] | None = None, workers: int = 2,
                   progress: bool = True, resume: bool = False, save: bool = True) -> Detector:
    """Fit ``kind`` (constructor ``params``) on the train split, calibrate and pick its threshold
    on the val split, record the training data in the bundle, and save it to ``out``.

    Detectors that resume (the CNN, ensembles with CNN members) keep their state after every
    epoch in ``out/.train-state/``, removed once the bundle is saved. With ``resume`` a state
    left there by an interrupted run is continued (it must be for the same data and
    parameters); without, it is discarded first. ``save`` False (the data-parallel ranks
    other than 0) trains without touching ``out``.
    """
    state = train_state_dir(out)
    corpora = [discover_corpus(d) for d in corpus_dirs]
    train_items = [it for c in corpora for it in c.select(split="train")]
    val_items = [it for c in corpora for it in c.select(split="val")]
    x_train, y_train, bad_train = load_items(train_items, desc="train images", workers=workers,
                                             progress=progress)
    x_val, y_val, bad_val = load_items(val_items, desc="val images", workers=workers,
                                       progress=progress)
    _check_classes(y_train, corpus_dirs, len(bad_train),
                   needs_fakes=detector_class(kind).needs_fakes)
    if not resume and save:  # only now: a command refused above leaves the state for --resume
        discard_train_state(state)
    detector = fit_detector(kind, params, (x_train, y_train), (x_val, y_val), state_dir=state)
    detector.training_info_.update(corpus_summary(corpora, train_items))
    detector.training_info_["n_train"] = len(x_train)
    detector.training_info_["n_val"] = detector.training_info_["n_val_images"]
    detector.training_info_["skipped_files"] = bad_train + bad_val
    if save:
        detector.save(Path(out))
        discard_train_state(state)  # after the save: a kill before this resumes to the bundle
    return detector
