"""Streamlit glue shared by the pages: cached loaders and small layout helpers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import streamlit as st

import components
from forensics.serving import AppConfig, folder_stamp
from scoring_queue import ScoringQueue

if TYPE_CHECKING:  # the detectors import sklearn and torch: loaded under detector()'s spinner
    from forensics.detectors import Detector


def config() -> AppConfig:
    """The app's configuration (from the environment ``forensics app`` sets)."""
    return AppConfig.from_env()


@st.cache_resource(show_spinner=False)  # detector() shows which bundle is loading
def _load(folder: str, key: str) -> Detector:
    """The detector of a bundle; a new ``key`` (see ``detector_key``) reloads a rewritten one."""
    from forensics.detectors import load_detector
    from crashsafe.runtime import keep_freed_memory

    keep_freed_memory()  # once per process: CNN layers then reuse freed memory
    return load_detector(folder)


def detector_key(folder: Path) -> str:
    """Identifies a bundle's current contents: its path and its files' latest modification."""
    return f"{folder.resolve()}@{folder_stamp(folder)}"


def detector(folder: Path) -> Detector:
    """The cached detector of ``folder``, loaded behind a spinner that names it (the first load
    imports torch and can take seconds, so pages draw their text before calling this); for a
    missing or broken bundle: why, then stop."""
    if not folder.is_dir():
        st.error(f"No detector bundle at `{folder}`. Start the app with "
                 "`forensics app --detector BUNDLE`, or plain `forensics app` to train the demo's.")
        st.stop()
    with st.spinner(f"Loading detector {folder}…"):
        from forensics.detectors import BundleError  # with sklearn: only under the spinner

        try:
            return _load(str(folder.resolve()), detector_key(folder))
        except BundleError as exc:
            st.error(f"{exc}, or pick another bundle.")  # the error already says what to do
            st.stop()


def how_to_read(text: str) -> None:
    """The collapsible help that opens every evidence panel."""
    with st.expander("How to read this"):
        st.markdown(text)


def pick_folder(label: str, root: Path, accept: Callable[[Path], bool],
                key: str) -> Path | None:
    """A select box of folders under ``root`` that ``accept``; None (with a note) when none."""
    choices = components.find_folders(root, accept)
    if not choices:
        st.info(f"No {label} found under `{root}`. Start the app with `--root` pointing at "
                "the folder that holds them.")
        return None
    relative = st.selectbox(label.capitalize(), choices, key=key,
                            format_func=lambda c: c if c != "." else "(root)")
    return components.resolve_under(root, relative)


@st.cache_resource(show_spinner=False)
def _scoring_queue(slots: int) -> ScoringQueue:
    """The one queue every session of this server shares."""
    return ScoringQueue(slots)


@contextmanager
def scoring_turn(slots: int) -> Iterator[None]:
    """Hold one of the server's ``slots`` scoring turns for the block; while waiting, tell the
    user their place in the queue (a message, not a crash, when many upload at once)."""
    notice = st.empty()

    def report(position: int) -> None:
        notice.info(f"Busy: other uploads are being scored. You are number {position} in the "
                    "queue; your results follow as soon as it is your turn.",
                    icon=":material/hourglass_top:")

    with _scoring_queue(slots).turn(report):
        notice.empty()
        yield
