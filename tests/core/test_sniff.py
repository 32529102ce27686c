"""realtime.asr.sniff: bare MPEG audio and ADTS streams count as audio only with two consecutive frame headers, so
random bytes that happen to start with a frame sync are "not audio" (415), not "corrupt" (400)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from realtime.asr.sniff import HEAD_BYTES, looks_like_audio
from tests.core.test_offline import tone, write_mp3


def bare_frames(data: bytes) -> bytes:
    """The stream from its first frame sync on (an ID3 tag, if the encoder wrote one, removed)."""
    at = next(i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] & 0xE0 == 0xE0)
    return data[at:]


def write_adts(path: Path, audio: np.ndarray) -> bytes:
    import av

    with av.open(str(path), "w", format="adts") as out:
        stream = out.add_stream("aac", rate=16000)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(audio.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = 16000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return path.read_bytes()


def test_real_bare_streams_look_like_audio(tmp_path: Path) -> None:
    mp3 = bare_frames(write_mp3(tmp_path / "a.mp3", tone(3.0)).read_bytes())
    assert looks_like_audio(mp3[:HEAD_BYTES])
    adts = write_adts(tmp_path / "a.aac", tone(3.0))
    assert adts[0] == 0xFF and looks_like_audio(adts[:HEAD_BYTES])
    for magic in (b"RIFF\0\0\0\0WAVE", b"OggS\0", b"fLaC", b"ID3\x04", b"\0\0\0\x20ftypM4A "):
        assert looks_like_audio(magic + bytes(100)), magic


def test_random_bytes_behind_a_frame_sync_are_not_audio() -> None:
    rng = np.random.default_rng(7)
    for header in (b"\xff\xfb\x90\x64", b"\xff\xf3\x48\xc4", b"\xff\xf1\x50\x80\x2e\x7f\xfc"):
        hits = sum(looks_like_audio(header + rng.bytes(HEAD_BYTES)) for _ in range(200))
        assert hits <= 2, header  # a second header lands where the first says about 1 time in 2,000 or less
    assert not looks_like_audio(b"hello, not audio\n" * 100)
    assert not looks_like_audio(b"")
