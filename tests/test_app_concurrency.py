"""Concurrent app users: several Chromium sessions upload different images to one `forensics app`.

One server, one browser, one independent browser context (so its own Streamlit session) per
user. Every page loads first; then all users upload at the same moment. Each must get its own
verdict, with no Streamlit exception and no cross-talk: a page shows its own file (card, evidence
caption, the single row of its batch table, with that file's SHA-256) and never another user's.
Prints a load figure: sessions, images, wall seconds, images per minute.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from app_support import APP_DIR, loaded_page  # noqa: F401 - APP_DIR: app/ on sys.path
from components import sha256_hex
from crashsafe.images import encode_png
from test_app_browser import CHROMIUM, CHROMIUM_ARGS, VERDICTS, served_app  # noqa: F401

# Different real photographs (scikit-image's bundled samples), one per simultaneous user.
PHOTOS = ["astronaut", "coffee", "chelsea", "rocket"]
SIZE = 128
TIMEOUT_MS = 60_000


def photo_upload(name: str, size: int = SIZE) -> bytes:
    """PNG bytes of a centre crop of one of scikit-image's bundled RGB photographs."""
    from skimage import data

    image = getattr(data, name)()
    top, left = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
    return encode_png(np.ascontiguousarray(image[top:top + size, left:left + size, :3]))


async def one_user(browser, url: str, image, others: list[str],
                   ready: asyncio.Barrier) -> dict:
    """A fresh context: load the app, upload ``image`` with everyone else, check its page."""
    from playwright.async_api import expect

    async with loaded_page(browser, url, TIMEOUT_MS) as page:
        app = page.get_by_test_id("stApp")
        dropzone = page.get_by_test_id("stFileUploaderDropzoneInput")
        await ready.wait()  # every session is loaded: upload all at once
        started = time.monotonic()
        await dropzone.set_input_files(str(image))
        verdict = page.get_by_text(VERDICTS).first
        await expect(verdict).to_be_visible(timeout=TIMEOUT_MS)
        await expect(app).to_have_attribute("data-test-script-state", "notRunning",
                                            timeout=TIMEOUT_MS)
        finished = time.monotonic()

        await expect(page.get_by_test_id("stException")).to_have_count(0)
        # Its own file in the evidence caption (name and size), drawn after the verdict: on a
        # loaded machine it can come later than expect's 5 s default...
        await expect(page.get_by_text(f"{image.name} ({SIZE}×{SIZE})")).to_be_visible(
            timeout=TIMEOUT_MS)
        # ...exactly one row in the batch table (header + 1), and that row is this upload...
        grid = page.get_by_test_id("stDataFrame").first.locator("table[role='grid']")
        await expect(grid).to_have_attribute("aria-rowcount", "2", timeout=TIMEOUT_MS)
        row = grid.locator("tr[aria-rowindex='2']")
        await expect(row).to_contain_text(image.name)
        await expect(row).to_contain_text(sha256_hex(image.read_bytes()))
        # ...and nobody else's file anywhere on the page.
        for other in others:
            await expect(page.get_by_text(other)).to_have_count(0)
        return {"name": image.name, "verdict": await verdict.inner_text(),
                "started": started, "finished": finished}


async def all_users(url: str, images: list) -> list[dict]:
    """One Chromium; every user concurrently in its own browser context."""
    from playwright.async_api import async_playwright

    names = [image.name for image in images]
    ready = asyncio.Barrier(len(images))
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM),
                                                   args=CHROMIUM_ARGS)
        try:
            return await asyncio.gather(*(
                one_user(browser, url, image, [n for n in names if n != image.name], ready)
                for image in images))
        finally:
            await browser.close()


@pytest.mark.slow
def test_concurrent_users_get_their_own_verdicts(served_app, tmp_path):  # noqa: F811
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: install it with `apt-get install -y chromium` "
                    "(.ci/run does this in CI); Playwright's own browser download is not used")
    images = []
    for photo in PHOTOS:
        path = tmp_path / f"user_{photo}.png"
        path.write_bytes(photo_upload(photo))
        images.append(path)
    assert len({sha256_hex(p.read_bytes()) for p in images}) == len(images)

    pages = asyncio.run(all_users(served_app, images))

    assert [p["name"] for p in pages] == [image.name for image in images]
    wall = max(p["finished"] for p in pages) - min(p["started"] for p in pages)
    for p in pages:
        print(f"{p['name']}: {p['verdict']} in {p['finished'] - p['started']:.1f} s")
    print(f"load: {len(pages)} sessions, {len(images)} images at once, {wall:.1f} s wall "
          f"(uploads to last verdict), {len(images) / wall * 60:.1f} images/min")
