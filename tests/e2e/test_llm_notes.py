"""LLM notes through the real server and the real `openai` client against a scripted local endpoint."""

from __future__ import annotations

import asyncio
import json

import pytest

from realtime.client import stream_audio
from realtime.notes.prompt import SYSTEM_PROMPT
from testbed.server import ServerProcess
from testbed.speech import english, make_lecture

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def llm_server(fake_llm, cache_dir, tmp_path_factory):
    srv = ServerProcess(cache_dir, tmp_path_factory.mktemp("llm") / "server.log", "--llm-model", "fake-model",
                        "--llm-base-url", fake_llm.url, "--llm-timeout-s", "2", "--llm-retries", "1",
                        "--notes-min-words", "15", "--notes-interval-s", "3")
    yield srv
    srv.stop()


def notes_of(result) -> list[dict]:
    return [e for e in result.events if e["type"] == "notes"]


async def test_llm_notes_appear_and_update_as_diffs(llm_server, fake_llm, clips):
    lecture = make_lecture(english(clips)[:4], lead_s=0.5)
    result = await stream_audio(llm_server.url, "llm-1", lecture.audio, speed=2.0, language="en")
    await asyncio.sleep(1.5)  # with an LLM the closing update runs in the background
    notes = notes_of(result)
    assert len(notes) >= 2 and all(n["source"] == "llm" for n in notes)
    assert [n["version"] for n in notes] == sorted({n["version"] for n in notes})
    later = notes[-1]
    assert later["added"] and not set(later["changed"]) & {b["id"] for b in notes[0]["bullets"]}
    final_ids = {f["id"] for f in result.finals}
    assert all(set(b["refs"]) <= final_ids for b in later["bullets"])
    for r in fake_llm.requests:  # every request: system prompt + data, window bounded
        msgs = r["body"]["messages"]
        data = json.loads(msgs[1]["content"])
        assert msgs[0]["role"] == "system"
        assert data["transcript"] if "transcript" in data else set(data) == {"language", "terms", "tasks"}, data
    asked = [r["body"] for r in fake_llm.requests if r["body"]["messages"][0]["content"] == SYSTEM_PROMPT]
    assert asked and all(b["response_format"]["type"] == "json_schema" and b["max_tokens"] < 1500 for b in asked)
    statuses = [e for e in result.events if e["type"] == "status"]
    assert statuses[-1]["llm_tokens"] > 0  # the room's LLM spending, in status
    assert statuses[-1]["notes_rejected"] == 0
    health = llm_server.get_json("/healthz")["notes"]
    assert health["engine"] == "llm" and health["llm"]["calls"] >= 2 and health["llm"]["prompt_tokens"] > 0
    assert health["llm"]["response_format"] == "json_schema" and health["rejected"] == {}


async def test_notes_survive_every_failure_and_captions_keep_flowing(llm_server, fake_llm, clips):
    fake_llm.push({"kind": "429", "retry_after": 1}, "500", "500", "malformed", "prose",
                  {"kind": "stall", "seconds": 8}, {"kind": "stall", "seconds": 8})
    lecture = make_lecture(english(clips)[:5], lead_s=0.5)
    result = await stream_audio(llm_server.url, "llm-2", lecture.audio, speed=2.0, language="en")
    notes = notes_of(result)
    # No notes event ever carries invalid content; versions only move forward.
    assert [n["version"] for n in notes] == sorted(n["version"] for n in notes)
    for n in notes:
        assert all(b["text"] and b["id"] for b in n["bullets"])
    # Captions did not wait for the stalled LLM: finals kept arriving while requests stalled.
    stalls = [r["t"] for r in fake_llm.requests]
    assert len(result.finals) >= 5
    gaps = [b["t"] - a["t"] for a, b in zip(result.finals, result.finals[1:], strict=False)]
    assert max(gaps) < 8, gaps
    assert len(stalls) >= 6  # the scripted failures were all hit
    health = llm_server.get_json("/healthz")["notes"]
    assert health["failures"] >= 2
    assert sum(health["rejected"].values()) >= 1  # the malformed and prose answers, counted by reason
    assert set(health["rejected"]) <= {"not_json", "length"}


async def test_llm_summary_and_answers(llm_server, fake_llm, clips):
    import json
    import urllib.request

    result = await stream_audio(llm_server.url, "llm-3", english(clips)[0].samples(), speed=0, language="en")
    assert result.finals
    await asyncio.sleep(2)  # the closing notes and summary run in the background with an LLM
    loop = asyncio.get_running_loop()  # the fake LLM lives on this loop: never block it with a request
    summary = await loop.run_in_executor(
        None, lambda: urllib.request.urlopen(llm_server.http + "/v1/rooms/llm-3/summary", timeout=20).read())
    assert summary.decode().startswith("# A lecture")  # the LLM's summary, checked and kept
    req = urllib.request.Request(llm_server.http + "/v1/rooms/llm-3/ask", method="POST",
                                 data=json.dumps({"question": result.finals[0]["text"]}).encode(),
                                 headers={"Content-Type": "application/json"})
    body = await loop.run_in_executor(None, lambda: urllib.request.urlopen(req, timeout=20).read())
    answer = json.loads(body)
    assert answer["source"] == "llm" and "[0:" in answer["answer"] and answer["citations"]
    assert fake_llm.requests[-1]["body"].get("stream") is True  # answers are streamed


async def test_an_endpoint_without_json_schema_still_makes_notes(llm_server, fake_llm, clips):
    """Last in this module: the server's client remembers the refusal for the rest of its life."""
    import urllib.request

    fake_llm.refuse = {"json_schema"}  # as DeepSeek: 400 "This response_format type is unavailable now"
    try:
        before = len(fake_llm.requests)
        lecture = make_lecture(english(clips)[:3], lead_s=0.5)
        result = await stream_audio(llm_server.url, "llm-4", lecture.audio, speed=2.0, language="en")
        await asyncio.sleep(1.5)
        notes = notes_of(result)
        assert notes and notes[-1]["source"] == "llm" and notes[-1]["bullets"]
        asked = [(r["body"].get("response_format") or {}).get("type") for r in fake_llm.requests[before:]
                 if r["body"]["messages"][0]["content"] == SYSTEM_PROMPT]
        assert asked.count("json_schema") == 1 and asked[-1] == "json_object"  # refused once, then remembered
        assert llm_server.get_json("/healthz")["notes"]["llm"]["response_format"] == "json_object"
        request = urllib.request.Request(llm_server.http + "/metrics",
                                         headers={"Authorization": f"Bearer {llm_server.admin_key}"}
                                         if llm_server.admin_key else {})
        metrics = await asyncio.get_running_loop().run_in_executor(
            None, lambda: urllib.request.urlopen(request, timeout=10).read().decode())
        assert 'realtime_notes_rejected_total{reason="not_json"}' in metrics
    finally:
        fake_llm.refuse = set()
