"""Segmenter: onset, pre-roll, hangover, min-speech, re-framing and flush, on synthetic PCM."""

from __future__ import annotations

import random
import subprocess
import sys

import numpy as np
import pytest

from realtime.core.vad import Segmenter, SpeechAudio, SpeechEnd, SpeechStart

FRAME_MS = 30
FRAME_SAMPLES = 16000 * FRAME_MS // 1000
FRAME_BYTES = FRAME_SAMPLES * 2
VOICED = np.full(FRAME_SAMPLES, 1000, "<i2").tobytes()
SILENT = bytes(FRAME_BYTES)

Event = SpeechStart | SpeechAudio | SpeechEnd


def nonzero(frame: bytes) -> bool:
    """Test classifier: a frame is voiced when any of its samples is non-zero."""
    return any(frame)


def pcm(pattern: str) -> bytes:
    """One 30 ms frame per character: '1' voiced, '0' silent."""
    return b"".join(VOICED if c == "1" else SILENT for c in pattern)


def segmenter(**kw: int) -> Segmenter:
    opts = dict(frame_ms=FRAME_MS, preroll_ms=300, hangover_ms=480, min_speech_ms=180)
    opts.update(kw)
    return Segmenter(nonzero, **opts)


def marks(events: list[Event]) -> list[Event]:
    """Events without the audio payloads."""
    return [e for e in events if not isinstance(e, SpeechAudio)]


def audio_bytes(events: list[Event]) -> int:
    return sum(len(e.pcm) for e in events if isinstance(e, SpeechAudio))


def test_defaults_derive_onset_window_from_frame_length() -> None:
    seg = segmenter()
    assert (seg.onset_window, seg.onset_frames) == (5, 3)
    assert seg.preroll_frames == 10
    assert seg.hangover_frames == 16
    assert seg.min_voiced_frames == 6


@pytest.mark.parametrize("pattern", ["1", "11", "1001", "1" + "0" * 4 + "1" + "0" * 4 + "1"])
def test_isolated_clicks_do_not_open_an_utterance(pattern: str) -> None:
    seg = segmenter()
    assert seg.feed(pcm(pattern + "0" * 40)) == []
    assert seg.flush() == []
    assert not seg.in_speech


def test_onset_needs_three_voiced_frames_within_the_window() -> None:
    seg = segmenter()
    assert seg.feed(pcm("11")) == []
    events = seg.feed(pcm("1"))
    assert marks(events) == [SpeechStart(0.0)]
    assert seg.in_speech
    # Three voiced among five frames also counts, even with gaps.
    assert marks(segmenter().feed(pcm("10101"))) == [SpeechStart(0.0)]


def test_preroll_is_included_and_start_time_accounts_for_it() -> None:
    seg = segmenter()
    events = seg.feed(pcm("0" * 20 + "111"))
    start, audio = events
    # Onset after frame 23 (0.69 s); the 10 frames of pre-roll before it begin at 0.39 s.
    assert isinstance(start, SpeechStart) and start.t == pytest.approx(0.39)
    assert isinstance(audio, SpeechAudio) and audio.t == pytest.approx(0.39)
    assert audio.pcm == pcm("0" * 7 + "111")


def test_preroll_is_shorter_at_the_start_of_the_stream() -> None:
    events = segmenter().feed(pcm("0111"))
    assert events == [SpeechStart(0.0), SpeechAudio(pcm("0111"), 0.0)]


def test_hangover_ends_the_utterance_after_configured_silence() -> None:
    seg = segmenter()  # hangover 480 ms = 16 frames
    events = seg.feed(pcm("1" * 10 + "0" * 15))
    assert marks(events) == [SpeechStart(0.0)]
    assert seg.in_speech
    end_events = seg.feed(pcm("0"))
    assert end_events[-1] == SpeechEnd(pytest.approx(0.30), pytest.approx(0.30), False)
    assert not seg.in_speech
    # Every frame of the utterance, trailing silence included, was passed on as audio, with contiguous times.
    all_events = events + end_events
    assert audio_bytes(all_events) == 26 * FRAME_BYTES
    audio = [e for e in all_events if isinstance(e, SpeechAudio)]
    for a, b in zip(audio, audio[1:], strict=False):
        assert b.t == pytest.approx(a.t + len(a.pcm) / 2 / 16000)


def test_two_utterances_separated_by_silence() -> None:
    events = segmenter().feed(pcm("1" * 10 + "0" * 30 + "1" * 10 + "0" * 20))
    ends = [e for e in events if isinstance(e, SpeechEnd)]
    starts = [e for e in events if isinstance(e, SpeechStart)]
    assert len(starts) == len(ends) == 2
    # Second onset at frame 43 (1.29 s) with a full 10-frame pre-roll: 0.99 s.
    assert starts[1].t == pytest.approx(0.99)
    assert ends[1].t == pytest.approx(1.50)
    assert not any(e.discarded for e in ends)


def test_short_burst_is_discarded() -> None:
    events = segmenter().feed(pcm("1111" + "0" * 20))
    assert marks(events) == [SpeechStart(0.0), SpeechEnd(pytest.approx(0.12), pytest.approx(0.12), True)]


