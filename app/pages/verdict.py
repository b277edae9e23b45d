"""Verdict page: upload images, get calibrated P(fake) with its evidence.

The title, the explanation and the uploader are drawn first: loading the detector (and torch,
for the evidence tabs) takes seconds on a busy machine, and happens behind a spinner after them.
The verdict words come from ``forensics.verdict``, the policy `forensics scan` applies too.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

import components as C
import ui
from crashsafe.images import ImageLimits
from forensics import verdict as V
from forensics.features import FEATURE_TILE, TILED_ABOVE

if TYPE_CHECKING:
    from forensics.detectors import Detector

BADGES = {  # colour, icon, short label for cards, sentence label for the detail
    V.FAKE: ("red", ":material/smart_toy:", "FAKE", "Likely generated (FAKE)"),
    V.REAL: ("green", ":material/photo_camera:", "REAL", "Likely real (REAL)"),
    V.UNCERTAIN: ("orange", ":material/help:", "UNCERTAIN", "UNCERTAIN: too close to call"),
    V.UNSURE: ("violet", ":material/sync_problem:", "UNSURE", "UNSURE: flips when degraded"),
}
CALLOUTS = {V.FAKE: st.error, V.REAL: st.success, V.UNCERTAIN: st.warning, V.UNSURE: st.warning}
MAX_CARDS = 24  # thumbnails shown; the batch table lists every image
TABS = ["2-D spectrum", "Azimuthal spectrum", "Noise residual", "Error levels (ELA)", "Grad-CAM",
        "Metadata"]


@st.cache_data(show_spinner=False, max_entries=512)
def score(sha256: str, key: str, name: str, _detector: Detector, _data: bytes,
          _limits: ImageLimits) -> C.ImageResult:
    """Scores of one upload, cached by content hash and detector version."""
    return C.score_upload(_detector, name, _data, _limits)


@st.cache_resource(show_spinner=False, max_entries=1)  # 40 MP: 120 MB
def decoded(sha256: str, _data: bytes, _limits: ImageLimits) -> np.ndarray:
    """The decoded pixels of the upload whose evidence is being computed, cached by content
    hash as one array that no one modifies (``cache_data`` kept a pickled copy and handed
    every rerun another); the evidence and pictures keep only small copies of their own."""
    return C.decode_upload(sha256, _data, _limits)


@st.cache_data(show_spinner=False, max_entries=256)
def picture(sha256: str, side: int, _data: bytes, _limits: ImageLimits) -> np.ndarray:
    """An upload shrunk to at most ``side`` px for display (``C.display_copy``)."""
    return np.ascontiguousarray(C.display_copy(decoded(sha256, _data, _limits), side))


@st.cache_data(show_spinner=False, max_entries=64)
def spectrum_2d(sha256: str, _image: np.ndarray) -> np.ndarray:
    """``explain.spectrum_2d`` for display, cached by content hash."""
    return C.display_copy(explain.spectrum_2d(_image))


@st.cache_data(show_spinner=False, max_entries=64)
def azimuthal(sha256: str, key: str, _image: np.ndarray, _detector: Detector) -> dict:
    """``explain.azimuthal_vs_reference``, cached by content hash and detector version."""
    return explain.azimuthal_vs_reference(_image, _detector)


@st.cache_data(show_spinner=False, max_entries=64)
def noise_residual(sha256: str, _image: np.ndarray) -> np.ndarray:
    """``explain.noise_residual`` of the central crop (``C.native_crop``), cached by hash."""
    return explain.noise_residual(C.native_crop(_image))


@st.cache_data(show_spinner=False, max_entries=256)
def error_levels(sha256: str, quality: int, _image: np.ndarray) -> np.ndarray:
    """``explain.error_level_analysis`` of the central crop at one JPEG quality, cached by
    hash and quality."""
    return explain.error_level_analysis(C.native_crop(_image), quality)


@st.cache_data(show_spinner=False, max_entries=64)
def gradcam(sha256: str, key: str, _detector: Detector, _image: np.ndarray) -> np.ndarray:
    """``explain.gradcam`` of the detector's CNN over the whole image, for display, cached by
    content hash and detector version."""
    return C.display_copy(explain.gradcam(_detector, _image))


def badge(call: str) -> str:
    """Markdown badge for a verdict."""
    colour, icon, short, _ = BADGES[call]
    return f":{colour}-badge[{icon} {short}]"


def render_cards(results: list[C.ImageResult], files: dict[str, tuple[str, bytes]],
                 threshold: float, band: float, limits: ImageLimits) -> None:
    """A grid with a thumbnail, the verdict and P(fake) of each scored upload."""
    scored = [(ident, r) for ident, r in results.items() if r.p_fake is not None]
    if len(scored) > MAX_CARDS:
        st.caption(f"Showing the first {MAX_CARDS} of {len(scored)} images; the table below "
                   "has them all.")
        scored = scored[:MAX_CARDS]
    for start in range(0, len(scored), 4):
        for column, (ident, result) in zip(st.columns(4), scored[start:start + 4]):
            with column.container(border=True):
                thumb, text = st.columns([1, 2])
                thumb.image(picture(result.sha256, C.THUMBNAIL_SIDE, files[ident][1], limits),
                            width="stretch")
                text.markdown(f"**{result.name}**  \n{badge(V.verdict(result, threshold, band))}")
                text.metric("P(fake)", f"{result.p_fake:.2f}",
                            help="Calibrated probability that the image is generated")


def render_spectra(tab_2d, tab_az, image: np.ndarray, sha: str, detector: Detector,
                   key: str) -> None:
    """The 2-D and azimuthal spectrum panels."""
    with tab_2d:
        ui.how_to_read(
            "The log power spectrum of the grey image, low frequencies in the centre. Camera "
            "photos fade smoothly outwards. GAN upsampling leaves **bright dots or grids** at "
            "regular positions (half and quarter of the sampling rate) and lifted corners.")
        tiled = image.shape[0] * image.shape[1] > TILED_ABOVE
        st.image(spectrum_2d(sha, image), width=420, caption="log |FFT|², centred" + (
            f", the mean over {FEATURE_TILE} px tiles (as the spectral features)" if tiled else ""))
    with tab_az:
        ui.how_to_read(
            "The spectrum averaged over rings: left is coarse structure, right is the finest "
            "detail (1.0 = Nyquist along an axis, 1.41 = the corners). Bands show the "
            "training real and fake images (mean ± 1 std). A curve that follows the **fake** "
            "band at the right end is what the spectral detector reacts to.")
        comparison = azimuthal(sha, key, image, detector)
        base = alt.Chart(pd.DataFrame(C.spectrum_chart_rows(comparison))).encode(
            x=alt.X("radius:Q", title="frequency / Nyquist"),
            color=alt.Color("series:N", title=None,
                            scale=alt.Scale(range=["#2e7d32", "#c62828", "#1f3b73"],
                                            domain=["training real (mean ± std)",
                                                    "training fake (mean ± std)",
                                                    "this image"])))
        chart = (base.mark_area(opacity=0.18).encode(y="low:Q", y2="high:Q")
                 + base.mark_line().encode(y=alt.Y("mean:Q", title="mean log power")))
        st.altair_chart(chart.properties(height=320), width="stretch")
        if comparison["reference"] is None:
            st.caption("This detector keeps no reference spectra, so only the image is shown.")


def crop_caption(image: np.ndarray) -> str | None:
    """Says when a pixel-level map shows only the central crop of a larger image."""
    height, width = image.shape[:2]
    if max(height, width) <= C.NATIVE_CROP:
        return None
    crop = C.native_crop(image)
    return (f"the central {crop.shape[1]}×{crop.shape[0]} px at native resolution (of "
            f"{width}×{height}): maps of every pixel of a large image would not fit the page")


def render_residuals(tab_noise, tab_ela, tab_cam, image: np.ndarray, shown: np.ndarray,
                     sha: str, detector: Detector, key: str) -> None:
    """Noise residual, error levels and Grad-CAM panels (the heat map over ``shown``, the
    image as displayed)."""
    with tab_noise:
        ui.how_to_read(
            "What is left once each pixel is predicted from its neighbours: sensor noise and "
            "generator texture. Camera noise is fine and even; generated images often show "
            "**repeating patterns, checkerboards or smooth patches** without noise.")
        st.image(noise_residual(sha, image), width=420, caption=crop_caption(image))
    with tab_ela:
        ui.how_to_read(
            "The difference after re-saving as JPEG at the chosen quality (amplified). Regions "
            "edited or pasted after the last save **stand out brighter**; a uniform map says "
            "nothing either way. Never-compressed PNGs (as generators write) look busy all over.")
        quality = st.columns([1, 2])[0].slider("JPEG quality", 50, 100, 90, key="ela_quality")
        st.image(error_levels(sha, quality, image), width=420, caption=crop_caption(image))
    with tab_cam:
        ui.how_to_read(
            "Where the CNN looked for its verdict: warm areas pushed the score towards the "
            "call it made. Broad warmth over textures is typical; a single hot object may mean "
            "the CNN reacts to content rather than to generator traces. The map comes from the "
            "deepest stage of the network with at least 7 cells across the image: the last "
            "stage for large images, an earlier and finer one for small images (at 32 px the "
            "last stage is a single cell).")
        if not C.has_cnn(detector):
            st.info("This detector has no CNN, so there is no Grad-CAM map. Train a `cnn` or "
                    "an `ensemble` with a CNN member to see one.", icon=":material/info:")
            return
        opacity = st.columns([1, 2])[0].slider("Overlay opacity", 0.0, 1.0, 0.5,
                                               key="cam_opacity")
        st.image(explain.overlay(shown, gradcam(sha, key, detector, image), opacity),
                 width=420)


def render_metadata(name: str, data: bytes) -> None:
    """Format, size, EXIF, JPEG quality estimate and hash."""
    ui.how_to_read(
        "What the file says about itself. Camera photos usually carry EXIF (make, model, "
        "exposure); generated images usually carry none, but metadata is easy to strip or "
        "forge, so treat it as a hint. The JPEG quality is estimated from the file's "
        "quantisation tables. The SHA-256 identifies this exact file.")
    meta = C.image_metadata(name, data)
    quality = explain.jpeg_quality_estimate(data)
    cols = st.columns(4)
    cols[0].metric("Format", meta["format"])
    cols[1].metric("Size", f"{meta['width']}×{meta['height']}")
    cols[2].metric("File size", f"{meta['bytes'] / 1024:.1f} KB")
    cols[3].metric("JPEG quality (est.)", "-" if quality is None else str(quality))
    st.code(f"SHA-256  {meta['sha256']}", language=None)
    if meta["exif"]:
        st.dataframe(pd.DataFrame(sorted(meta["exif"].items()), columns=["tag", "value"]),
                     hide_index=True, width="stretch")
    else:
        st.caption("No EXIF data in this file.")


def render_evidence(result: C.ImageResult, data: bytes, detector: Detector, key: str,
                    threshold: float, band: float, limits: ImageLimits) -> None:
    """The verdict in detail for one image, then the evidence tabs."""
    call = V.verdict(result, threshold, band)
    left, right = st.columns([1, 2])
    image = decoded(result.sha256, data, limits)
    shown = picture(result.sha256, C.DISPLAY_SIDE, data, limits)
    left.image(shown, caption=f"{result.name} ({result.width}×{result.height})", width="stretch")
    with right:
        _, icon, _, text = BADGES[call]
        CALLOUTS[call](f"**{text}**  \n{V.verdict_sentence(result, threshold, band)}",
                       icon=icon)
        flips = V.flipped_copies(result, threshold)
        cols = st.columns(1 + len(result.copies))
        cols[0].metric("P(fake)", f"{result.p_fake:.3f}", border=True,
                       help=f"threshold {threshold:.2f}, uncertain within ±{band:.2f}")
        for col, (label, p) in zip(cols[1:], result.copies.items()):
            col.metric(label, f"{p:.3f}", border=True, delta_arrow="off",
                       delta="flips the call" if label in flips else "same call",
                       delta_color="red" if label in flips else "gray",
                       help="P(fake) of a degraded copy: the stability check")
        if result.members:
            agree = V.members_agree(result, threshold)
            st.markdown("**Per detector** " + (":green-badge[agree]" if agree
                                               else ":orange-badge[disagree]"))
            st.dataframe(pd.DataFrame([{"detector": m, "P(fake)": round(p, 4),
                                        "call": V.FAKE if V.is_fake(p, threshold) else V.REAL}
                                       for m, p in result.members.items()]),
                         hide_index=True, width="stretch")
    tabs = st.tabs(TABS)
    render_spectra(*tabs[:2], image, result.sha256, detector, key)
    render_residuals(*tabs[2:5], image, shown, result.sha256, detector, key)
    with tabs[5]:
        render_metadata(result.name, data)


def render_results(files: dict[str, tuple[str, bytes]], detector: Detector, key: str,
                   threshold: float, band: float, limits: ImageLimits) -> None:
    """Score the uploads, then the cards, the batch table and the chosen image's evidence."""
    results = {}
    progress = st.progress(0.0, text="Scoring…")
    for n, (ident, (name, data)) in enumerate(files.items(), 1):
        results[ident] = score(C.sha256_hex(data), key, name, detector, data, limits)
        progress.progress(n / len(files), text=f"Scored {n} of {len(files)}")
    progress.empty()

    for result in results.values():
        if result.error:
            st.error(C.refusal_message(result), icon=":material/broken_image:")
    render_cards(results, files, threshold, band, limits)

    rows = [C.result_row(r, threshold, band) for r in results.values()]
    st.subheader("Batch results")
    table = pd.DataFrame(rows, columns=C.TABLE_COLUMNS)
    if table["members_agree"].isna().all():
        table = table.drop(columns="members_agree")  # a single detector: nothing to agree on
    st.dataframe(table, hide_index=True,
                 width="stretch",
                 column_config={"p_fake": st.column_config.ProgressColumn(
                     "P(fake)", min_value=0.0, max_value=1.0, format="%.3f"),
                     "members_agree": st.column_config.CheckboxColumn("members agree")})
    left, right = st.columns(2)
    left.download_button("Download CSV", C.rows_to_csv(rows), "verdicts.csv", "text/csv",
                         icon=":material/download:", on_click="ignore")
    right.download_button("Download JSON", C.rows_to_json(rows, threshold, band,
                                                          str(cfg.detector)),
                          "verdicts.json", "application/json", icon=":material/download:",
                          on_click="ignore")

    scored = {ident: r for ident, r in results.items() if r.p_fake is not None}
    if scored:
        st.divider()
        st.subheader("Evidence")
        chosen = st.selectbox("Image", list(scored), format_func=lambda i: scored[i].name,
                              key="inspect")
        render_evidence(scored[chosen], files[chosen][1], detector, key, threshold, band,
                        limits)


