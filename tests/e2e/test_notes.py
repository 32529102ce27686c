"""Offline (extractive) notes on real speech through the real server."""

from __future__ import annotations

import pytest

from realtime.client import listen, stream_audio
from tests.speech import english, make_lecture

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
