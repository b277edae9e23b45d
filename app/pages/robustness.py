"""Robustness page: how detection metrics fall as images degrade (``forensics.report`` output)."""

from __future__ import annotations

from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

import components as C
import ui
from forensics.report import BALANCED_BAR, THRESHOLD_METRIC, breaking_points
from forensics.robustness_results import RobustnessResults
from forensics.scan_results import results_csv

EACH = "(each)"  # no filter: one line per value


@st.cache_data(show_spinner=False, max_entries=16)
def metrics(folder: str, stamp: float) -> pd.DataFrame:
    """A robustness folder's metrics table; ``stamp`` (its mtime) rereads a rewritten one."""
    return pd.DataFrame(RobustnessResults(Path(folder)).metrics())


def choice(table: pd.DataFrame, column: str, slot, each: bool = True) -> str | None:
    """A select box over a column's values (with EACH first when ``each`` and there are several).

    Returns None for EACH or when the table has no such column.
    """
    if column not in table:
        return None
    values = sorted(table[column].astype(str).unique())
    options = [EACH, *values] if each and len(values) > 1 else values
    picked = slot.selectbox(column.capitalize(), options, key=f"robust_{column}")
    return None if picked == EACH else picked


cfg = ui.config()
st.title("Robustness")
st.caption("Detection quality against JPEG, blur, resizing, noise and cropping, per generator, "
           f"from `forensics robustness` output folders. Only folders under `{cfg.root}` can "
           "be opened.")
folder = ui.pick_folder("robustness results", cfg.root, RobustnessResults.is_results,
                        key="robust_dir")
if folder is None:
    st.stop()
results = RobustnessResults(folder)
path = results.metrics_path
table = metrics(str(folder), path.stat().st_mtime)
measures = C.metric_columns(table)
if not measures:
    st.error(f"`{path.name}` has no numeric metric columns.")
    st.stop()

cols = st.columns(5)
detector = choice(table, "detector", cols[0])
generator = choice(table, "generator", cols[1])
family = choice(table, "family", cols[2], each=False)  # one family: one meaning of "level"
measure = cols[3].selectbox("Metric", measures, key="robust_metric",
                            index=measures.index("ap") if "ap" in measures else 0)
below = cols[4].slider("Breaks below", 0.5, 1.0, 0.8, 0.01, key="robust_below",
                       help="The value under which a detector counts as broken.")
rows = C.select_rows(table, detector=detector, generator=generator, family=family)

curve = rows.dropna(subset=["level"]) if "level" in rows else rows.iloc[0:0]
if len(curve):
    series = next((c for c in ("generator", "detector", "family")
                   if c in curve and curve[c].nunique() > 1), None)
    # Grids list levels from mild to strong (JPEG 100 -> 30, blur 0 -> 4): keep that order.
    levels = curve["level"].tolist()
    encoding = {"x": alt.X("level:Q", title=f"{family or 'perturbation'} level (mild → strong)",
                           scale=alt.Scale(reverse=levels[0] > levels[-1])),
                "y": alt.Y(f"{measure}:Q", title=measure, scale=alt.Scale(zero=False)),
                "tooltip": [c for c in ("detector", "generator", "perturbation", "level",
                                        measure) if c in curve]}
    if series:
        encoding["color"] = alt.Color(f"{series}:N")
    lines = alt.Chart(curve).mark_line(point=True).encode(**encoding)
    rule = alt.Chart(pd.DataFrame({"y": [below]})).mark_rule(strokeDash=[4, 4],
                                                            color="grey").encode(y="y:Q")
    st.altair_chart((lines + rule).properties(height=360).interactive(), width="stretch")

# Sentences for one generator: the chosen one, else the pooled "all" rows the report writes.
named = generator or ("all" if "all" in set(table.get("generator", [])) else None)
if {"detector", "generator", "family", "level"} <= set(rows.columns) and named:
    # As in the report, balanced accuracy at the saved threshold has a bar of its own too: the
    # chosen measure (AP) can stay high while every fake falls below the threshold.
    bars = {measure: below}
    if THRESHOLD_METRIC in rows:
        bars.setdefault(THRESHOLD_METRIC, BALANCED_BAR)
    points = breaking_points(C.metric_records(rows), bars, named)
    if points:
        st.markdown(f"**Where it breaks** (generator {named}; bars: "
                    + ", ".join(f"{m} {bar:g}" for m, bar in bars.items()) + ")")
        st.markdown("\n".join(f"- {':red[**broken**] · ' if p['broken_by'] else ''}"
                              f"`{p['detector']}` · {p['text']}" for p in points))
st.dataframe(rows, hide_index=True, width="stretch")
st.download_button("Download these rows (CSV)",
                   results_csv(C.metric_records(rows), list(rows.columns)), "robustness.csv",
                   "text/csv", icon=":material/download:", on_click="ignore")

plots = results.plots()
if plots:
    with st.expander(f"Saved plots ({len(plots)})"):
        for plot in plots:
            st.image(str(plot), caption=plot.name)
