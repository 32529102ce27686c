"""Voice activity segmentation: PCM in, utterance boundaries out.

`Segmenter.feed(pcm)` re-frames audio into 10/20/30 ms frames, classifies each with the `Classifier` it is given
(the real ones, webrtcvad and Silero, are in realtime.asr.vad; tests pass plain functions) and returns `SpeechStart`,
`SpeechAudio` and `SpeechEnd` events with times in seconds from the start of the stream. Onset needs several voiced
frames in a short window (so clicks don't open utterances); `preroll_ms` of audio before the onset is included so
first syllables are not clipped; an utterance ends after `hangover_ms` without voice; utterances with less than
`min_speech_ms` of voiced audio are reported as discarded.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from realtime.core.audio import SAMPLE_RATE, Reframer

# Scores one frame (`frame_ms` of 16 kHz int16 PCM): True when voiced. Called once per frame, in stream order.
Classifier = Callable[[bytes], bool]


@dataclass(frozen=True)
class SpeechStart:
    t: float  # stream time of the first sample in the utterance (pre-roll included)


@dataclass(frozen=True)
class SpeechAudio:
    pcm: bytes
    t: float  # stream time of the first sample of `pcm`


@dataclass(frozen=True)
class SpeechEnd:
    t: float  # stream time just after the last voiced frame
    voiced_s: float
    discarded: bool  # too little voiced audio: a click, a cough


class LevelNormalizer:
    """Gain for quiet microphones: both detectors miss quiet speech (measured: a FLEURS clip peaking at -44 dBFS
    right after a loud one was detected 1.4 s late), so frames are scaled to bring the loudest frame of the last
    `window_s` to `target`, with at most `max_gain`; digital silence stays silence."""

    def __init__(self, frame_ms: int = 30, window_s: float = 2.0, max_gain: float = 16.0, target: int = 16000):
        self._peaks: deque[int] = deque(maxlen=max(1, int(window_s * 1000 / frame_ms)))
        self.max_gain = max_gain
        self.target = target

    def __call__(self, frame: bytes) -> np.ndarray:
        samples = np.frombuffer(frame, "<i2")
        self._peaks.append(int(np.abs(samples.astype(np.int32)).max()) if len(samples) else 0)
        gain = min(self.max_gain, self.target / max(1, max(self._peaks)))
        if gain <= 1.0:
            return samples
        return np.clip(samples * gain, -32768, 32767).astype("<i2")


class Segmenter:
    def __init__(
        self,
        classify: Classifier,
        *,
        frame_ms: int = 30,
        preroll_ms: int = 300,
        hangover_ms: int = 500,
        min_speech_ms: int = 200,
        onset_frames: int = 0,
        onset_window: int = 0,
    ):
        if frame_ms not in (10, 20, 30):
            raise ValueError("VAD frame length must be 10, 20 or 30 ms")
        self.frame_ms = frame_ms
        self.frame_bytes = SAMPLE_RATE * frame_ms // 1000 * 2
        self.classify = classify
        self._reframer = Reframer(self.frame_bytes)
        # Onset: `onset_frames` voiced among the last `onset_window` frames (about 90 of 150 ms by default).
        self.onset_window = onset_window or max(1, 150 // frame_ms)
        self.onset_frames = onset_frames or max(1, (self.onset_window * 3 + 4) // 5)
        self.preroll_frames = max(self.onset_window, preroll_ms // frame_ms)
        self.hangover_frames = max(1, hangover_ms // frame_ms)
        self.min_voiced_frames = max(1, min_speech_ms // frame_ms)
        self._ring: deque[tuple[bytes, bool]] = deque(maxlen=self.preroll_frames)
        self._frames_seen = 0
        self.in_speech = False
        self._silent_run = 0
        self._voiced = 0
        self._last_voiced_end = 0.0

    @property
    def time(self) -> float:
        """Stream time covered by frames classified so far."""
        return self._frames_seen * self.frame_ms / 1000

    @property
    def trailing_silence_s(self) -> float:
        """Unvoiced audio at the end of the open utterance so far (0 outside speech): the hangover under way."""
        return self._silent_run * self.frame_ms / 1000 if self.in_speech else 0.0

    @property
    def last_voiced_end(self) -> float:
        """Stream time just after the latest voiced frame of the open (or last) utterance."""
        return self._last_voiced_end

    def feed(self, pcm: bytes) -> list[SpeechStart | SpeechAudio | SpeechEnd]:
        events: list[SpeechStart | SpeechAudio | SpeechEnd] = []
        for frame in self._reframer.feed(pcm):
            self._step(frame, events)
        return events

    def flush(self) -> list[SpeechStart | SpeechAudio | SpeechEnd]:
        """End of stream: classify the padded remainder and close any open utterance."""
        events: list[SpeechStart | SpeechAudio | SpeechEnd] = []
        last = self._reframer.flush()
        if last is not None:
            self._step(last, events)
        if self.in_speech:
            events.append(self._end())
        return events

    def _step(self, frame: bytes, events: list) -> None:
        t = self.time
        voiced = self.classify(frame)
        self._frames_seen += 1
        if not self.in_speech:
            self._ring.append((frame, voiced))
            recent = list(self._ring)[-self.onset_window:]
            if sum(v for _, v in recent) >= self.onset_frames:
                self.in_speech = True
                start = self.time - len(self._ring) * self.frame_ms / 1000
                events.append(SpeechStart(start))
                events.append(SpeechAudio(b"".join(f for f, _ in self._ring), start))
                self._voiced = sum(v for _, v in self._ring)
                self._silent_run = 0
                self._last_voiced_end = self.time
                self._ring.clear()
            return
        events.append(SpeechAudio(frame, t))
        if voiced:
            self._voiced += 1
            self._silent_run = 0
            self._last_voiced_end = self.time
        else:
            self._silent_run += 1
            if self._silent_run >= self.hangover_frames:
                events.append(self._end())

    def _end(self) -> SpeechEnd:
        self.in_speech = False
        voiced_s = self._voiced * self.frame_ms / 1000
        event = SpeechEnd(self._last_voiced_end, voiced_s, self._voiced < self.min_voiced_frames)
        self._voiced = 0
        self._silent_run = 0
        return event
