"""Hostile uploads (issue 7, item 1, the app): every bad file in a batch is listed with its
reason and what to do while the rest are scored; nothing crashes or hangs. AppTest runs the
whole hostile corpus through the Verdict page in one batch; Chromium uploads a few bad files
next to a good one through the real file uploader."""

from __future__ import annotations

import mimetypes
import os
import stat

import pandas as pd
import pytest

from app_support import (CHROMIUM, CHROMIUM_ARGS, TIMEOUT, VERDICTS, app,  # noqa: F401
                         app_root, photo_png, require_chromium, served_app)
from crashsafe.images import DEFAULT_LIMITS, IMAGE_ERROR_ADVICE
from forensics import serving
from forensics import verdict as V
from hostile import HOSTILE_MAX_BYTES, png_bomb, write_hostile_corpus
import components as C

GOOD = "good_photo.png"
# 9000 x 9000 = 81 MP: over the app's 64 MP but under Pillow's own bomb warning (89 MP), so
# the app's limit is the one that refuses it (the corpus's bombs trip Pillow's first).
APP_PIXEL_BOMB = "bomb_81mp.png"
ADVICE_ENDINGS = tuple(f"{advice}." for advice in IMAGE_ERROR_ADVICE.values())
BROWSER_BAD = ["empty.png", "truncated_30.jpg", "random.webp", "bomb_ihdr.png"]


def upload_name(path: os.PathLike) -> str:
    """The name a browser sends: uploads carry text, so non-UTF-8 bytes become U+FFFD."""
    return os.fsencode(os.path.basename(path)).decode("utf-8", errors="replace")


@pytest.fixture(scope="module")
def hostile_uploads(tmp_path_factory) -> list[tuple[str, bytes, str, str]]:
    """``(name, bytes, expected, what)`` of every hostile entry a browser could upload.

    The FIFO (unreadable.png when running as root; a chmod 000 file otherwise), the symlinks
    and the folder are left out: a file picker can only send the bytes of a readable regular
    file, so those never reach the app (test_hostile_inputs covers them through the CLI).
    """
    folder = tmp_path_factory.mktemp("hostile_uploads")
    uploads = []
    for entry in write_hostile_corpus(folder):
        if stat.S_ISREG(os.lstat(entry.path).st_mode) and os.access(entry.path, os.R_OK):
            uploads.append((upload_name(entry.path), entry.path.read_bytes(), entry.expected,
                            entry.what))
    uploads.append((APP_PIXEL_BOMB, png_bomb(9000, 9000), "error", "PNG IHDR 9000x9000"))
    return uploads


