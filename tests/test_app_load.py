"""The app under load: six Chromium sessions upload large images at the same moment to one
`forensics app --scoring-slots 1` serving the shipped general detector.

Every session must end with its verdict (the queue delays, never drops), the waiting ones must
have been told their place in the queue, no page may show a Streamlit exception, and the server
must still answer its health check afterwards. Prints the figures the README's limits table
cites: images, megapixels, wall time, the server's peak RSS.

CI runs it at 1 MP an image; ``FORENSICS_LOAD_MP=40`` runs the issue's size (minutes).
"""

from __future__ import annotations

import asyncio
import math
import os
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

from app_support import (CHROMIUM, CHROMIUM_ARGS, VERDICTS, loaded_page,  # noqa: F401
                         require_chromium, serving)

SESSIONS = 6
MEGAPIXELS = float(os.environ.get("FORENSICS_LOAD_MP", "1"))
TIMEOUT_MS = int(max(180, 45 * MEGAPIXELS) * 1000)
BUSY = "You are number"


def large_photos(folder, n: int, megapixels: float) -> list:
    """``n`` different JPEGs (quality 90) of about ``megapixels`` each: bundled photos cut and
    enlarged (content matters little for the load, size does)."""
    from forensics.bundled import SOURCE_PHOTOS
    from crashsafe.images import load_image
    from forensics.perturb import resize

    side = int(math.sqrt(megapixels * 1e6))
    photos = [load_image(p.path()) for p in SOURCE_PHOTOS]
    paths = []
    for i in range(n):
        photo = photos[i % len(photos)]
        big = resize(photo, side / min(photo.shape[:2]) * 1.01, "bicubic", check=False)
        path = folder / f"load_{i}.jpg"
        Image.fromarray(np.ascontiguousarray(big[:side, :side])).save(path, quality=90)
        paths.append(path)
    return paths


async def one_user(browser, url: str, image, ready: asyncio.Barrier) -> dict:
    """Load the app, upload with everyone else, wait for the verdict; note any queue notice."""
    from playwright.async_api import expect

    async with loaded_page(browser, url, TIMEOUT_MS) as page:
        app = page.get_by_test_id("stApp")
        await ready.wait()
        started = time.monotonic()
        await page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(str(image))
        told_place = False
        verdict = page.get_by_text(VERDICTS).first
        while not await verdict.is_visible():
            told_place = told_place or await page.get_by_text(BUSY).count() > 0
            assert time.monotonic() - started < TIMEOUT_MS / 1000, f"{image.name}: no verdict"
            await asyncio.sleep(0.2)  # polling a page that another session's turn holds up
        await expect(app).to_have_attribute("data-test-script-state", "notRunning",
                                            timeout=TIMEOUT_MS)
        await expect(page.get_by_test_id("stException")).to_have_count(0)
        return {"name": image.name, "verdict": await verdict.inner_text(),
                "told_place": told_place, "seconds": time.monotonic() - started}


async def all_users(url: str, images: list) -> list[dict]:
    from playwright.async_api import async_playwright

    ready = asyncio.Barrier(len(images))
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM),
                                                   args=CHROMIUM_ARGS)
        try:
            return await asyncio.gather(*(one_user(browser, url, image, ready)
                                          for image in images))
        finally:
            await browser.close()


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM), in MB."""
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


@pytest.mark.slow
def test_six_sessions_uploading_large_images_at_once_all_get_their_verdicts(tmp_path):
    require_chromium()
    images = large_photos(tmp_path, SESSIONS, MEGAPIXELS)
    with serving("--root", str(tmp_path), "--scoring-slots", "1") as (url, server):
        start = time.monotonic()
        pages = asyncio.run(all_users(url, images))
        wall = time.monotonic() - start
        assert server.poll() is None, "the server died under load"
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=10) as response:
            assert response.read().decode() == "ok"
        peak = peak_rss_mb(server.pid)

    assert sorted(p["name"] for p in pages) == sorted(i.name for i in images)
    # One slot for six simultaneous uploads: whoever did not go first waited and was told so.
    assert sum(p["told_place"] for p in pages) >= 1, pages
    for p in pages:
        print(f"{p['name']}: {p['verdict']} after {p['seconds']:.1f} s"
              f"{' (was told its place in the queue)' if p['told_place'] else ''}")
    print(f"load: {SESSIONS} sessions, {MEGAPIXELS:g} MP JPEGs at once, 1 scoring slot, "
          f"{wall:.1f} s wall, server peak RSS {peak:.0f} MB")
