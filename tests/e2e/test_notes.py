"""Offline (extractive) notes on real speech through the real server."""

from __future__ import annotations

import pytest

from realtime.client import listen, stream_audio
from testbed.speech import english, make_lecture

pytestmark = pytest.mark.slow


async def test_extractive_notes_cover_the_lecture_and_reach_late_joiners(server, clips):
    lecture = make_lecture(english(clips)[:4], lead_s=0.5)
    result = await stream_audio(server.url, "notes-1", lecture.audio, speed=0, language="en")
    notes = [e for e in result.events if e["type"] == "notes"]
    assert notes, "no notes event"
    stopped = next(e for e in result.events if e["type"] == "status" and e["state"] == "stopped")
    assert notes[-1]["seq"] < stopped["seq"]  # the notes are complete when the lecture stops
    last = notes[-1]
    assert last["source"] == "extractive" and last["version"] == len(notes)
    bullets = last["bullets"]
    assert bullets and len({b["text"] for b in bullets}) == len(bullets)
    assert len({b["id"] for b in bullets}) == len(bullets)
    final_ids = {f["id"] for f in result.finals}
    assert all(b["refs"] and set(b["refs"]) <= final_ids for b in bullets)
    assert set(last["added"]) | set(last["changed"]) <= {b["id"] for b in bullets}
    late = await listen(server.url, "notes-1", idle=2)
    late_notes = [e for e in late.events if e["type"] == "notes"]
    assert late_notes and late_notes[-1]["bullets"] == bullets


def http(server, method: str, path: str, body: dict | None = None) -> tuple[int, str]:
    import json
    import urllib.error
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(server.http + path, data=data, method=method,
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


async def test_summary_at_stop_and_grounded_answers(server, clips):
    import json

    lecture = make_lecture(english(clips)[:3], lead_s=0.5)
    result = await stream_audio(server.url, "notes-2", lecture.audio, speed=0, language="en")
    summaries = [e for e in result.events if e["type"] == "summary"]
    assert len(summaries) == 1 and summaries[0]["finals"] == len(result.finals)
    status, markdown = http(server, "GET", "/v1/rooms/notes-2/summary")
    assert status == 200 and markdown == summaries[0]["markdown"]
    for section in ("# ", "**Core topic:**", "## Main points", "## Conclusion"):
        assert section in markdown
    question = result.finals[0]["text"]
    status, body = http(server, "POST", "/v1/rooms/notes-2/ask", {"question": question})
    answer = json.loads(body)
    assert status == 200 and answer["source"] == "extractive"
    assert result.finals[0]["id"] in [c["id"] for c in answer["citations"]]
    assert http(server, "POST", "/v1/rooms/notes-2/ask", {"question": ""})[0] == 400
    assert http(server, "POST", "/v1/rooms/notes-2/ask", {"q": 1})[0] == 400
    assert http(server, "GET", "/v1/rooms/no-such-room/summary")[0] == 404