def test_a_batch_of_every_hostile_upload_lists_each_refusal_and_scores_the_rest(
        app, monkeypatch, hostile_uploads):
    monkeypatch.setenv(serving.ENV_MAX_BYTES, str(HOSTILE_MAX_BYTES))  # over_byte_limit.png's limit
    batch = [(GOOD, photo_png(64), "image/png")] + [
        (name, data, mimetypes.guess_type(name)[0] or "application/octet-stream")
        for name, data, _, _ in hostile_uploads]
    app.file_uploader(key="uploads").set_value(batch).run(timeout=TIMEOUT)  # a hang fails here
    assert not app.exception
    # The limit as set (195.3 KB), not "0 MB" as whole megabytes would say.
    assert C.format_bytes(HOSTILE_MAX_BYTES) in app.file_uploader(key="uploads").help

    rows = app.dataframe[0].value.to_dict("records")
    assert [row["file"] for row in rows] == [name for name, _, _ in batch]  # all, in order
    good = rows.pop(0)
    assert good["verdict"] in V.VERDICTS and not good["error"]
    messages = {}  # file name -> its message (a fake verdict is an st.error too: skipped)
    for alert in app.error:
        name, said, _ = alert.value.partition("** could not be scored: ")
        if said:
            messages[name.removeprefix("**")] = alert.value
    refused = {}
    for row, (name, _, expected, what) in zip(rows, hostile_uploads):
        if expected == "ok":
            assert row["verdict"] != "error" and 0 <= row["p_fake"] <= 1, (what, row)
            assert not row["error"] and row["width"] >= 1, (what, row)
        else:
            assert row["verdict"] == "error" and pd.isna(row["p_fake"]), (what, row)
            assert row["error"].strip(), what  # the table says why ...
            assert row["error"].rstrip(".") in messages[name], what  # ... and so does the page,
            assert messages[name].endswith(ADVICE_ENDINGS), what  # + what to do
            refused[name] = row["error"]
    assert len(messages) == len(refused)  # no message for a file that was scored

    # The limits are named: the app's bytes and pixels, and Pillow's for the giant headers.
    assert refused["over_byte_limit.png"].endswith(
        f"over the limit of {C.format_bytes(HOSTILE_MAX_BYTES)}")
    assert "raise --max-bytes" in messages["over_byte_limit.png"]
    assert f"over the limit of {DEFAULT_LIMITS.max_pixels:,}" in refused[APP_PIXEL_BOMB]
    assert "raise --max-pixels" in messages[APP_PIXEL_BOMB]
    for bomb in ("bomb_ihdr.png", "bomb_screen.gif", "bomb_header.bmp", "bomb_tags.tif"):
        assert "decompression-bomb limit" in refused[bomb] and "exceeds limit of" in refused[bomb]

    # The evidence panels of every decodable file (1x1, 1xN, animated, CMYK, 16-bit, ...).
    inspect = app.selectbox(key="inspect")
    scored = [f"{i}:{name}" for i, (name, *_) in enumerate(batch)
              if i == 0 or hostile_uploads[i - 1][2] == "ok"]
    assert inspect.options == [ident.partition(":")[2] for ident in scored]
    for ident in scored:
        app.selectbox(key="inspect").set_value(ident).run(timeout=TIMEOUT)
        assert not app.exception, ident
        assert app.selectbox(key="inspect").value == ident
    print(f"\n{len(hostile_uploads)} hostile uploads in one batch with a good PNG: "
          f"{len(refused)} refused with a reason, {len(hostile_uploads) - len(refused)} scored")


@pytest.mark.slow
def test_chromium_lists_bad_uploads_next_to_the_good_ones_verdict(served_app, hostile_uploads,
                                                                  tmp_path):  # noqa: F811
    require_chromium()
    from playwright.sync_api import expect, sync_playwright

    by_name = {name: data for name, data, _, _ in hostile_uploads}
    paths = [tmp_path / GOOD]
    paths[0].write_bytes(photo_png(96))
    for name in BROWSER_BAD:
        paths.append(tmp_path / name)
        paths[-1].write_bytes(by_name[name])
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1600})
            page.goto(served_app)
            app = page.get_by_test_id("stApp")
            expect(app).to_have_attribute("data-test-script-state", "notRunning",
                                          timeout=60_000)
            page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(
                [str(p) for p in paths])
            expect(page.get_by_text(VERDICTS).first).to_be_visible(timeout=60_000)
            expect(app).to_have_attribute("data-test-script-state", "notRunning",
                                          timeout=60_000)
            alerts = page.get_by_test_id("stAlertContentError").filter(
                has_text="could not be scored")
            expect(alerts).to_have_count(len(BROWSER_BAD))
            texts = alerts.all_inner_texts()
            for name in BROWSER_BAD:
                said = [t.partition(f"{name} could not be scored: ")[2] for t in texts
                        if f"{name} could not be scored: " in t]  # after the icon's name
                assert len(said) == 1, (name, texts)
                assert len(said[0]) > 40, said  # a reason and what to do, not just the name
            assert "over Pillow's decompression-bomb limit" in " ".join(texts)
            expect(page.get_by_test_id("stException")).to_have_count(0)
            expect(page.get_by_text("P(fake)").first).to_be_visible()
        finally:
            browser.close()