def test_exactly_min_speech_is_kept() -> None:
    events = segmenter().feed(pcm("1" * 6 + "0" * 20))
    assert marks(events)[-1] == SpeechEnd(pytest.approx(0.18), pytest.approx(0.18), False)


def test_odd_packet_sizes_give_the_same_events_as_whole_frames() -> None:
    data = pcm("0" * 12 + "1" * 4 + "0" * 3 + "1" * 9 + "0" * 20 + "11" + "0" * 5 + "1" * 12 + "0" * 17)
    whole = segmenter().feed(data)

    rng = random.Random(7)
    seg = segmenter()
    pieces: list[Event] = []
    pos = 0
    while pos < len(data):
        n = rng.choice([1, 3, 77, 481, 959, 961, 2001])
        pieces += seg.feed(data[pos:pos + n])
        pos += n
    assert pieces == whole
    assert len([e for e in whole if isinstance(e, SpeechEnd)]) == 2


def test_flush_closes_an_open_utterance() -> None:
    seg = segmenter()
    seg.feed(pcm("1" * 10))
    assert seg.flush() == [SpeechEnd(pytest.approx(0.30), pytest.approx(0.30), False)]
    assert not seg.in_speech
    assert seg.flush() == []


def test_flush_classifies_the_padded_remainder() -> None:
    seg = segmenter()
    events = seg.feed(pcm("1" * 10) + VOICED[:200])
    events += seg.flush()
    audio = [e for e in events if isinstance(e, SpeechAudio)]
    assert audio[-1].pcm == VOICED[:200] + bytes(FRAME_BYTES - 200)
    assert audio[-1].t == pytest.approx(0.30)
    assert events[-1] == SpeechEnd(pytest.approx(0.33), pytest.approx(0.33), False)


def test_flush_without_speech_emits_nothing() -> None:
    seg = segmenter()
    seg.feed(pcm("0" * 5) + SILENT[:100])
    assert seg.flush() == []
    assert seg.time == pytest.approx(0.18)


@pytest.mark.parametrize("frame_ms", [0, 5, 25, 40])
def test_invalid_frame_length_raises(frame_ms: int) -> None:
    with pytest.raises(ValueError, match="frame"):
        Segmenter(nonzero, frame_ms=frame_ms)


def test_a_classifier_is_required() -> None:
    with pytest.raises(TypeError):
        Segmenter()  # type: ignore[call-arg]


def test_the_classifier_alone_decides_voicing_once_per_frame() -> None:
    """A scripted classifier that ignores the audio: the segmenter follows its verdicts frame by frame."""
    script = iter("0" * 5 + "1" * 8 + "0" * 16 + "1")
    seen: list[int] = []

    def scripted(frame: bytes) -> bool:
        seen.append(len(frame))
        return next(script) == "1"

    seg = Segmenter(scripted, frame_ms=FRAME_MS, preroll_ms=150, hangover_ms=480, min_speech_ms=180)
    events = seg.feed(SILENT * 29)  # silent audio, voiced verdicts: content is the classifier's business
    assert seen == [FRAME_BYTES] * 29
    # Onset after frame 8 (0.24 s) with 5 frames of pre-roll; 8 voiced frames; the 16th silent frame ends it.
    assert marks(events) == [SpeechStart(pytest.approx(0.09)), SpeechEnd(pytest.approx(0.39), pytest.approx(0.24),
                                                                          False)]
    assert seg.feed(SILENT[:100]) == [] and len(seen) == 29  # no whole frame yet: not classified


def test_level_normalizer_raises_quiet_frames_and_leaves_silence_and_loud_audio_alone() -> None:
    from realtime.core.vad import LevelNormalizer

    level = LevelNormalizer(FRAME_MS, max_gain=16.0, target=16000)
    assert not level(SILENT).any()
    quiet = np.full(FRAME_SAMPLES, 100, "<i2")
    assert (level(quiet.tobytes()) == 1600).all()  # gain capped at 16
    loud = np.full(FRAME_SAMPLES, 20000, "<i2")
    assert (LevelNormalizer(FRAME_MS)(loud.tobytes()) == loud).all()


def test_core_vad_imports_no_engine() -> None:
    code = ("import sys; sys.modules['webrtcvad'] = sys.modules['onnxruntime'] = sys.modules['faster_whisper'] = None;"
            " import realtime.core.vad, realtime.core.lecture;"
            " assert not any(m.startswith('realtime.asr') for m in sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_dc_blocker_removes_an_offset_and_leaves_ordinary_audio_alone() -> None:
    from realtime.core.audio import DCBlocker

    rng = np.random.default_rng(0)
    speechlike = (rng.standard_normal(16000) * 3000).astype(np.int16)
    block = DCBlocker()
    assert block(speechlike.tobytes()) == speechlike.tobytes()  # no offset: bit for bit
    offset = np.clip(speechlike.astype(np.int32) + 8000, -32768, 32767).astype(np.int16)
    block = DCBlocker()
    out = [np.frombuffer(block(offset[i:i + 1600].tobytes()), "<i2") for i in range(0, 16000, 1600)]
    assert all(abs(float(chunk.mean())) < 300 for chunk in out[2:]), [float(c.mean()) for c in out]
    assert block(b"") == b""
