"""The viewer page in real headless Chromium (Debian's, driven by Playwright): captions, notes updates, questions."""

from __future__ import annotations

import shutil

import pytest

from realtime.client import stream_audio
from tests.conftest import ARTIFACTS
from tests.speech import english

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
async def browser():
    playwright = pytest.importorskip("playwright.async_api")
    if not shutil.which("chromium"):
        pytest.skip("Debian chromium is not installed (make test installs it)")
    async with playwright.async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        await b.close()


async def test_viewer_shows_captions_notes_updates_and_answers(server, clips, browser):
    page = await browser.new_page(viewport={"width": 1300, "height": 800})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    await page.goto(f"{server.http}/?room=viewer-1")
    await page.wait_for_selector("text=connected")
    first, *more = english(clips)[:4]
    await stream_audio(server.url, "viewer-1", first.samples(), speed=0, language="en")
    await page.wait_for_selector("#bullets li")
    assert await page.locator(".final").count() >= 1
    assert "no LLM" in await page.locator("#notes-source").inner_text()
    version = int(await page.get_attribute("#notes", "data-version"))
    for clip in more:
        await stream_audio(server.url, "viewer-1", clip.samples(), speed=0, language="en")
    await page.wait_for_function(f"Number(document.querySelector('#notes').dataset.version) > {version}")
    finals = await page.locator(".final").all_inner_texts()
    assert len(finals) >= 4
    caption = finals[-1].split(maxsplit=1)[1]  # "0:00:12 text": ask about words the lecture really contains
    await page.fill("#question", f"What was said about {caption}?")
    await page.click("#ask button")
    await page.wait_for_function("document.querySelector('#answer').innerText.includes('[0:')")
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "viewer.png"))
    assert errors == []
    await page.close()
