"""A small root for the app tests: two tiny corpora, a spectral bundle, a run, an evaluation and
robustness results.

Built in a couple of seconds: 32 px patches of the bundled photos as the real images and
nearest-neighbour upsampled noise (the periodic trace GAN upsampling leaves) as the fakes; the
run and the evaluation are written by `forensics zoo train` and `forensics evaluate` themselves.
Also the fixtures the app tests share (import them by name): ``app_root`` and ``app`` (an
AppTest of the whole app on that root) and ``served_app`` (`forensics app` in the background,
for the Chromium tests).
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import numpy as np
import pytest

from crashsafe.images import encode_png, save_png
from forensics.bundled import write_bundled_corpus
from forensics.cli import main as cli_main
from forensics.training import train_detector

APP_DIR = Path(__file__).resolve().parent.parent / "app"
if str(APP_DIR) not in sys.path:
    sys.path.insert(0, str(APP_DIR))


def upsampled_noise(rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """A fake-looking RGB uint8 image: smooth noise at half size, doubled by pixel repetition."""
    small = rng.integers(0, 256, (size // 2, size // 2, 3)).astype(np.float64)
    small = (small + np.roll(small, 1, 0) + np.roll(small, 1, 1)) / 3
    return np.repeat(np.repeat(small, 2, 0), 2, 1).astype(np.uint8)


def photo_png(size: int = 96) -> bytes:
    """PNG bytes of a real photograph crop (scikit-image's coffee, never in the training set)."""
    from skimage import data

    return encode_png(np.ascontiguousarray(data.coffee()[100:100 + size, 200:200 + size]))


# An ensemble of the spectral detector and a tiny untrained-backbone CNN: per-member scores and
# Grad-CAM without the cost of a real backbone.
ENSEMBLE = {"members": [
    {"name": "spectral", "kind": "spectral", "params": {"n_bins": 32}},
    {"name": "cnn", "kind": "cnn", "params": {
        "backbone": "test_efficientnet", "pretrained": False, "crop_size": 32, "epochs": 1,
        "steps_per_epoch": 2, "batch_size": 8, "progress": False}},
]}
_SHARED: dict[Path, Path] = {}
TINY_DCGAN = {"resolution": 32, "nz": 16, "ngf": 8, "ndf": 8, "batch_size": 8}


def shared_app_root(base: Path) -> tuple[Path, Path]:
    """``(root, bundle)`` of an ensemble app root under ``base``, built once per process."""
    root = base / "app_root"
    if root not in _SHARED:
        root.mkdir()
        _SHARED[root] = build_app_root(root, ensemble=True)
    return root, _SHARED[root]


def train_tiny_run(run: Path, data: Path) -> Path:
    """A 3-step 32 px DCGAN run folder trained on ``data`` by `forensics zoo train` itself."""
    settings = [arg for key, value in TINY_DCGAN.items() for arg in ("--set", f"{key}={value}")]
    assert cli_main(["zoo", "train", "dcgan", "--data", str(data), "--out", str(run),
                     "--steps", "3", "--device", "cpu", "-q", *settings]) == 0
    return run


def build_app_root(root: Path, ensemble: bool = False) -> Path:
    """Write the test root and return the path of its detector bundle (``root/detector``).

    The bundle is a spectral detector, or with ``ensemble`` the ENSEMBLE of spectral and CNN.
    """
    write_bundled_corpus(root / "real32", size=32, count=90, seed=0)
    rng = np.random.default_rng(0)
    for i in range(90):
        save_png(upsampled_noise(rng), root / "fake_nn" / "fake" / "nn_upsample" / f"{i:03d}.png")
    bundle = root / "detector"
    kind, params = ("ensemble", ENSEMBLE) if ensemble else ("spectral", {"n_bins": 32})
    train_detector(kind, [root / "real32", root / "fake_nn"], bundle, params=params,
                   progress=False)

    train_tiny_run(root / "gan_run", root / "real32")
    assert cli_main(["evaluate", "--detector", str(bundle), "--corpus", str(root / "real32"),
                     str(root / "fake_nn"), "--bootstrap", "0", "--out",
                     str(root / "evaluation" / "evaluation.json"), "-q"]) == 0

    robust = root / "robustness"
    rows = ["detector,generator,family,perturbation,level,ap,roc_auc,accuracy,"
            "balanced_accuracy,fake_accuracy,real_accuracy"]
    # From JPEG 90 on, every fake falls below the saved threshold while AP still ranks well.
    for gen in ("nn_upsample", "dcgan"):
        for q, ap, fake in ((100, 0.99, 0.9), (90, 0.9, 0.0), (70, 0.7, 0.0)):
            rows.append(f"spectral,{gen},jpeg_pil,jpeg_pil/q={q},{q},{ap},{ap},{ap - 0.05},"
                        f"{(fake + 1) / 2},{fake},1.0")
        for s, ap in ((1.0, 0.99), (0.5, 0.6)):
            rows.append(f"spectral,{gen},resize,resize/scale={s},{s},{ap},{ap},{ap - 0.1},"
                        f"{ap},{ap},{ap}")
    robust.mkdir()
    (robust / "metrics.csv").write_text("\n".join(rows) + "\n")
    return bundle


# --- fixtures shared by the app tests ---------------------------------------------------------

TIMEOUT = 90  # seconds per AppTest script run: generous for busy 2-core machines
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
VERDICTS = re.compile(r"Likely generated \(FAKE\)|Likely real \(REAL\)|UNCERTAIN|UNSURE")


@pytest.fixture(scope="module")
def app_root(tmp_path_factory):
    """Root folder with corpora, a run, robustness results and an ensemble bundle."""
    return shared_app_root(tmp_path_factory.getbasetemp())


@pytest.fixture
def app(app_root, monkeypatch):
    """A fresh AppTest of the app on the test root, with Streamlit's caches emptied."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from forensics import serving

    root, bundle = app_root
    monkeypatch.setenv(serving.ENV_DETECTOR, str(bundle))
    monkeypatch.setenv(serving.ENV_ROOT, str(root))
    st.cache_resource.clear()
    st.cache_data.clear()
    at = AppTest.from_file(str(APP_DIR / "Home.py"), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception
    return at


def require_chromium() -> None:
    """Fail with what to do when Debian's Chromium is missing (Playwright's download is unused)."""
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: install it with `apt-get install -y chromium` "
                    "(.ci/run does this in CI); Playwright's own browser download is not used")


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, server: subprocess.Popen, timeout: float = 90) -> None:
    """Poll Streamlit's health endpoint until it answers "ok" (or the server dies)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"`forensics app` exited with {server.returncode}:\n"
                                 f"{server.stdout.read()}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read().decode() == "ok":
                    return
        except OSError:
            pass
        time.sleep(0.25)  # polling a server that is starting, not waiting on the page
    raise AssertionError(f"the app did not become healthy within {timeout} s")


@contextmanager
def serving(*args: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """`forensics app ARGS --port P` in the background: its URL once healthy, and the server
    process (`forensics app` becomes the Streamlit server, so its pid is the server's)."""
    port = free_port()
    forensics = Path(sys.executable).with_name("forensics")
    server = subprocess.Popen([str(forensics), "app", *args, "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, server)
        yield url, server
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.fixture(scope="module")
def served_app(tmp_path_factory):
    """URL of `forensics app --detector B --port P --root R` running in the background."""
    root, bundle = shared_app_root(tmp_path_factory.getbasetemp())
    with serving("--detector", str(bundle), "--root", str(root)) as (url, _):
        yield url


@asynccontextmanager
async def loaded_page(browser, url: str, timeout_ms: int) -> AsyncIterator:
    """A fresh browser context (so its own Streamlit session) on the app, once its first run
    has finished; closed afterwards."""
    from playwright.async_api import expect

    context = await browser.new_context(viewport={"width": 1400, "height": 1600})
    try:
        page = await context.new_page()
        await page.goto(url)
        await expect(page.get_by_test_id("stApp")).to_have_attribute(
            "data-test-script-state", "notRunning", timeout=timeout_ms)
        yield page
    finally:
        await context.close()
