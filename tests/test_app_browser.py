"""End to end: `forensics app` served headless, driven in Debian's Chromium through Playwright."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

# CHROMIUM_ARGS, VERDICTS and served_app are imported from here by test_app_concurrency too.
from app_support import (CHROMIUM, CHROMIUM_ARGS, VERDICTS, photo_png,  # noqa: F401
                         require_chromium, served_app)

LEAD_SCREENSHOT = Path("/tmp/app_screenshot.png")


@pytest.mark.slow
def test_upload_shows_verdict_in_chromium(served_app, tmp_path):  # noqa: F811
    require_chromium()
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
