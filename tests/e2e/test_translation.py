"""Caption translation through the real server, the real model on real speech, and a scripted OpenAI endpoint (the
failure modes: a stalled LLM never delays captions, a spent budget and a refusal are marked). The real local model's
translations are tested in test_translation_real.py."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

import pytest
import websockets

from realtime.client import listen, stream_audio, ws_url
from testbed.server import ServerProcess
from testbed.speech import english, make_lecture

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(fake_llm, cache_dir, tmp_path_factory):
    srv = ServerProcess(cache_dir, tmp_path_factory.mktemp("translate") / "server.log", "--llm-model", "fake-model",
                        "--llm-base-url", fake_llm.url, "--llm-timeout-s", "3", "--llm-retries", "0",
                        "--no-notes",
                        "--max-translation-languages", "2")
    yield srv
    srv.stop()


def of(events: list[dict], kind: str) -> list[dict]:
    return [e for e in events if e["type"] == kind]


async def test_each_viewer_reads_the_lecture_in_their_own_language(server, fake_llm, clips):
    lecture = make_lecture(english(clips)[:3], lead_s=0.5)
    room = "tr-1"
    viewers = [asyncio.create_task(listen(server.url, room, idle=6, translate=lang)) for lang in ("zh", "de", None)]
    await asyncio.sleep(0.5)
    result = await stream_audio(server.url, room, lecture.audio, speed=2.0, language="en")
    zh, de, plain = [(await v).events for v in viewers]
    finals = result.finals
    assert len(finals) >= 3
    for events, code, language in ((zh, "zh", "Chinese"), (de, "de", "German")):
        lines = {t["final"]: t for t in of(events, "translation")}
        assert set(lines) == {f["id"] for f in finals}, (lines, finals)
        for f in finals:
            assert lines[f["id"]]["text"] == f"[{language}] {f['text']}" and lines[f["id"]]["state"] == "done"
        assert of(events, "hello")[0]["translate"] == code
    assert not of(plain, "translation") and not of(result.events, "translation")  # only those who asked
    # A late joiner gets the translations so far, after the finals; a third language is one too many.
    late = await listen(server.url, room, idle=2, translate="zh")
    assert [t["final"] for t in of(late.events, "translation")] == [f["id"] for f in finals]
    french = await listen(server.url, room, idle=2, translate="fr")  # the zh and de viewers left: French fits
    assert not of(french.events, "error") and len(of(french.events, "translation")) == len(finals)
    for fmt in ("srt", "vtt", "txt", "json"):  # the exports in a caption language
        with urllib.request.urlopen(f"{server.http}/v1/rooms/{room}/export?format={fmt}&lang=zh", timeout=10) as r:
            body = r.read().decode()
        assert body.count("[Chinese] ") == len(finals) and "tr-1.zh." in r.headers["Content-Disposition"], body
    with pytest.raises(urllib.error.HTTPError) as bad:
        urllib.request.urlopen(f"{server.http}/v1/rooms/{room}/export?format=srt&lang=xx", timeout=10)
    assert bad.value.code == 400
    # The summary in a caption language: made once, however many ask at once.
    urllib.request.urlopen(urllib.request.Request(f"{server.http}/v1/rooms/{room}/summary", method="POST",
                                                  data=b"{}", headers={"Content-Type": "application/json"}),
                           timeout=30).read()

    def summary_in(lang: str) -> str:
        with urllib.request.urlopen(f"{server.http}/v1/rooms/{room}/summary?lang={lang}", timeout=30) as r:
            return r.read().decode()

    texts = await asyncio.gather(*(asyncio.to_thread(summary_in, "de") for _ in range(5)))
    assert len(set(texts)) == 1 and "# " in texts[0] and "[German]" in texts[0], texts[0]
    assert sum(r["body"]["messages"][0]["content"].startswith("You translate the Markdown summary")
               for r in fake_llm.requests) == 1
    health = server.get_json("/healthz")["translations"]
    assert health["available"] and health["translated"] >= 2 * len(finals) and health["latency_s"]["n"] >= 1
    sent = [json.loads(r["body"]["messages"][1]["content"]) for r in fake_llm.requests
            if r["body"]["messages"][0]["content"].startswith("You translate the live captions")]
    assert {s["text"] for s in sent} == {f["text"] for f in finals}  # each line asked once per language
    assert len(sent) == 3 * len(finals)  # zh and de live, fr backfilled for the late viewer


async def test_a_third_language_is_refused_and_an_unknown_one_closes(server, clips):
    room = "tr-limit"
    holders = [asyncio.create_task(listen(server.url, room, idle=3, translate=lang)) for lang in ("zh", "de")]
    await asyncio.sleep(0.5)
    third = await listen(server.url, room, idle=1, translate="fr")
    errors = of(third.events, "error")
    assert [e["code"] for e in errors] == ["too_many_languages"] and of(third.events, "hello")[0]["translate"] is None
    async with websockets.connect(ws_url(server.url, "listen", room) + "?translate=klingon") as ws:
        first = json.loads(await ws.recv())
        assert first["code"] == "bad_message" and "translate" in first["message"]
        await ws.wait_closed()
        assert ws.close_code == 4400
    await asyncio.gather(*holders)


async def test_a_stalled_llm_never_delays_captions_and_failures_are_marked(server, fake_llm, clips):
    lecture = make_lecture(english(clips)[:4], lead_s=0.5)
    room = "tr-stall"
    fake_llm.push({"kind": "stall", "seconds": 8}, "500", "malformed")
    viewers = [asyncio.create_task(listen(server.url, room, idle=10, translate=lang)) for lang in ("de", None)]
    await asyncio.sleep(0.5)
    result = await stream_audio(server.url, room, lecture.audio, speed=1.0, language="en")
    events, plain = [(await v).events for v in viewers]
    finals, plain_finals = of(events, "final"), of(plain, "final")
    assert len(finals) == len(plain_finals) == len(result.finals) >= 4
    # Captions went on during the stall: each final reached the translating viewer as soon as the plain one (both
    # connections opened together, so their clocks agree to a few milliseconds).
    late = [a["t"] - b["t"] for a, b in zip(finals, plain_finals, strict=True)]
    assert max(late) < 0.5, late
    states = [(t["state"], t["reason"]) for t in of(events, "translation")]
    assert ("failed", "llm_error") in states and ("failed", "invalid_answer") in states, states
    assert ("done", "") in states  # and the next lines were translated again
    failed = server.get_json("/healthz")["translations"]["failed"]
    assert failed.get("llm_error", 0) >= 1 and failed.get("invalid_answer", 0) >= 1


async def test_the_viewer_menu_and_the_widget_attribute_in_chromium(server, clips):
    from testbed.server import ARTIFACTS
    from tests.e2e.browser import RECORD_EVENTS, ConsoleErrors, chromium, wait_js

    room = "tr-page"
    errors = ConsoleErrors()
    async with chromium() as browser:
        page = await browser.new_page(viewport={"width": 1300, "height": 800})
        errors.watch(page, "viewer")
        await page.add_init_script(RECORD_EVENTS)
        await page.goto(f"{server.http}/?room={room}&translate=de")
        await page.locator("realtime-captions >> text=connected").wait_for()
        assert await page.input_value("#translate") == "de"
        # The widget on its own, beside the viewer's: Chinese only, as a host page would embed it.
        await page.evaluate(f"""() => {{ const w = document.createElement("realtime-captions");
            w.id = "embedded"; w.setAttribute("room", "{room}"); w.setAttribute("translate", "zh");
            w.setAttribute("translation", "only"); w.setAttribute("mode", "captions");
            w.setAttribute("height", "12rem"); document.body.append(w); }}""")
        await page.locator("#embedded >> text=connected").wait_for()
        clip = english(clips)[0]
        await stream_audio(server.url, room, clip.samples(), speed=0, language="en")
        viewer = page.locator("#captions .final").first
        await viewer.locator(".tr").filter(has_text="[German]").wait_for()
        assert await viewer.locator(".orig").is_visible()  # both: the original, its translation under it
        embedded = page.locator("#embedded .final").first
        await embedded.locator(".tr").filter(has_text="[Chinese]").wait_for()
        assert not await embedded.locator(".orig").is_visible()  # translation only
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "viewer-translation.png"))
        # The menu switches language: the page reconnects and the history comes again, in Chinese.
        await page.select_option("#translate", "zh")
        await viewer.locator(".tr").filter(has_text="[Chinese]").wait_for()
        assert "translate=zh" in page.url
        await page.check("#only")
        await wait_js(page, "document.querySelector('#captions').getAttribute('translation') === 'only'")
        await page.select_option("#translate", "")
        await wait_js(page, "!document.querySelector('#captions').hasAttribute('translate')")
        await page.locator("#captions .final").first.wait_for()
        assert await page.locator("#captions .final .tr").count() == 0  # the lecture's language again
        await page.goto(f"{server.http}/?room={room}&translate=sv")  # a language the menu does not list
        await page.locator("#captions .final .tr").first.wait_for()
        assert await page.input_value("#translate") == "sv"
    assert errors == []


async def test_the_openai_sdk_translation_session(server, clips):
    """`client.realtime.translations.connect()` of the unmodified SDK, as the room's speaker: the source words and
    their translation come as append-only deltas the SDK parses into its own types, the translation in the finals'
    order, and `session.close` waits for the last line; the room's viewers see the same lecture."""
    import base64

    from openai import AsyncOpenAI

    from realtime.core.audio import Resampler

    lecture = make_lecture(english(clips)[:2], lead_s=0.5)
    pcm24 = Resampler(16000, 24000)(lecture.audio).astype("<i2").tobytes()
    room = "tr-oai"
    viewer = asyncio.create_task(listen(server.url, room, idle=10, translate="de"))
    await asyncio.sleep(0.3)
    sdk = AsyncOpenAI(api_key="sk-any", base_url=server.http + "/v1", max_retries=0)
    events = []
    async with sdk.realtime.translations.connect(model="gpt-realtime-translate", extra_query={"room": room}) as conn:
        created = await conn.recv()
        assert type(created).__name__ == "RealtimeTranslationSessionCreatedEvent", created
        assert created.session.type == "translation" and created.session.audio.output.language is None
        await conn.session.update(session={"audio": {"output": {"language": "xx"}}})
        refused = await conn.recv()
        assert refused.type == "error" and refused.error.param == "session.audio.output.language", refused
        await conn.session.update(session={"audio": {"output": {"language": "de"},
                                                     "input": {"transcription": {"model": "whisper-1"}}}})
        updated = await conn.recv()
        assert updated.type == "session.updated" and updated.session.audio.output.language == "de"
        step = 24000 * 2 // 5  # 200 ms, as OpenAI asks
        for i in range(0, len(pcm24), step):
            await conn.session.input_audio_buffer.append(audio=base64.b64encode(pcm24[i:i + step]).decode())
            await asyncio.sleep(0.1)  # 2x real time
        await conn.session.close()
        async for event in conn:
            events.append(event)
            if event.type == "session.closed":
                break
    kinds = {type(e).__name__ for e in events}
    assert kinds <= {"RealtimeTranslationInputTranscriptDeltaEvent", "RealtimeTranslationOutputTranscriptDeltaEvent",
                     "RealtimeTranslationSessionClosedEvent"}, kinds
    source = "".join(e.delta for e in events if e.type == "session.input_transcript.delta")
    target = "".join(e.delta for e in events if e.type == "session.output_transcript.delta")
    finals = [f for f in of((await viewer).events, "final")]
    assert len(finals) >= 2
    assert target == " ".join(f"[German] {f['text']}" for f in finals), (target, finals)
    skeleton = lambda s: "".join(c for c in s.lower() if c.isalnum())  # noqa: E731
    assert skeleton(source) == skeleton(" ".join(f["text"] for f in finals)), (source, finals)
    elapsed = [e.elapsed_ms for e in events if e.type.endswith("transcript.delta")]
    assert all(ms % 200 == 0 for ms in elapsed) and max(elapsed) <= len(pcm24) / 48, elapsed
    # The viewers of the room got the same lines translated, once each.
    lines = of((await viewer).events, "translation")
    assert sorted(t["final"] for t in lines) == [f["id"] for f in finals]


