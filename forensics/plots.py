"""PNG plots of detector evidence (matplotlib, headless)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
import numpy as np  # noqa: E402

from forensics.features.spectrum import MAX_RADIUS  # noqa: E402


def plot_mean_spectra(spectra: Mapping[str, np.ndarray], out_png: str | os.PathLike,
                      title: str = "Azimuthal log power spectrum") -> Path:
    """Mean azimuthal spectrum per group (rows of ``(N, bins)`` arrays) with a +-1 std band.

    GAN upsampling leaves excess energy at high frequencies: fakes sit above reals at the right.
    """
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for name, rows in spectra.items():
        rows = np.asarray(rows, dtype=np.float64)
        radius = (np.arange(rows.shape[1]) + 0.5) * MAX_RADIUS / rows.shape[1]
        mean, std = rows.mean(axis=0), rows.std(axis=0)
        line, = ax.plot(radius, mean, label=f"{name} (n={len(rows)})")
        ax.fill_between(radius, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    ax.axvline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("spatial frequency / Nyquist (1 = Nyquist on an axis, 1.41 = corner)")
    ax.set_ylabel("mean log power")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
