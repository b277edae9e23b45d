"""Corpora page: browse corpora, generator training runs and detector evaluations under the app
root."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

import components as C
import ui
from crashsafe.images import ImageError, load_image
from forensics.corpus import (LABEL_NAMES, Corpus, CorpusError, corpus_stamp, discover_corpus,
                              is_corpus)
from forensics.evaluation_results import EVALUATION_FILE, has_evaluation, read_evaluation


@st.cache_data(show_spinner="Reading the corpus…", max_entries=16)
def corpus(folder: str, stamp: float) -> Corpus:
    """A discovered corpus; ``stamp`` (the folder's mtime) rereads a changed one."""
    return discover_corpus(folder)


@st.cache_data(show_spinner=False, max_entries=1024)
def thumbnail(path: str, stamp: float) -> np.ndarray | str:
    """An image file's pixels through the safe decoder, or the reason it cannot be shown."""
    try:
        return load_image(path)
    except ImageError as exc:
        return exc.reason


@st.cache_data(show_spinner=False, max_entries=16)
def run_stats(folder: str, stamp: float) -> pd.DataFrame:
    """A generator run's statistics as a table indexed by step; ``stamp`` (their mtime)
    rereads them as the run goes on."""
    from generators import read_stats

    return pd.DataFrame(read_stats(folder)).set_index("step")


def show_corpus(folder: Path) -> None:
    """Counts, manifest metadata and a sample grid of one corpus."""
    try:
        found = corpus(str(folder), corpus_stamp(folder))
    except CorpusError as exc:
        st.error(str(exc))
        return
    cols = st.columns(4)
    cols[0].metric("Images", len(found.items))
    cols[1].metric("Real", sum(it.label == 0 for it in found.items))
    cols[2].metric("Fake", sum(it.label == 1 for it in found.items))
    cols[3].metric("Layout", found.layout)

    counts = pd.DataFrame(found.counts())
    left, right = st.columns([3, 2])
    with left:
        st.subheader("Counts per generator and split")
        st.dataframe(counts, hide_index=True, width="stretch")
    with right:
        st.subheader("Images per generator")
        st.bar_chart(counts, x="generator", y="total", color="label", height=220,
                     horizontal=True)

    meta = [{"path": it.path.relative_to(found.root).as_posix(), "label": LABEL_NAMES[it.label],
             "generator": it.generator or "-", "split": it.split,
             **{k: str(v) for k, v in it.meta.items()}} for it in found.items]
    with st.expander(f"Manifest metadata ({len(meta)} rows)"):
        st.dataframe(pd.DataFrame(meta), hide_index=True, width="stretch")

    st.subheader("Samples")
    groups = ["all", *sorted({row["generator"] for row in meta})]
    left, right = st.columns([2, 1])
    group = left.selectbox("Show", groups, key="grid_group",
                           format_func=lambda g: "real" if g == "-" else g)
    seed = right.number_input("Draw", 0, 10_000, 0, key="grid_seed",
                              help="Another number draws other images.")
    items = [it for it in found.items if group == "all" or (it.generator or "-") == group]
    picks = C.sample_paths([it.path for it in items], 24, seed=int(seed))
    by_path = {it.path: it for it in items}
    for start in range(0, len(picks), 8):
        for column, path in zip(st.columns(8), picks[start:start + 8]):
            pixels = thumbnail(str(path), path.stat().st_mtime) if path.exists() else "missing"
            item = by_path[path]
            caption = f"{item.generator or 'real'} · {item.split}"
            if isinstance(pixels, str):
                column.caption(f"{path.name}: {pixels}")
            else:
                column.image(pixels, caption=caption, width="stretch")


@st.cache_data(show_spinner="Computing spectra…", max_entries=8)
def group_spectra(folders: tuple[str, ...], stamps: tuple[float, ...],
                  per_group: int) -> dict[str, np.ndarray]:
    """Azimuthal spectra of up to ``per_group`` images per generator of the corpora."""
    from forensics.spectra import spectra_by_generator

    return spectra_by_generator([corpus(f, t) for f, t in zip(folders, stamps)],
                                per_group=per_group)


def show_spectra(root: Path) -> None:
    """Mean azimuthal spectrum per generator (real, GANs, diffusion) over chosen corpora."""
    import altair as alt

    choices = C.find_folders(root, is_corpus)
    if not choices:
        st.info(f"No corpora found under `{root}`.")
        return
    ui.how_to_read(
        "Each curve is a generator's mean log power spectrum over its images (± 1 std), "
        "left coarse structure, right the finest detail (1.0 = Nyquist on an axis). GAN "
        "upsampling **lifts the right end** and leaves bumps at fractions of the sampling "
        "rate; compare each generator, GAN or diffusion, with the real band.")
    left, right = st.columns([3, 1])
    picked = left.multiselect("Corpora", choices, default=choices[:8], key="spectra_corpora")
    per_group = right.number_input("Images per generator", 8, 2000, 64, step=8,
                                   key="spectra_n")
    if not picked:
        return
    folders = [C.resolve_under(root, c) for c in picked]
    try:
        spectra = group_spectra(tuple(map(str, folders)),
                                tuple(corpus_stamp(f) for f in folders), int(per_group))
    except CorpusError as exc:
        st.error(str(exc))
        return
    rows = pd.DataFrame(C.generator_spectrum_rows(spectra))
    if rows.empty:
        st.warning("None of the images in these corpora could be decoded.")
        return
    base = alt.Chart(rows).encode(x=alt.X("radius:Q", title="frequency / Nyquist"),
                                  color=alt.Color("series:N", title="generator"))
    chart = (base.mark_area(opacity=0.12).encode(y="low:Q", y2="high:Q")
             + base.mark_line().encode(y=alt.Y("mean:Q", title="mean log power")))
    st.altair_chart(chart.properties(height=360), width="stretch")
    st.dataframe(pd.DataFrame({"generator": list(spectra),
                               "images": [len(v) for v in spectra.values()]}),
                 hide_index=True)


def show_run(folder: Path) -> None:
    """Config, curves, sample grid and statistics of one generator training run."""
    from generators import GeneratorRun
    from generators import CheckpointError

    try:  # read only: a training beside the app finishes its own checkpoint saves
        run = GeneratorRun.from_pretrained(folder, recover=False)
    except CheckpointError as exc:
        st.error(str(exc))
        return
    stats = run_stats(str(folder), run.stats_path.stat().st_mtime)
    cols = st.columns(4)
    cols[0].metric("Generator", run.name)
    cols[1].metric("Steps", int(stats.index.max()) if len(stats) else 0)
    cols[2].metric("Resolution", str(run.config.get("resolution", "-")))
    final = stats.iloc[-1] if len(stats) else {}
    cols[3].metric("Final D(x) − D(G(z))",
                   f"{final['d_real'] - final['d_fake']:.2f}"
                   if "d_real" in stats and "d_fake" in stats else "-")
    left, right = st.columns(2)
    with left:
        st.subheader("Losses")
        # "loss": families without a discriminator (ddpm)
        st.line_chart(stats[[c for c in ("loss_d", "loss_g", "loss") if c in stats]],
                      height=240)
    with right:
        st.subheader("Discriminator outputs")
        st.line_chart(stats[[c for c in ("d_real", "d_fake") if c in stats]], height=240)
    for picture, caption in ((run.samples_path, "Samples on fixed seeds"),
                             (run.curves_path, "Training curves as saved by the run")):
        if picture.is_file():
            st.image(str(picture), caption=caption)
    with st.expander(run.config_path.name):
        st.json(run.document)


def evaluation_frame(result: dict) -> pd.DataFrame:
    """The rows `forensics evaluate` prints: per generator, their mean and all pooled."""
    from forensics.evaluation import evaluation_rows

    return pd.DataFrame(evaluation_rows(result))


def show_evaluation(folder: Path) -> None:
    """A detector's results per generator, as `forensics evaluate` (or the demo) saved them."""
    try:
        result = read_evaluation(folder)
    except ValueError as exc:
        st.error(str(exc))
        return
    detector = result.get("detector") or {}
    cols = st.columns(4)
    cols[0].metric("Detector", str(detector.get("kind", "-")))
    cols[1].metric("Threshold", f"{detector['threshold']:.3f}" if "threshold" in detector
                   else "-")
    cols[2].metric("Split", str(result.get("split", "-")))
    cols[3].metric("Images scored", result.get("n_scored", "-"))
    st.dataframe(evaluation_frame(result), hide_index=True, width="stretch")
    st.caption("Corpora: " + ", ".join(f"`{c}`" for c in result.get("corpora", [])))
    for name, member in (result.get("members") or {}).items():
        with st.expander(f"Member `{name}`"):
            st.dataframe(evaluation_frame(member), hide_index=True, width="stretch")


cfg = ui.config()
st.title("Corpora, training runs and evaluations")
st.caption(f"Only folders under `{cfg.root}` can be opened.")
kind = st.radio("Browse", ["Corpora", "Spectra by generator", "Training runs", "Evaluations"],
                horizontal=True, key="browse_kind")
if kind == "Spectra by generator":
    show_spectra(cfg.root)
elif kind == "Training runs":
    from generators import GeneratorRun  # torch: only where runs are browsed

    chosen = ui.pick_folder("training runs", cfg.root, GeneratorRun.is_run, key="run")
    if chosen is not None:
        show_run(chosen)
elif kind == "Evaluations":
    chosen = ui.pick_folder(f"evaluations ({EVALUATION_FILE})", cfg.root, has_evaluation,
                            key="evaluation")
    if chosen is not None:
        show_evaluation(chosen)
else:
    chosen = ui.pick_folder("corpora", cfg.root, is_corpus, key="corpus")
    if chosen is not None:
        show_corpus(chosen)
