"""The lecturer page's upload control in real Chromium, against a real server with the real model and real speech.

A lecturer picks a recorded lecture, presses Upload, and watches the progress bar and the state text; a student on
the room's viewer page sees the finals and the notes arrive while it runs, as in a live lecture. Before that, a file
that is not audio is refused with a message a person can act on, and the same page then uploads the real one (a
refusal must not leave the control stuck).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.server import ServerProcess
from testbed.speech import english, make_lecture, wer, write_wav
from tests.e2e.browser import RECORD_EVENTS, ConsoleErrors, chromium, wait_js
from tests.httpclient import new_room

pytestmark = pytest.mark.slow

ADMIN = "ak_upload-page-admin-key-0123456789ab"
ROOM = "page-upload"

# Every change of the upload control, with the progress bar's value at that moment: uploadShow() sets the text and
# then the value in one task, and MutationObserver callbacks run after it, so each record is a consistent pair.
WATCH_UPLOAD = """() => {
  window.__upload = [];
  const state = document.getElementById("upload-state"), bar = document.getElementById("upload-progress");
  const record = () => window.__upload.push({text: state.textContent, value: bar.value, ms: Date.now()});
  new MutationObserver(record).observe(state, {childList: true, characterData: true, subtree: true});
}"""


@pytest.fixture(scope="module")
def srv(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """A server with an admin key, so rooms are made through the admin API and need their speaker key."""
    srv = ServerProcess(cache_dir, tmp_path_factory.mktemp("upload-page") / "server.log",
                        env={"REALTIME_ADMIN_KEY": ADMIN})
    yield srv
    srv.stop()



def expected_console_error(text: str) -> bool:
    """Chromium logs every non-2xx answer as a console error; the 415 of the refusal below is the one we cause."""
    return "status of 415" in text


async def test_upload_from_the_lecturer_page_reaches_the_viewer(srv, clips, tmp_path):
    key = new_room(srv, ROOM, ADMIN)
    chosen = english(clips)[:2]
    lec = make_lecture(chosen)
    wav = tmp_path / "recorded-lecture.wav"
    write_wav(wav, lec.audio)
    duration = len(lec.audio) / 16000
    assert 15 < duration < 35, duration
    not_audio = tmp_path / "slides.txt"
    not_audio.write_text("Week 3: Newton's laws. Read chapter four before Thursday.\n" * 40)
    errors = ConsoleErrors()

    async with chromium() as browser:
        viewer = await browser.new_page()
        errors.watch(viewer, "viewer")
        await viewer.add_init_script(RECORD_EVENTS)
        await viewer.goto(f"{srv.http}/?room={ROOM}")
        await viewer.locator("realtime-captions >> text=connected").wait_for()

        lecturer = await browser.new_page()
        errors.watch(lecturer, "lecturer")
        await lecturer.goto(f"{srv.http}/speak?room={ROOM}")
        await lecturer.fill("#key", key)
        await lecturer.select_option("#language", "en")
        await lecturer.evaluate(WATCH_UPLOAD)

        # A text file: refused with the page's explanation and the server's reason; the control is usable again.
        await lecturer.set_input_files("#upload-file", str(not_audio))
        await lecturer.click("#upload-go")
        await lecturer.locator("#upload-state", has_text="refused").wait_for(timeout=20000)
        alert = lecturer.locator("#message")
        await alert.wait_for(state="visible")
        text = await alert.inner_text()
        assert "not audio this server can read" in text and "415" not in text, text  # words, not a status code
        assert "the file is not audio FFmpeg can read" in text, text  # the server's own reason, kept
        assert await lecturer.get_attribute("#message", "class") == "error"
        assert await lecturer.is_enabled("#upload-go") and await lecturer.is_hidden("#upload-cancel")
        assert await lecturer.is_enabled("#go")
        assert await lecturer.evaluate("realtimeUpload.state") == "refused"

        # The recording, from the same page.
        await lecturer.evaluate("window.__upload = []")
        await lecturer.set_input_files("#upload-file", str(wav))
        await lecturer.click("#upload-go")
        assert await lecturer.is_disabled("#upload-go") and await lecturer.is_visible("#upload-cancel")
        assert await lecturer.is_disabled("#go")  # no live captions while an upload runs
        await wait_js(lecturer, "realtimeUpload.state === 'done' || realtimeUpload.state === 'failed'", 120)
        seen = await lecturer.evaluate("window.__upload")
        message = await lecturer.inner_text("#message") if await lecturer.is_visible("#message") else ""
        assert await lecturer.evaluate("realtimeUpload.state") == "done", (seen, message)
        state = await lecturer.inner_text("#upload-state")
        assert state.startswith("done · ") and f"from {round(duration)} s of audio" in state, state
        assert await lecturer.evaluate("document.getElementById('upload-progress').value") == 1
        assert not message, message
        assert await lecturer.is_enabled("#upload-go") and await lecturer.is_hidden("#upload-cancel")
        assert await lecturer.is_enabled("#go")

        # The bar moved through the phases: sending, checking, transcribing, done (a file under one 60 s decoding
        # chunk has no progress line between "accepted" and "done").
        texts = [s["text"] for s in seen]
        phases = [next((i for i, t in enumerate(texts) if t.startswith(p)), -1)
                  for p in ("uploading", "checking", "transcribing", "done")]
        assert -1 not in phases and phases == sorted(phases), texts
        values = [s["value"] for s in seen]
        assert values[0] == 0 and values[-1] == 1 and all(0 <= v <= 1 for v in values), seen
        done_ms = seen[phases[3]]["ms"]

        # The viewer showed the finals, the notes, and got the summary, while the upload ran.
        finals = viewer.locator("realtime-captions .final")
        await finals.first.wait_for()
        shown = await finals.evaluate_all("(ps) => ps.map((p) => p.lastChild.textContent)")
        reference = " ".join(c.reference for c in chosen)
        assert wer(reference, " ".join(shown)) < 0.35, (reference, shown)
        assert len(shown) == int(state.split()[2]), (shown, state)  # "done · N lines …": the same finals
        await viewer.locator("realtime-captions .bullets li").first.wait_for(timeout=20000)
        assert "no LLM" in await viewer.locator("realtime-captions .source").inner_text()
        events = await viewer.evaluate("window.__events")
        first_final = min(e["wall_ms"] for e in events if e["type"] == "final")
        assert first_final <= done_ms, "the viewer got the first final only after the upload was done"
        kinds = {e["type"] for e in events}
        await wait_js(viewer, "window.__events.some((e) => e.type === 'summary')", 20)
        await wait_js(viewer, "window.__events.some((e) => e.type === 'status' && e.state === 'stopped')", 20)
        assert "notes" in kinds, kinds
        # The lecturer's own preview of the room shows the same lines.
        assert await lecturer.locator("realtime-captions .final").count() == len(shown)

    assert [e for e in errors if not expected_console_error(e)] == [], errors
