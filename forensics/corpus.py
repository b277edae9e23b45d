"""Labelled image corpora: discovery from three layouts and deterministic splits.

A corpus is a folder. Its labels come from, in order of precedence:

1. ``manifest.jsonl`` (one JSON object per image: ``path``, ``label``, ``generator``, optional
   ``split`` and provenance fields; ``crashsafe.corpus_manifest``), as written by
   ``forensics zoo sample`` and ``forensics corpus bundled``;
2. ``real/`` + ``fake/<generator>/`` subfolders;
3. CNNDetection's ``<set>/0_real`` and ``<set>/1_fake`` folders, the set naming the generator.

Images without a split in the manifest get one from a hash of their path relative to the root,
so adding files never moves an old file to another split.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from crashsafe.corpus_manifest import CORPUS_MANIFEST_NAME, has_manifest, manifest_path
from crashsafe.images import is_image_path

__all__ = ["SPLITS", "DEFAULT_FRACTIONS", "REAL", "FAKE", "LABEL_NAMES", "LAYOUT_ADVICE",
           "CorpusError", "CorpusItem", "Corpus", "is_corpus", "corpus_stamp", "split_for",
           "iter_image_files", "discover_corpus", "image_splits", "training_images"]

SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.70, 0.15, 0.15)
REAL, FAKE = 0, 1
LABEL_NAMES = {REAL: "real", FAKE: "fake"}


LAYOUT_ADVICE = ("pass a corpus folder holding a manifest.jsonl, real/ + fake/<generator>/ or "
                 "<set>/0_real + <set>/1_fake (see datasets.md; `forensics corpus bundled` "
                 "writes one)")


class CorpusError(ValueError):
    """A corpus folder that cannot be read: says which folder, why (``reason``) and what to do
    (``advice``)."""

    def __init__(self, root: str | os.PathLike, reason: str, advice: str = LAYOUT_ADVICE):
        self.root, self.reason, self.advice = str(root), reason, advice
        super().__init__(f"{root}: {reason}; {advice}")

    def __reduce__(self):
        return (type(self), (self.root, self.reason, self.advice))


@dataclass(frozen=True)
class CorpusItem:
    """One labelled image. ``label`` is 0 (real) or 1 (fake); ``generator`` is None for real."""

    path: Path
    label: int
    generator: str | None
    split: str
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass
class Corpus:
    """A discovered corpus: its root, the layout it was read from and its items (sorted by path)."""

    root: Path
    layout: str
    items: list[CorpusItem]

    def select(self, split: str | None = None, label: int | None = None,
               generator: str | None = None) -> list[CorpusItem]:
        """Items matching every given filter (``split="all"`` or None keeps every split)."""
        return [it for it in self.items
                if (split in (None, "all") or it.split == split)
                and (label is None or it.label == label)
                and (generator is None or it.generator == generator)]

    @property
    def generators(self) -> list[str]:
        """Names of the generators with fake images here, sorted."""
        return sorted({it.generator for it in self.items if it.generator is not None})

    def counts(self) -> list[dict[str, Any]]:
        """One row per (label, generator) with the number of images in each split and in total."""
        tally = Counter((LABEL_NAMES[it.label], it.generator or "-", it.split) for it in self.items)
        keys = sorted({(lab, gen) for lab, gen, _ in tally})
        rows = []
        for lab, gen in keys:
            row: dict[str, Any] = {"label": lab, "generator": gen}
            row.update({s: tally[(lab, gen, s)] for s in SPLITS})
            row["total"] = sum(row[s] for s in SPLITS)
            rows.append(row)
        return rows


def is_corpus(folder: str | os.PathLike) -> bool:
    """A quick test for listings, without reading anything: ``folder`` has a manifest or the
    real/fake layout (:func:`discover_corpus` reads these; CNNDetection layouts are found only
    by walking the folder)."""
    folder = Path(folder)
    return has_manifest(folder) or (folder / "real").is_dir() or (folder / "fake").is_dir()


def corpus_stamp(folder: str | os.PathLike) -> float:
    """Latest modification time of a corpus folder and its manifest: changes when the corpus
    does (a cache key for readers that keep discovered corpora)."""
    manifest = manifest_path(folder)
    return max(Path(folder).stat().st_mtime,
               manifest.stat().st_mtime if manifest.is_file() else 0.0)


def split_for(relpath: str, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> str:
    """Deterministic split of a path: a SHA-256 of the POSIX relative path mapped to [0, 1)."""
    digest = hashlib.sha256(relpath.encode("utf-8", "surrogateescape")).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    edge = 0.0
    for name, frac in zip(SPLITS, fractions):
        edge += frac
        if u < edge:
            return name
    return SPLITS[-1]


def iter_image_files(paths: Iterable[str | os.PathLike], *, all_files: bool = False,
                     skipped: Counter[str] | None = None) -> Iterator[Path]:
    """Files given explicitly, plus image files (by extension) found recursively in folders.

    Folders are walked in sorted order without following symlinked folders, so a symlink loop
    cannot hang the walk. A path that does not exist is yielded as is, so the caller reports it.
    ``all_files`` yields every file of the folders (the decoder then reads each by content);
    otherwise the files passed over are counted by lower-case extension in ``skipped``, so a
    caller can say that an image named ``photo.txt`` was not read.
    """
    for p in map(Path, paths):
        if p.is_dir():
            for dirpath, dirnames, filenames in os.walk(p):
                dirnames.sort()
                for name in sorted(filenames):
                    if all_files or is_image_path(name):
                        yield Path(dirpath) / name
                    elif skipped is not None:
                        skipped[Path(name).suffix.lower() or "(none)"] += 1
        else:
            yield p


def discover_corpus(root: str | os.PathLike,
                    fractions: Sequence[float] = DEFAULT_FRACTIONS) -> Corpus:
    """Read a corpus folder in whichever layout it has; raise CorpusError if it has none."""
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(root, "not a folder" if root.exists() else "folder does not exist")
    if has_manifest(root):
        return Corpus(root, "manifest", _from_manifest(root, fractions))
    if (root / "real").is_dir() or (root / "fake").is_dir():
        return Corpus(root, "real-fake", _from_real_fake(root, fractions))
    items = _from_cnndetection(root, fractions)
    if items:
        return Corpus(root, "cnndetection", items)
    raise CorpusError(root, "no manifest.jsonl, no real/ + fake/<generator>/ folders and no "
                            "<set>/0_real, <set>/1_fake folders found",
                      "lay the images out in one of these (see datasets.md), or pass a "
                      "corpus written by `forensics corpus bundled` or `forensics zoo sample`")


def image_splits(folder: str | os.PathLike,
                 fractions: Sequence[float] = DEFAULT_FRACTIONS) -> list[tuple[Path, str]]:
    """Each image of ``folder`` with its split, sorted by path: what a derived image (a
    translation of it) must inherit so that it never crosses from test into train.

    A corpus's images as :func:`discover_corpus` reads them (the manifest's split, else the hash
    split of the path relative to the folder); any other folder's images with that hash split.
    """
    root = Path(folder)
    if not root.is_dir():
        raise CorpusError(root, "not a folder" if root.exists() else "folder does not exist",
                          "pass a folder of images (or a corpus folder)")
    try:
        corpus = discover_corpus(root, fractions)
    except CorpusError:
        if has_manifest(root):
            raise  # a manifest that cannot be read: its splits are unknown
        return [(p, split_for(p.relative_to(root).as_posix(), fractions))
                for p in iter_image_files([root])]
    return [(it.path, it.split) for it in corpus.items]


def _item(root: Path, path: Path, label: int, generator: str | None, split: str | None,
          fractions: Sequence[float], meta: dict[str, Any] | None = None) -> CorpusItem:
    rel = path.relative_to(root).as_posix()
    return CorpusItem(path, label, generator, split or split_for(rel, fractions), meta or {})


def _parse_label(value: Any) -> int | None:
    if value in ("real", 0, "0"):
        return REAL
    if value in ("fake", 1, "1"):
        return FAKE
    return None


def _from_manifest(root: Path, fractions: Sequence[float]) -> list[CorpusItem]:
    items = []
    text = manifest_path(root).read_text(encoding="utf-8", errors="replace")
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{CORPUS_MANIFEST_NAME} line {lineno}"
        fix = f"fix or remove that line of {manifest_path(root)}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CorpusError(root, f"{where} is not valid JSON ({exc.msg})", fix) from exc
        if not isinstance(row, dict) or "path" not in row:
            raise CorpusError(root, f"{where} has no \"path\" field", fix)
        label = _parse_label(row.get("label"))
        if label is None:
            raise CorpusError(root, f"{where}: label must be \"real\" or \"fake\", "
                                    f"got {row.get('label')!r}", fix)
        split = row.get("split")
        if split is not None and split not in SPLITS:
            raise CorpusError(root, f"{where}: split must be one of {SPLITS}, got {split!r}",
                              fix)
        generator = row.get("generator") if label == FAKE else None
        if label == FAKE and not generator:
            generator = "unknown"
        meta = {k: v for k, v in row.items() if k not in ("path", "label", "generator", "split")}
        items.append(_item(root, root / row["path"], label, generator, split, fractions, meta))
    # A manifest names each image once; a rerun that appended duplicates must not count twice.
    unique = {it.path: it for it in items}
    return sorted(unique.values(), key=lambda it: it.path)


def _from_real_fake(root: Path, fractions: Sequence[float]) -> list[CorpusItem]:
    items = [_item(root, p, REAL, None, None, fractions) for p in iter_image_files([root / "real"])
             if (root / "real").is_dir()]
    fake_root = root / "fake"
    if fake_root.is_dir():
        for gen_dir in sorted(d for d in fake_root.iterdir() if d.is_dir()):
            items += [_item(root, p, FAKE, gen_dir.name, None, fractions)
                      for p in iter_image_files([gen_dir])]
        loose = [p for p in fake_root.iterdir() if p.is_file() and is_image_path(p)]
        items += [_item(root, p, FAKE, "unknown", None, fractions) for p in sorted(loose)]
    return sorted(items, key=lambda it: it.path)


def _from_cnndetection(root: Path, fractions: Sequence[float]) -> list[CorpusItem]:
    items = []
    for dirpath, dirnames, _ in os.walk(root):
        dirnames.sort()
        here = Path(dirpath)
        for name, label in (("0_real", REAL), ("1_fake", FAKE)):
            if name not in dirnames:
                continue
            rel = here.relative_to(root).parts
            generator = rel[0] if rel else root.name
            items += [_item(root, p, label, generator if label == FAKE else None, None, fractions,
                            {"set": generator})
                      for p in iter_image_files([here / name])]
        dirnames[:] = [d for d in dirnames if d not in ("0_real", "1_fake")]
    return sorted(items, key=lambda it: it.path)


def training_images(dirs: Sequence[str | os.PathLike], split: str,
                    class_key: str | None = None) -> list[tuple[Path, str]]:
    """Real images to train a generator on, each with a class name.

    From a corpus: its real images of ``split``; from a plain folder: all its images. The class
    is the manifest field ``class_key`` when given (a manifest corpus only), else the first
    subfolder of the folder in ``dirs`` the image lies in (the folder's own name for images
    directly inside it). Raises ValueError when none are found.
    """
    def folder_class(path: Path, root: Path) -> str:
        parts = path.relative_to(root).parts
        return parts[0] if len(parts) > 1 else root.resolve().name

    items: list[tuple[Path, str]] = []
    for d in dirs:
        root = Path(d)
        try:
            chosen = discover_corpus(d).select(split=split, label=REAL)
        except CorpusError:
            if not root.is_dir():
                raise
            if class_key:
                raise ValueError(f"--class-key {class_key} reads a {CORPUS_MANIFEST_NAME} field, "
                                 f"but {d} has no manifest; use class subfolders instead") from None
            items += [(p, folder_class(p, root)) for p in iter_image_files([d])]
            continue
        for it in chosen:
            if class_key and it.meta.get(class_key) is None:
                raise ValueError(f"{it.path}: its manifest row has no {class_key!r} field; add "
                                 "it to every row or choose another --class-key")
            items.append((it.path, str(it.meta[class_key]) if class_key
                          else folder_class(it.path, root)))
    if not items:
        raise ValueError(f"no real training images found in {', '.join(map(str, dirs))} (split "
                         f"{split}); pass corpora with real images in that split (real/, or "
                         "manifest rows labelled real; --split all takes every split) or a plain "
                         "folder of images")
    return items
