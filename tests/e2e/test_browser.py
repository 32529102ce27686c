"""Microphone to screens in real Chromium: the lecturer page captures real speech from a fake microphone, a viewer
page and a widget embedded on another site show it, a site that is not allowed is refused, and the time from the
microphone playing a word to the viewer showing it is measured in the browser."""

from __future__ import annotations

import asyncio
import json

import pytest

from testbed.latency import summary, word_latencies
from testbed.server import ARTIFACTS, ServerProcess, free_port
from testbed.speech import english, make_lecture, wer, write_wav
from tests.e2e.browser import RECORD_EVENTS, ConsoleErrors, chromium, host_site, mic_args, wait_js

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def host_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def web_server(cache_dir, tmp_path_factory, host_port):
    """A server that lets pages of http://localhost:HOST_PORT embed its captions (and no other site)."""
    srv = ServerProcess(cache_dir, tmp_path_factory.mktemp("browser") / "server.log",
                        "--allowed-origins", f"http://localhost:{host_port}")
    yield srv
    srv.stop()


async def speaker_captured_s(page) -> float:
    return await page.evaluate("realtimeSpeaker.capturedBytes / 32000")


async def test_lecturer_page_to_viewer_and_embedded_widget(web_server, host_port, clips, tmp_path):
    spoken = english(clips)[:2]
    lecture = make_lecture(spoken, lead_s=1.0)
    wav = tmp_path / "lecture.wav"
    write_wav(wav, lecture.audio)
    duration = len(lecture.audio) / 16000
    room = "browser-1"
    errors = ConsoleErrors()
    async with host_site(host_port, web_server.http, room), chromium(*mic_args(wav)) as browser:
        viewer = await browser.new_page(viewport={"width": 1300, "height": 760})
        errors.watch(viewer, "viewer")
        await viewer.add_init_script(RECORD_EVENTS)
        await viewer.goto(f"{web_server.http}/?room={room}")

        # The widget on an allowed site (localhost:PORT), and on a site the server does not list (127.0.0.1:PORT).
        embedded = await (await browser.new_context(viewport={"width": 1000, "height": 700})).new_page()
        errors.watch(embedded, "widget")
        await embedded.add_init_script(RECORD_EVENTS)
        await embedded.goto(f"http://localhost:{host_port}/")
        refused = await (await browser.new_context()).new_page()
        errors.watch(refused, "refused")
        await refused.add_init_script(RECORD_EVENTS)
        await refused.goto(f"http://127.0.0.1:{host_port}/")
        await refused.wait_for_function("window.__events.some((e) => e.code === 'origin_not_allowed')")
        await refused.locator("realtime-captions >> text=may not show").wait_for()

        speaker = await (await browser.new_context(viewport={"width": 1300, "height": 900})).new_page()
        errors.watch(speaker, "lecturer")
        await speaker.goto(f"{web_server.http}/speak?room={room}")
        await speaker.select_option("#language", "en")
        await speaker.click("#go")  # the real click path: the AudioContext starts on a user gesture
        await speaker.locator("#conn", has_text="live").wait_for()
        while await speaker_captured_s(speaker) < duration + 0.7:
            await asyncio.sleep(0.25)
        ARTIFACTS.mkdir(exist_ok=True)
        await speaker.screenshot(path=str(ARTIFACTS / "lecturer.png"))
        await speaker.click("#go")  # stop: the last utterance is finalised
        await speaker.locator("#conn", has_text="stopped").wait_for(timeout=30000)
        for page in (viewer, embedded):
            await wait_js(page, "window.__events.some((e) => e.type === 'status' && e.state === 'stopped')")
        await viewer.screenshot(path=str(ARTIFACTS / "viewer.png"))
        await embedded.screenshot(path=str(ARTIFACTS / "widget.png"))

        reference = " ".join(c.reference for c in spoken)
        events = await viewer.evaluate("window.__events")
        finals = [e["text"] for e in events if e["type"] == "final"]
        assert wer(reference, " ".join(finals)) <= 0.2, finals
        shown = await viewer.evaluate("document.querySelector('realtime-captions').transcript()")
        assert shown == await embedded.evaluate("document.querySelector('realtime-captions').transcript()")
        assert len(shown.splitlines()) == len(finals)
        # The hostile host stylesheet (red, serif, 40px) did not reach inside the widget.
        style = await embedded.locator("realtime-captions .final").first.evaluate(
            "(e) => [getComputedStyle(e).color, getComputedStyle(e).fontFamily]")
        assert style[0] != "rgb(255, 0, 0)" and "serif" != style[1].split(",")[0].strip()
        assert await refused.locator("realtime-captions .final").count() == 0
        # Catch me up from the other site: the streamed recap carries CORS headers, so the widget can read it.
        await embedded.evaluate("document.querySelector('realtime-captions').catchUp()")
        recap = await embedded.evaluate("document.querySelector('realtime-captions').shadowRoot"
                                        ".querySelector('.recap').dataset.source")
        assert recap == "extractive"
        captured = await speaker.evaluate("({sent: realtimeSpeaker.sentBytes, captured: realtimeSpeaker.capturedBytes,"
                                          " t0: realtimeSpeaker.t0, dropped: realtimeSpeaker.droppedBytes})")
    assert captured["sent"] == captured["captured"] and captured["dropped"] == 0
    assert errors == []

    # Latency in the browser: lecture time 0 is the lecturer page's first captured sample (wall clock t0); a word
    # ending at lecture time `end` was played by the fake microphone at t0 + end. Both pages share the clock.
    for e in events:
        e["t"] = (e["wall_ms"] - captured["t0"]) / 1000
    words = word_latencies(events)
    assert len(words) >= 0.8 * len(reference.split())
    result = {"audio_s": round(duration, 1), "words": len(words), "wer": round(wer(reference, " ".join(finals)), 3),
              "first_shown": summary([w.to_first for w in words]),
              "committed": summary([w.to_commit for w in words])}
    (ARTIFACTS / "browser-latency.json").write_text(json.dumps(result, indent=2))
    print("mic -> viewer latency:", json.dumps(result))
