"""Model card page: what the loaded detector is, what it was trained on and how it scored."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import streamlit as st

import ui
from forensics.detectors import model_card

HEADLINE = (("ap", "Validation AP"), ("roc_auc", "Validation ROC-AUC"), ("eer", "Validation EER"))


@st.cache_data(show_spinner=False)
def card(folder: str, key: str) -> dict[str, Any]:
    """The bundle's model card (``forensics.detectors.card``), cached by bundle version."""
    return model_card(folder)


def plain_rows(data: dict[str, Any], name: str) -> pd.DataFrame:
    """The scalar entries of a dict as a two-column table (nested values left out)."""
    return pd.DataFrame([{name: k, "value": str(v)} for k, v in data.items()
                         if not isinstance(v, (dict, list))])


def render_card(data: dict[str, Any]) -> None:
    """One model card: headline figures, validation, training data, failure modes, internals."""
    validation = data.get("validation") or {}
    training = data.get("training") or {}
    cols = st.columns(2 + len(HEADLINE))
    cols[0].metric("Detector kind", data["kind"])
    cols[1].metric("Threshold", f"{data['threshold']:.3f}",
                   help="Chosen on the validation split; the Verdict page starts from it.")
    for col, (name, label) in zip(cols[2:], HEADLINE):
        value = validation.get(name)
        col.metric(label, "-" if value is None else f"{value:.3f}")

    left, right = st.columns(2)
    with left:
        st.markdown("##### Validation metrics")
        if validation:
            st.dataframe(plain_rows(validation, "metric"), hide_index=True, width="stretch")
        else:
            st.caption("Trained without a validation split, so there are no validation metrics.")
    with right:
        st.markdown("##### Training images")
        counts = training.get("counts") or {}
        if counts:
            st.bar_chart(pd.DataFrame(list(counts.items()), columns=["group", "images"]),
                         x="group", y="images", height=200, horizontal=True)
        st.dataframe(plain_rows(training, "field"), hide_index=True, width="stretch")
        for corpus in training.get("corpora", []):
            st.caption(f"corpus `{corpus}`")
    if data.get("known_failure_modes"):
        st.markdown("##### Known failure modes")
        st.markdown("\n".join(f"- {mode}" for mode in data["known_failure_modes"]))
    with st.expander("Preprocessing, parameters and calibration"):
        left, middle, right = st.columns(3)
        left.json(data.get("preprocessing") or {})
        middle.json(data.get("params") or {})
        right.json(data.get("calibration") or {})


cfg = ui.config()
st.title("Model card")
ui.detector(cfg.detector)  # validates the bundle, or says why it cannot be used
found = card(str(cfg.detector), ui.detector_key(cfg.detector))
st.caption(f"Bundle `{cfg.detector}`, written {found.get('created')} by gan-forensics "
           f"{found.get('library_version')}.")
render_card(found)
for name, member in (found.get("members") or {}).items():
    with st.expander(f"Member `{name}` ({member['kind']})"):
        render_card(member)
with st.expander("The whole card as JSON"):
    st.code(json.dumps(found, indent=2), language="json")
