"""The lecturer page's failure paths in real Chromium: no secure context, microphone refused, no microphone, a
full server (then admitted once a slot frees), and a network blip during a lecture that loses no audio."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from realtime.client import stream_audio
from testbed.server import ServerProcess
from testbed.speech import ROOT, english, wer, write_wav
from tests.e2e.browser import FAKE_DEVICE, FAKE_UI, ConsoleErrors, chromium, mic_args, wait_js

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def small_server(cache_dir, tmp_path_factory):
    srv = ServerProcess(cache_dir, tmp_path_factory.mktemp("lecturer") / "server.log", "--max-speakers", "1")
    yield srv
    srv.stop()


async def message_after_start(url: str, *args: str) -> str:
    async with chromium(*args) as browser:
        page = await browser.new_page()
        await page.goto(url)
        await page.click("#go")
        await page.locator("#message").wait_for()
        return await page.inner_text("#message")


@pytest.fixture
async def plain_pages():
    """The lecturer page from a plain static server: a server with open rooms answers only loopback host names (and
    the page's insecure-context message needs none of the server)."""
    app = web.Application()
    app.router.add_get("/speak", lambda _: web.FileResponse(ROOT / "static" / "speak.html"))
    app.router.add_static("/static/", ROOT / "static")
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://lecture.test:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    await runner.cleanup()


async def test_human_messages_for_microphone_problems(small_server, plain_pages):
    insecure = plain_pages + "/speak"
    text = await message_after_start(insecure, "--host-resolver-rules=MAP lecture.test 127.0.0.1")
    assert "secure page" in text and "HTTPS" in text and "Deployment" in text
    assert "refused the microphone" in await message_after_start(small_server.http + "/speak", FAKE_DEVICE)
    assert "No microphone was found" in await message_after_start(small_server.http + "/speak", FAKE_UI)


async def test_blip_and_full_server_lose_no_audio(small_server, clips, tmp_path):
    clip = english(clips)[0]
    wav = tmp_path / "clip.wav"
    write_wav(wav, clip.samples())
    duration = len(clip.samples()) / 16000
    errors = ConsoleErrors()
    # Another lecture holds the only speaker slot: the page explains, keeps the audio, and retries.
    hold = asyncio.get_running_loop().create_task(
        stream_audio(small_server.url, "other", english(clips)[1].samples(), speed=1.0, language="en"))
    await asyncio.sleep(1.0)
    async with chromium(*mic_args(wav)) as browser:
        page = await browser.new_page()
        errors.watch(page, "lecturer")
        await page.goto(small_server.http + "/speak?room=blip")
        await page.select_option("#language", "en")
        await page.click("#go")
        await page.locator("#message", has_text="at capacity").wait_for(timeout=15000)
        await hold
        await page.locator("#conn", has_text="live").wait_for(timeout=30000)
        # A blip mid-lecture: the socket drops; capture goes on into the buffer and is sent after reconnecting.
        await wait_js(page, f"realtimeSpeaker.capturedBytes > {duration * 0.4 * 32000}")
        await page.evaluate("realtimeSpeaker.retry = 2; realtimeSpeaker.ws.close()")
        await page.locator("#conn", has_text="reconnecting").wait_for()
        await wait_js(page, "realtimeSpeaker.bufferedBytes >= 16000")  # half a second kept while down
        await page.locator("#conn", has_text="live").wait_for(timeout=30000)
        await wait_js(page, f"realtimeSpeaker.capturedBytes > {(duration + 0.5) * 32000}")
        await page.click("#go")
        await page.locator("#conn", has_text="stopped").wait_for(timeout=30000)
        state = await page.evaluate("({sent: realtimeSpeaker.sentBytes, captured: realtimeSpeaker.capturedBytes,"
                                    " dropped: realtimeSpeaker.droppedBytes})")
    assert state["sent"] == state["captured"] and state["dropped"] == 0
    text = small_server.get_json("/v1/rooms/blip/transcript")["text"]
    assert wer(clip.reference, text) <= 0.25, text
    assert errors == []