cfg = ui.config()
st.title("Is this image generated?")
st.caption("Drop photos or suspected GAN images. Each gets a calibrated probability, a "
           "stability check against re-saving and resizing, and the evidence behind it.")
uploads = st.file_uploader(
    "Images to check", type=C.UPLOAD_TYPES, accept_multiple_files=True, key="uploads",
    help=f"PNG, JPEG, WebP, BMP, TIFF or GIF, up to {C.format_bytes(cfg.limits.max_bytes)} "
         f"and {cfg.limits.max_pixels / 1e6:g} megapixels each. A file that cannot be scored "
         "is listed with the reason; the others are scored.")
if not uploads:
    st.info("Nothing uploaded yet. Files are scored in memory and never stored.",
            icon=":material/upload:")
detector = ui.detector(cfg.detector)
key = ui.detector_key(cfg.detector)

with st.sidebar:
    st.markdown("#### Decision")
    threshold = st.slider("Threshold", 0.0, 1.0, float(detector.threshold_), 0.01,
                          key="threshold",
                          help="P(fake) at or above this is called fake. The default was "
                               "chosen on the validation split.")
    band = st.slider("Uncertain band (±)", 0.0, V.MAX_BAND, V.DEFAULT_BAND, 0.01, key="band",
                     help="Scores this close to the threshold are reported as uncertain "
                          "(`forensics scan --band`).")
if not uploads:
    st.stop()

files = {f"{i}:{u.name}": (u.name, u.getvalue()) for i, u in enumerate(uploads)}
from forensics import explain  # noqa: E402 - torch, for the evidence: once the page is drawn

# New work (an upload this session has not seen scored, or evidence of an image not yet shown)
# waits for a server-wide scoring turn; what is already done is drawn from the caches at once.
chosen_ident = st.session_state.get("inspect", next(iter(files)))
work = {(C.sha256_hex(data), key) for _, data in files.values()}
if chosen_ident in files:
    work.add((C.sha256_hex(files[chosen_ident][1]), key, "evidence"))
done = st.session_state.setdefault("done_work", set())
with ui.scoring_turn(cfg.scoring_slots) if work - done else contextlib.nullcontext():
    render_results(files, detector, key, threshold, band, cfg.limits)
done |= work
