"""Azimuthal spectra grouped by generator over corpora: the GAN-vs-diffusion trace comparison.

GAN upsampling lifts the high-frequency end of the spectrum (periodic peaks at fractions of the
sampling rate); a diffusion model's U-Net leaves other traces. Putting every generator's mean
curve beside the reals' shows which is which; the demo saves it as ``plots/mean_spectrum.png``
and the app charts it on its corpora page.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from forensics.corpus import REAL, Corpus, CorpusItem
from forensics.features import azimuthal_spectra
from forensics.training import decode_items

__all__ = ["REAL_GROUP", "group_items", "spectra_by_generator"]

REAL_GROUP = "real"


def group_items(corpora: Sequence[Corpus], *, split: str | None = None,
                per_group: int | None = None, seed: int = 0) -> dict[str, list[CorpusItem]]:
    """Items of ``corpora`` (of ``split`` when given) by group: ``"real"`` first, then each
    generator in the order met; at most ``per_group`` of each, drawn the same for one seed."""
    groups: dict[str, list[CorpusItem]] = {REAL_GROUP: []}
    for corpus in corpora:
        for item in corpus.select(split=split) if split else corpus.items:
            name = REAL_GROUP if item.label == REAL else item.generator or "fake"
            groups.setdefault(name, []).append(item)
    rng = np.random.default_rng(seed)
    return {name: [items[i] for i in sorted(rng.choice(len(items), per_group, replace=False))]
            if per_group is not None and len(items) > per_group else items
            for name, items in groups.items() if items}


def spectra_by_generator(corpora: Sequence[Corpus], *, split: str | None = None,
                         per_group: int | None = None, seed: int = 0, n_bins: int = 64,
                         progress: bool = False) -> dict[str, np.ndarray]:
    """Group name -> (N, n_bins) float32 azimuthal spectra of its images (see
    :func:`group_items`); files that do not decode are logged and left out, and a group left
    empty is dropped."""
    groups = group_items(corpora, split=split, per_group=per_group, seed=seed)
    items = [it for members in groups.values() for it in members]
    good, images, _ = decode_items(items, desc="spectra", progress=progress)
    spectra = azimuthal_spectra(images, n_bins=n_bins) if images else np.zeros((0, n_bins))
    rows = {it.path: row for it, row in zip(good, spectra)}
    out = {}
    for name, members in groups.items():
        kept = [rows[it.path] for it in members if it.path in rows]
        if kept:
            out[name] = np.stack(kept).astype(np.float32)
    return out

