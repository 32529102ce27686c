"""Security headers of a real server: nosniff and no referrer everywhere, a strict CSP that forbids framing on the
two pages; in real Chromium the pages run under that CSP without a violation, and another site cannot frame them."""

from __future__ import annotations

import contextlib
import urllib.error
import urllib.request
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from realtime.server.headers import CSP
from testbed.server import free_port
from tests.e2e.browser import FAKE_DEVICE, FAKE_UI, ConsoleErrors, chromium, wait_js

pytestmark = pytest.mark.slow

EXPECTED_CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                "connect-src 'self'; media-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; "
                "frame-ancestors 'none'")
PAGE_ONLY = ("Content-Security-Policy", "X-Frame-Options")

# Every CSP violation of the page (documents, shadow roots and worklets report to the document).
RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation",
  (e) => window.__violations.push(`${e.violatedDirective} ${e.blockedURI}`), true);
"""


def head(url: str) -> tuple[int, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, dict(r.headers)
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers)


def test_the_policy_is_the_one_reviewed():
    assert CSP == EXPECTED_CSP


@pytest.mark.parametrize(("path", "status", "page"), [
    ("/", 200, True), ("/?room=x", 200, True), ("/speak", 200, True), ("/static/index.html", 200, True),
    ("/static/widget.js", 200, False), ("/static/viewer.js", 200, False), ("/static/pcm-worklet.js", 200, False),
    ("/healthz", 200, False), ("/no-such-page", 404, False), ("/static/no-such-file.js", 404, False),
    ("/v1/rooms/no-such-room/transcript", 404, False),
])
def test_headers_on_every_answer(server, path, status, page):
    got, headers = head(server.http + path)
    assert got == status, (path, got)
    assert headers.get("X-Content-Type-Options") == "nosniff", (path, headers)
    assert headers.get("Referrer-Policy") == "no-referrer", (path, headers)
    if page:
        assert headers.get("Content-Type", "").startswith("text/html"), headers
        assert headers.get("Content-Security-Policy") == EXPECTED_CSP
        assert headers.get("X-Frame-Options") == "DENY"
    else:
        assert not any(name in headers for name in PAGE_ONLY), (path, headers)
    if status == 200 and path.endswith(".js"):  # other sites embed the widget with <script src>: nothing may stop that
        assert "javascript" in headers.get("Content-Type", ""), headers
        assert "Cross-Origin-Resource-Policy" not in headers and "Cross-Origin-Embedder-Policy" not in headers


async def test_pages_run_under_the_policy(server):
    errors = ConsoleErrors()
    async with chromium(FAKE_UI, FAKE_DEVICE) as browser:
        # The lecturer page: its scripts, the AudioWorklet module and its own WebSocket all load under the CSP.
        speak = await browser.new_page()
        errors.watch(speak, "speak")
        await speak.add_init_script(RECORD_VIOLATIONS)
        await speak.goto(f"{server.http}/speak?room=csp-x")
        await speak.click("#go")
        await speak.locator("#conn", has_text="live").wait_for(timeout=30000)
        await wait_js(speak, "realtimeSpeaker.capturedBytes > 16000")  # the worklet runs
        await speak.click("#go")
        await speak.locator("#conn", has_text="stopped").wait_for(timeout=30000)

        # The viewer: viewer.js ran (the ask form is shown), the widget rendered and its WebSocket connected.
        viewer = await browser.new_page()
        errors.watch(viewer, "viewer")
        await viewer.add_init_script(RECORD_VIOLATIONS)
        await viewer.goto(f"{server.http}/?room=csp-x")
        await viewer.locator("realtime-captions >> text=connected").wait_for()
        await viewer.locator("#ask #question").wait_for()
        assert await viewer.locator("#ask").is_visible()
        assert await viewer.title() == "csp-x — realtime live captions"
        await viewer.click("#larger")  # the display controls' handlers are attached
        assert await viewer.get_attribute("realtime-captions", "font-size") == "2rem"
        async with viewer.expect_download() as download:  # a blob: download is not blocked
            await viewer.click("#download")
        assert (await download.value).suggested_filename == "csp-x-transcript.txt"

        for page in (speak, viewer):
            assert await page.evaluate("window.__violations") == []
    assert not [e for e in errors if "Content Security Policy" in e], errors
    assert errors == []


FRAMING_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Framing site</title>
<link rel="icon" href="data:,"></head><body>
<iframe id="speak" src="{server}/speak?room=csp-frame" width="800" height="600"></iframe>
<iframe id="viewer" src="{server}/?room=csp-frame" width="800" height="600"></iframe>
<iframe id="control" src="{server}/healthz" width="400" height="200"></iframe>
</body></html>"""


@contextlib.asynccontextmanager
async def framing_site(port: int, server_http: str) -> AsyncIterator[None]:
    """Another origin (its own port) whose page puts the lecturer page and the viewer in frames."""
    app = web.Application()
    html = FRAMING_PAGE.replace("{server}", server_http)

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


async def test_other_sites_cannot_frame_the_pages(server):
    port = free_port()
    messages: list[str] = []
    async with framing_site(port, server.http), chromium() as browser:
        page = await browser.new_page()
        page.on("console", lambda m: messages.append(m.text))
        await page.goto(f"http://127.0.0.1:{port}/")
        await page.wait_for_load_state("load")
        frames = {await (await f.frame_element()).get_attribute("id"): f for f in page.main_frame.child_frames}
        assert set(frames) == {"speak", "viewer", "control"}
        # The control frame (an answer without frame-ancestors) loads; the two pages do not.
        assert '"status"' in await frames["control"].locator("body").inner_text()
        for name in ("speak", "viewer"):
            frame = frames[name]
            assert await frame.locator("#go, #ask, realtime-captions").count() == 0, name
        refused = [m for m in messages if "frame-ancestors" in m]
        assert len(refused) == 2, messages
