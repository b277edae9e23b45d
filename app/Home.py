"""Entry point of the Streamlit app (``forensics app`` runs it): page set-up and navigation."""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

APP_DIR = str(Path(__file__).resolve().parent)
if APP_DIR not in sys.path:  # `streamlit run` adds it; AppTest does not
    sys.path.insert(0, APP_DIR)

import ui  # noqa: E402 - needs APP_DIR on sys.path

st.set_page_config(page_title="GAN forensics", page_icon=":material/policy:", layout="wide")

cfg = ui.config()
with st.sidebar:
    st.markdown("### GAN forensics")
    st.caption(f"Detector: `{cfg.detector}`  \nBrowsing: `{cfg.root}`  \n"
               "Runs locally: uploads stay in this process's memory.")

navigation = st.navigation([
    st.Page("pages/verdict.py", title="Verdict", icon=":material/image_search:", default=True),
    st.Page("pages/corpora.py", title="Corpora & runs", icon=":material/photo_library:"),
    st.Page("pages/robustness.py", title="Robustness", icon=":material/show_chart:"),
    st.Page("pages/model.py", title="Model card", icon=":material/description:"),
])
navigation.run()
