"""The real VAD classifiers (realtime.asr.vad: webrtcvad, and webrtcvad confirmed by Silero) behind a Segmenter."""

from __future__ import annotations

import numpy as np
import pytest

from realtime.asr.vad import combined_classifier, default_classifier, webrtc_classifier
from realtime.core.vad import Segmenter, SpeechEnd


@pytest.mark.parametrize("aggressiveness", [-1, 4])
@pytest.mark.parametrize("factory", [webrtc_classifier, combined_classifier, default_classifier])
def test_invalid_aggressiveness_raises(factory, aggressiveness: int) -> None:
    with pytest.raises(ValueError, match="aggressiveness"):
        factory(aggressiveness)


@pytest.mark.parametrize("frame_ms", [10, 20, 30])
def test_real_webrtcvad_hears_nothing_in_silence(frame_ms: int) -> None:
    seg = Segmenter(default_classifier(3, frame_ms), frame_ms=frame_ms)
    assert seg.feed(bytes(16000 * 2 * 3)) == []
    assert seg.flush() == []


def real_segmenter_ends(noise_rms: float, seconds: float = 3.0) -> list[SpeechEnd]:
    """Utterance ends the default (webrtcvad + Silero) segmenter at aggressiveness 3 reports on Gaussian white
    noise."""
    noise = (np.random.default_rng(0).standard_normal(16000 * round(seconds)) * noise_rms).astype("<i2").tobytes()
    seg = Segmenter(default_classifier(3))
    return [e for e in seg.feed(noise) + seg.flush() if isinstance(e, SpeechEnd)]


@pytest.mark.parametrize("noise_rms", [3, 10, 30])
def test_real_webrtcvad_keeps_no_utterance_from_faint_white_noise(noise_rms: float) -> None:
    # webrtcvad may call its first few frames speech while its noise model adapts; the segmenter must report at
    # most a discarded blip, never a real utterance.
    assert all(e.discarded and e.voiced_s < 0.2 for e in real_segmenter_ends(noise_rms))


def test_real_webrtcvad_keeps_no_utterance_from_low_white_noise() -> None:
    assert all(e.discarded for e in real_segmenter_ends(100))  # RMS 100 = -50 dBFS


def test_default_classifier_is_webrtcvad_alone_without_silero() -> None:
    # Digital silence is unvoiced for both; the Silero-free one must not touch the model (no probe state to build).
    for classify in (default_classifier(2, 30, silero=False), default_classifier(2, 30, silero=True)):
        assert classify(bytes(960)) is False
