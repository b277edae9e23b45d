"""PNG plots of detector evidence (matplotlib, headless)."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
import numpy as np  # noqa: E402

from crashsafe.files import atomic_write_bytes  # noqa: E402
from forensics.features.spectrum import spectrum_radius  # noqa: E402


def _save_figure(fig: plt.Figure, out_png: str | os.PathLike) -> Path:
    """Write the figure as a PNG atomically (folders created) and close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    atomic_write_bytes(out_png, buffer.getvalue())
    return Path(out_png)


def plot_mean_spectra(spectra: Mapping[str, np.ndarray], out_png: str | os.PathLike,
                      title: str = "Azimuthal log power spectrum") -> Path:
    """Mean azimuthal spectrum per group (rows of ``(N, bins)`` arrays) with a +-1 std band.

    GAN upsampling leaves excess energy at high frequencies: fakes sit above reals at the right.
    """
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for name, rows in spectra.items():
        rows = np.asarray(rows, dtype=np.float64)
        radius = spectrum_radius(rows.shape[1])
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
    return _save_figure(fig, out_png)


def plot_training_history(history: Sequence[Mapping[str, float]], out_png: str | os.PathLike,
                          best_epoch: int | None = None,
                          title: str = "Detector training") -> Path:
    """Per-epoch ``train_loss`` and ``val_loss`` (left axis) and ``val_ap`` (right), best marked.

    ``history`` rows are dicts with an ``epoch`` key; the PNG is written atomically, so a bundle
    folder never holds half a plot.
    """
    epochs = [row["epoch"] for row in history]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    ax.plot(epochs, [row["train_loss"] for row in history], "o-", label="train loss (augmented)")
    ax.plot(epochs, [row["val_loss"] for row in history], "s-", label="validation loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("binary cross-entropy")
    ax.grid(alpha=0.3)
    ap_axis = ax.twinx()
    ap_axis.plot(epochs, [row["val_ap"] for row in history], "^-", color="C2",
                 label="validation AP")
    ap_axis.set_ylabel("average precision")
    ap_axis.set_ylim(0, 1.02)
    if best_epoch is not None:
        ax.axvline(best_epoch, color="grey", lw=0.8, ls="--", label=f"kept: epoch {best_epoch}")
    lines = ax.get_legend_handles_labels()
    ap_lines = ap_axis.get_legend_handles_labels()
    ax.legend(lines[0] + ap_lines[0], lines[1] + ap_lines[1], loc="center right")
    ax.set_title(title)
    fig.tight_layout()
    return _save_figure(fig, out_png)


def plot_roc_pr(curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
                out_png: str | os.PathLike) -> Path:
    """ROC (left) and precision-recall (right) curves of (labels, P(fake)) per named group."""
    from sklearn.metrics import auc, precision_recall_curve, roc_curve

    fig, (roc_ax, pr_ax) = plt.subplots(1, 2, figsize=(10, 4.4), dpi=110)
    for name, (labels, scores) in curves.items():
        if len(set(np.asarray(labels).tolist())) < 2:
            continue
        fpr, tpr, _ = roc_curve(labels, scores)
        roc_ax.plot(fpr, tpr, label=f"{name} (AUC {auc(fpr, tpr):.3f})")
        precision, recall, _ = precision_recall_curve(labels, scores)
        pr_ax.plot(recall, precision, drawstyle="steps-post", label=name)
    roc_ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    roc_ax.set(xlabel="false positive rate (reals called fake)",
               ylabel="true positive rate (fakes caught)", title="ROC")
    pr_ax.set(xlabel="recall (fakes caught)", ylabel="precision (calls that are fake)",
              title="Precision-recall", ylim=(0, 1.02))
    for ax in (roc_ax, pr_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save_figure(fig, out_png)


def plot_reliability(labels: np.ndarray, scores: np.ndarray, out_png: str | os.PathLike,
                     n_bins: int = 15) -> Path:
    """Reliability diagram: share of fakes against mean P(fake) per bin, with the ECE."""
    from forensics.metrics import expected_calibration_error, reliability_curve

    curve = reliability_curve(labels, scores, n_bins)
    filled = curve["count"] > 0
    centres = (curve["edges"][:-1] + curve["edges"][1:]) / 2
    fig, (ax, count_ax) = plt.subplots(2, 1, figsize=(5.5, 6), dpi=110, sharex=True,
                                       gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--", label="perfect calibration")
    ax.plot(curve["mean_score"][filled], curve["fraction_fake"][filled], "o-",
            label=f"detector (ECE {expected_calibration_error(labels, scores, n_bins):.3f})")
    ax.set(ylabel="share of fakes in the bin", title="Reliability diagram", xlim=(0, 1),
           ylim=(0, 1))
    ax.grid(alpha=0.3)
    ax.legend()
    count_ax.bar(centres, curve["count"], width=1 / n_bins, color="C0", alpha=0.6)
    count_ax.set(xlabel="P(fake)", ylabel="images")
    fig.tight_layout()
    return _save_figure(fig, out_png)


def plot_matrix(matrix: Sequence[Sequence[float | None]], generators: Sequence[str],
                out_png: str | os.PathLike, metric: str = "AP") -> Path:
    """Cross-generator heat map: row = generator trained on, column = generator tested on."""
    values = np.array([[np.nan if v is None else v for v in row] for row in matrix], dtype=float)
    size = 1.2 + 0.9 * len(generators)
    fig, ax = plt.subplots(figsize=(size + 1.5, size), dpi=110)
    image = ax.imshow(values, vmin=0.5, vmax=1.0, cmap="viridis")
    for (i, j), value in np.ndenumerate(values):
        if np.isfinite(value):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center",
                    color="white" if value < 0.8 else "black")
    ax.set_xticks(range(len(generators)), generators, rotation=45, ha="right")
    ax.set_yticks(range(len(generators)), generators)
    ax.set(xlabel="tested on", ylabel="trained on", title=f"Cross-generator {metric}")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    return _save_figure(fig, out_png)
