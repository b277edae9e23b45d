"""Entry point of the Streamlit app (``forensics app`` runs it): page set-up and navigation."""

from __future__ import annotations

import streamlit as st

import ui  # `streamlit run` puts the script's folder first on the module search path

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
