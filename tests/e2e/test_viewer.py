"""The viewer page in real headless Chromium: captions and notes through the widget, display controls,
auto-scroll with "jump to live", transcript download, questions."""

from __future__ import annotations

import pytest

from realtime.client import stream_audio
from testbed.server import ARTIFACTS
from testbed.speech import english
from tests.e2e.browser import RECORD_EVENTS, ConsoleErrors, chromium, wait_js

pytestmark = pytest.mark.slow
FONT_SIZE = "(e) => parseFloat(getComputedStyle(e).fontSize)"


async def test_viewer_shows_captions_notes_updates_and_answers(server, clips):
    errors = ConsoleErrors()
    async with chromium() as browser:
        page = await browser.new_page(viewport={"width": 1300, "height": 800})
        errors.watch(page, "viewer")
        await page.add_init_script(RECORD_EVENTS)
        await page.goto(f"{server.http}/?room=viewer-1")
        await page.locator("realtime-captions >> text=connected").wait_for()
        first, *more = english(clips)[:4]
        await stream_audio(server.url, "viewer-1", first.samples(), speed=0, language="en")
        await page.locator("realtime-captions .bullets li").first.wait_for()
        assert "no LLM" in await page.locator("realtime-captions .source").inner_text()
        version = await page.evaluate("Math.max(...window.__events.filter((e) => e.type === 'notes')"
                                      ".map((e) => e.version))")
        for clip in more:
            await stream_audio(server.url, "viewer-1", clip.samples(), speed=0, language="en")
        await wait_js(page, f"window.__events.some((e) => e.type === 'notes' && e.version > {version})")
        finals = await page.locator("realtime-captions .final").all_inner_texts()
        assert len(finals) >= 4

        # Display controls: larger text, dark theme; both remembered across a reload.
        size = await page.locator("realtime-captions .scroll").evaluate(FONT_SIZE)
        await page.click("#larger")
        await page.click("#theme")
        await page.reload()
        await page.locator("realtime-captions .final").first.wait_for()  # late join: the lecture so far
        assert await page.locator("realtime-captions .final").count() == len(finals)
        bigger = await page.locator("realtime-captions .scroll").evaluate(FONT_SIZE)
        assert bigger > size
        assert await page.get_attribute("realtime-captions", "theme") in ("dark", "light")

        # Scrolling up pauses auto-scroll and offers "jump to live", which returns to the end.
        await page.set_viewport_size({"width": 900, "height": 420})
        await page.locator("realtime-captions .scroll").evaluate("(e) => { e.scrollTop = 0; }")
        jump = page.locator("realtime-captions .jump")
        await jump.wait_for(state="visible")
        await jump.click()
        await jump.wait_for(state="hidden")
        at_end = await page.locator("realtime-captions .scroll").evaluate(
            "(e) => e.scrollHeight - e.scrollTop - e.clientHeight < 48")
        assert at_end

        async with page.expect_download() as download:
            await page.click("#download")
        text = (await (await download.value).path()).read_text()
        assert len(text.splitlines()) == len(finals) and text.startswith("[0:00:")

        caption = finals[-1].split(maxsplit=1)[1]  # "0:00:12 text": ask about words the lecture really contains
        await page.fill("#question", f"What was said about {caption}?")
        await page.click("#ask button")
        await wait_js(page, "document.querySelector('#answer').innerText.includes('[0:')")
        await page.set_viewport_size({"width": 1300, "height": 800})
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "viewer-notes.png"))
    assert errors == []
