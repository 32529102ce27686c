"""No captions out of silence or noise; language detection; a room's second stream continues its clock."""

from __future__ import annotations

import numpy as np
import pytest

from realtime.client import stream_audio
from testbed.speech import english, wer

pytestmark = pytest.mark.slow


async def test_no_text_from_silence_or_low_noise(server):
    rng = np.random.default_rng(3)
    silence = np.zeros(16000 * 6, np.int16)
    hiss = (rng.standard_normal(16000 * 6) * 32768 * 10 ** (-50 / 20)).astype(np.int16)
    hum = (np.sin(2 * np.pi * 50 * np.arange(16000 * 4) / 16000) * 300).astype(np.int16)  # mains hum
    result = await stream_audio(server.url, "quiet-room", np.concatenate([silence, hiss, hum]), speed=4.0)
    texts = [e for e in result.events if e["type"] == "final" or e["type"] == "partial" and
             (e["committed"] or e["unstable"])]
    assert texts == []
    assert result.events[-1]["type"] == "status" and result.events[-1]["state"] == "stopped"


async def test_language_is_detected_when_not_given(server, clips):
    german = [c for c in clips if c.language == "de"]
    if not german:
        pytest.skip("no German clip in the test audio")
    clip = german[0]
    result = await stream_audio(server.url, "auf-deutsch", clip.samples(), speed=0)
    assert result.finals
    assert {f["language"] for f in result.finals} == {"de"}
    assert wer(clip.reference, result.text) < 0.5, result.text


async def test_a_second_stream_into_a_room_reports_only_its_own_captions(server, clips):
    short = sorted(english(clips), key=lambda c: len(c.samples()))[:2]
    first = await stream_audio(server.url, "two-takes", short[0].samples(), speed=0, language="en")
    second = await stream_audio(server.url, "two-takes", short[1].samples(), speed=0, language="en")
    assert first.finals and second.finals
    assert {f["id"] for f in first.finals}.isdisjoint(f["id"] for f in second.finals)
    assert second.finals[0]["start"] >= first.finals[-1]["end"]  # the lecture clock continues
