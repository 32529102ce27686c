"""Hostile audio through the real server and model: 30 minutes of silence, white noise, full-scale noise, clipping,
DC offset and 8 kHz material upsampled. Silence and noise must give no captions and no memory growth; speech under
abuse must still come out as speech."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from realtime.client import stream_audio
from testbed.server import ARTIFACTS, ServerProcess
from testbed.speech import english, wer

pytestmark = pytest.mark.slow

SR = 16000


@pytest.fixture(scope="module")
def unthrottled(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """Audio as fast as the client sends it (the rate limit off), so half an hour of silence takes seconds."""
    srv = ServerProcess(cache_dir, tmp_path_factory.mktemp("hostile") / "server.log", "--max-audio-rate", "0")
    yield srv
    srv.stop()


def metric(srv, name: str) -> float:
    with urllib.request.urlopen(srv.http + "/metrics", timeout=10) as r:
        body = r.read().decode()
    return next(s.value for f in text_string_to_metric_families(body) for s in f.samples if s.name == name)


def rss_mb(srv) -> float:
    return metric(srv, "realtime_resident_memory_bytes") / 2**20


def noise(seconds: float, dbfs: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    amp = 32767 * 10 ** (dbfs / 20)
    return np.clip(rng.standard_normal(int(seconds * SR)) * amp, -32768, 32767).astype(np.int16)


def results() -> dict:
    path = ARTIFACTS / "hostile.json"
    return json.loads(path.read_text()) if path.exists() else {}


def keep(name: str, data: dict) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "hostile.json").write_text(json.dumps({**results(), name: data}, indent=1))
    print(f"\n{name}: {json.dumps(data)}")


async def test_half_an_hour_of_silence_gives_nothing_and_keeps_memory_flat(unthrottled):
    before = rss_mb(unthrottled)
    await stream_audio(unthrottled.url, "silence-warmup", np.zeros(60 * SR, np.int16), speed=0, chunk_ms=1000)
    warm = rss_mb(unthrottled)
    silence = np.zeros(30 * 60 * SR, np.int16)
    silence[::7] = 1  # not pure digital zero: a dithered line input
    result = await stream_audio(unthrottled.url, "silence", silence, speed=0, chunk_ms=1000, stop_timeout=300)
    after = rss_mb(unthrottled)
    shown = [e for e in result.events if e["type"] in ("partial", "final")]
    stopped = result.events[-1]
    keep("silence_30min", {"rss_mb_start": round(before, 1), "rss_mb_after_1min": round(warm, 1),
                           "rss_mb_after_31min": round(after, 1), "captions": len(shown)})
    assert stopped["type"] == "status" and stopped["state"] == "stopped" and stopped["audio_s"] == pytest.approx(1800)
    assert not shown, shown[:3]
    assert after - warm < 40, (warm, after)  # half an hour more audio, no growth beyond noise


@pytest.mark.parametrize(("name", "audio"), [
    ("white_noise_-30dBFS", lambda: noise(30, -30)),
    ("white_noise_-10dBFS", lambda: noise(30, -10, seed=2)),
    ("full_scale_noise", lambda: noise(20, 0, seed=3)),
    ("full_scale_square_100Hz", lambda: np.where(np.sin(2 * np.pi * 100 * np.arange(20 * SR) / SR) >= 0, 32767,
                                                 -32768).astype(np.int16)),
    ("dc_offset_only", lambda: np.full(20 * SR, 12000, np.int16)),
])
async def test_noise_gives_no_phantom_captions(unthrottled, name: str, audio):
    result = await stream_audio(unthrottled.url, f"noise-{name.lower().replace('_', '-')}", audio(), speed=0)
    finals = [f["text"] for f in result.finals]
    keep(name, {"finals": finals})
    assert not finals, finals


def clipped(x: np.ndarray) -> np.ndarray:
    return np.clip(x.astype(np.int32) * 8, -32768, 32767).astype(np.int16)


def dc_offset(x: np.ndarray) -> np.ndarray:
    return np.clip(x.astype(np.int32) + 8000, -32768, 32767).astype(np.int16)


def telephone(x: np.ndarray) -> np.ndarray:
    """Down to 8 kHz (averaging pairs: a crude low-pass) and back up by linear interpolation."""
    narrow = x[: len(x) // 2 * 2].reshape(-1, 2).astype(np.float64).mean(axis=1)
    up = np.interp(np.arange(len(narrow) * 2) / 2, np.arange(len(narrow)), narrow)
    return up.astype(np.int16)


def loud(x: np.ndarray) -> np.ndarray:
    peak = max(1, int(np.abs(x.astype(np.int32)).max()))
    return (x.astype(np.float64) * 32767 / peak).astype(np.int16)


@pytest.mark.parametrize(("name", "abuse"), [("clipped_x8", clipped), ("dc_offset", dc_offset),
                                             ("upsampled_from_8kHz", telephone), ("peak_normalised", loud)])
async def test_abused_speech_still_transcribes(unthrottled, clips, name: str, abuse):
    clip = english(clips)[0]
    result = await stream_audio(unthrottled.url, f"abused-{name.lower().replace('_', '-')}", abuse(clip.samples()),
                                speed=0, language="en")
    score = wer(clip.reference, result.text)
    keep(name, {"wer": round(score, 3), "text": result.text})
    assert score < 0.5, (clip.reference, result.text)
