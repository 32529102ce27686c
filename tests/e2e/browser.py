"""Real headless Chromium for the page tests: Debian's `chromium` driven by Playwright (no browser download).

Microphone tests launch their own browser because the fake microphone's WAV file is a launch argument; it plays
once, in real time, from the moment the page opens the device (`%noloop`), then gives silence.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BASE_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required"]
FAKE_UI = "--use-fake-ui-for-media-stream"  # grant the microphone without a prompt
FAKE_DEVICE = "--use-fake-device-for-media-stream"


def mic_args(wav: Path) -> list[str]:
    """A fake microphone that plays `wav` once (16-bit PCM; Chromium hands it out as 44.1 kHz stereo)."""
    return [FAKE_UI, FAKE_DEVICE, f"--use-file-for-fake-audio-capture={wav.resolve()}%noloop"]


@contextlib.asynccontextmanager
async def chromium(*args: str) -> AsyncIterator:
    playwright = pytest.importorskip("playwright.async_api")
    if not shutil.which("chromium"):
        pytest.skip("Debian chromium is not installed (make test installs it)")
    async with playwright.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=[*BASE_ARGS, *args])
        try:
            yield browser
        finally:
            await browser.close()


class ConsoleErrors(list):
    """Console errors and uncaught exceptions of the pages it watches; tests assert it stays empty."""

    def watch(self, page, name: str) -> None:
        page.on("console", lambda m: self.append(f"{name}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.append(f"{name}: {e}"))


async def wait_js(page, expression: str, timeout_s: float = 30.0) -> None:
    """Wait until a JS expression is true in the page. Not `page.wait_for_function`: it eval()s its predicate on
    every poll, which the pages' CSP (no 'unsafe-eval') refuses; here it is compiled once, by DevTools' own
    evaluation (which CSP does not govern), and polled in the page."""
    poll = f"new Promise((done) => {{ const p = () => ({expression}) ? done(true) : setTimeout(p, 50); p(); }})"
    await asyncio.wait_for(page.evaluate(poll), timeout_s)


# Records every widget event with the wall-clock time it was rendered (the widget renders synchronously first).
RECORD_EVENTS = """
window.__events = [];
document.addEventListener("realtime-event", (e) => window.__events.push({...e.detail, wall_ms: Date.now()}));
"""

HOST_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Course site</title>
<link rel="icon" href="data:,">
<style>/* hostile host styles: none of this may reach the widget */
* { color: red !important; font-family: serif !important; } p { font-size: 40px; background: yellow; }
body { margin: 2rem; max-width: 60rem; }</style></head>
<body><h1>Physics 101 — week 3</h1><p>Live captions below.</p>
<script src="{server}/static/widget.js" data-room="{room}" data-mode="both" data-height="26rem"
        data-lang-label="EN" async></script>
</body></html>"""


@contextlib.asynccontextmanager
async def host_site(port: int, server_http: str, room: str) -> AsyncIterator[None]:
    """Another web site (its own port, hence its own origin) that embeds the widget with one script tag."""
    app = web.Application()
    html = HOST_PAGE.replace("{server}", server_http).replace("{room}", room)
    async def page(_: web.Request) -> web.Response:
        return web.Response(text=html, content_type="text/html")

    app.router.add_get("/", page)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield
    finally:
        await runner.cleanup()
