"""End to end: `forensics app` served headless, driven in Debian's Chromium through Playwright."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from app_support import photo_png, shared_app_root

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
LEAD_SCREENSHOT = Path("/tmp/app_screenshot.png")
VERDICTS = re.compile(r"Likely generated \(FAKE\)|Likely real \(REAL\)|UNCERTAIN|UNSURE")


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


@pytest.fixture(scope="module")
def served_app(tmp_path_factory):
    """URL of `forensics app --detector B --port P --root R` running in the background."""
    root, bundle = shared_app_root(tmp_path_factory.getbasetemp())
    port = free_port()
    forensics = Path(sys.executable).with_name("forensics")
    server = subprocess.Popen(
        [str(forensics), "app", "--detector", str(bundle), "--port", str(port), "--root",
         str(root)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, server)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.mark.slow
def test_upload_shows_verdict_in_chromium(served_app, tmp_path):
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: install it with `apt-get install -y chromium` "
                    "(.ci/run does this in CI); Playwright's own browser download is not used")
    from playwright.sync_api import expect, sync_playwright

    image = tmp_path / "coffee.png"
    image.write_bytes(photo_png(160))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1600})
            page.goto(served_app)
            expect(page.get_by_test_id("stApp")).to_have_attribute(
                "data-test-script-state", "notRunning", timeout=60_000)
            page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(str(image))
            verdict = page.get_by_text(VERDICTS).first
            expect(verdict).to_be_visible(timeout=60_000)
            expect(page.get_by_text("P(fake)").first).to_be_visible()
            expect(page.get_by_role("tab", name="Azimuthal spectrum")).to_be_visible()
            expect(page.get_by_test_id("stApp")).to_have_attribute(
                "data-test-script-state", "notRunning", timeout=60_000)
            assert VERDICTS.search(verdict.inner_text())
            for picture in page.get_by_test_id("stImage").locator("img").all():
                expect(picture).to_have_js_property("complete", True)
            shot = tmp_path / "verdict.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    shutil.copyfile(shot, LEAD_SCREENSHOT)
    assert shot.stat().st_size > 10_000