async def test_the_translation_session_refuses_bad_events_and_goes_on(server):
    """Each broken client event gets an OpenAI `error` with a documented code and the client's event_id, and the
    session stays open; a connection without `model` is refused at once."""
    url = server.url.replace("http", "ws", 1) + "/v1/realtime/translations"
    async with websockets.connect(url + "?room=tr-bad") as ws:
        first = json.loads(await ws.recv())
        assert first["error"]["code"] == "missing_required_parameter" and first["error"]["param"] == "model"
        await ws.wait_closed()
        assert ws.close_code == 4400
    cases = [
        ("{", "invalid_json"), ("[]", "invalid_json"), ('{"type": 1}', "missing_required_parameter"),
        ('{"type": "input_audio_buffer.commit", "event_id": "e1"}', "invalid_value"),
        ('{"type": "session.input_audio_buffer.append", "audio": "%%%", "event_id": "e2"}', "invalid_value"),
        ('{"type": "session.update", "session": {"model": "other"}, "event_id": "e3"}', "invalid_value"),
        ('{"type": "session.update", "session": {"audio": {"output": {"language": ["de"]}}}}', "invalid_type"),
        ('{"type": "session.update", "session": {"audio": {"output": {"language": "de"}}}, "event_id": "\\ud800"}',
         "invalid_value"),  # a lone surrogate: refused, and that event_id cannot be echoed
        ('{"type": "session.update", "session": {"audio": {"output": {"language": "de"}}}}', None),
        ('{"type": "session.update", "session": {"audio": {"output": {"language": "fr"}}}}', None),  # de given up
        (b"\x00\x01", "invalid_value"), ("x" * 70_000, "message_too_large"),
    ]
    async with websockets.connect(url + "?model=m&room=tr-bad") as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
        for raw, code in cases:
            await ws.send(raw)
            reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
            if code is None:
                assert reply["type"] == "session.updated", (raw, reply)
                continue
            assert reply["type"] == "error" and reply["error"]["code"] == code, (raw, reply)
            sent_id = json.loads(raw).get("event_id") if isinstance(raw, str) and raw.startswith('{"') and \
                "\\ud800" not in raw else None
            assert reply["error"]["event_id"] == sent_id, (raw, reply)
        await ws.send(json.dumps({"type": "session.close"}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "session.closed"
        await ws.wait_closed()
        assert ws.close_code == 1000
    assert server.get_json("/healthz")["ready"] is True
