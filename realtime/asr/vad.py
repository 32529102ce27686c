"""The concrete VAD classifiers for `realtime.core.vad.Segmenter`: webrtcvad, and webrtcvad confirmed by Silero.

Both engines live here, not in the core (which stays plain numpy): webrtcvad is a C extension, Silero an ONNX model
(see realtime.asr.silero). Each classifier scores one 10/20/30 ms frame of 16 kHz int16 PCM after level
normalisation (`LevelNormalizer`) and keeps its own state, so build one per stream.
"""

from __future__ import annotations

import webrtcvad

from realtime.asr.silero import SileroProbe
from realtime.core.audio import SAMPLE_RATE
from realtime.core.vad import Classifier, LevelNormalizer


def _vad(aggressiveness: int) -> webrtcvad.Vad:
    if not 0 <= aggressiveness <= 3:
        raise ValueError("VAD aggressiveness must be 0-3")
    return webrtcvad.Vad(aggressiveness)


def webrtc_classifier(aggressiveness: int, frame_ms: int = 30) -> Classifier:
    """webrtcvad alone, on level-normalised frames."""
    vad = _vad(aggressiveness)
    level = LevelNormalizer(frame_ms)

    def classify(frame: bytes) -> bool:
        return vad.is_speech(level(frame).tobytes(), SAMPLE_RATE)

    return classify


def combined_classifier(aggressiveness: int, silero_threshold: float = 0.5, frame_ms: int = 30) -> Classifier:
    """Voiced when webrtcvad and the Silero model both say so (Silero rejects noise that webrtcvad lets through)."""
    vad = _vad(aggressiveness)
    level = LevelNormalizer(frame_ms)
    probe = SileroProbe()

    def classify(frame: bytes) -> bool:
        samples = level(frame)
        prob = probe.feed(samples)
        return prob >= silero_threshold and vad.is_speech(samples.tobytes(), SAMPLE_RATE)

    return classify


def default_classifier(aggressiveness: int = 2, frame_ms: int = 30, *, silero: bool = True,
                       silero_threshold: float = 0.5) -> Classifier:
    """The classifier the settings ask for (`vad_aggressiveness`, `vad_frame_ms`, `vad_silero`,
    `vad_silero_threshold`): webrtcvad confirmed by Silero, or webrtcvad alone. With no arguments, the
    combined classifier Segmenter used to build when given none. `frame_ms` must match the Segmenter's."""
    if silero:
        return combined_classifier(aggressiveness, silero_threshold, frame_ms)
    return webrtc_classifier(aggressiveness, frame_ms)
