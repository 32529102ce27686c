"""realtime.asr.offline's file reading on small generated files: chunks are bounded and contiguous, memory stays at
about one chunk, cuts fall in quiet points, and bad files get the documented AudioError codes."""

from __future__ import annotations

import io
import tracemalloc
import wave
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from realtime.asr.offline import AudioError, decode_chunks, probe, quiet_cut

RATE = 16000


def tone(seconds: float, freq: float = 220.0, amp: float = 0.3) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_wav(path: Path, audio: np.ndarray) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def write_mp3(path: Path, audio: np.ndarray) -> Path:
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("mp3", rate=RATE)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(audio.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = RATE
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return path


def test_chunks_are_contiguous_bounded_and_complete(tmp_path: Path) -> None:
    audio = tone(47.3)
    path = write_wav(tmp_path / "a.wav", audio)
    chunks = list(decode_chunks(path, chunk_s=10.0))
    assert probe(path) == pytest.approx(47.3, abs=0.01)
    assert all(c.dtype == np.float32 for _, c in chunks)
    assert all(len(c) <= 10 * RATE for _, c in chunks) and len(chunks) == 5
    offsets = np.cumsum([0] + [len(c) for _, c in chunks[:-1]]) / RATE
    assert [o for o, _ in chunks] == pytest.approx(list(offsets))
    joined = np.concatenate([c for _, c in chunks])
    assert len(joined) == len(audio)
    assert np.abs(joined - audio).max() < 1e-3  # nothing lost or repeated at the cuts


def test_memory_stays_at_about_one_chunk(tmp_path: Path) -> None:
    """Ten minutes (38 MB as float32) read in 20 s chunks: the peak is a few chunks, not the file."""
    path = tmp_path / "long.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        piece = (tone(10.0) * 32767).astype("<i2").tobytes()
        for _ in range(60):
            w.writeframes(piece)
    tracemalloc.start()
    try:
        total = 0
        for _, chunk in decode_chunks(path, chunk_s=20.0):
            total += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == 600 * RATE
    chunk_bytes = 20 * RATE * 4  # the chunk being assembled, the one handed out, decoder buffers
    assert peak < 5 * chunk_bytes and peak < 600 * RATE * 4 / 6, f"peak {peak / 1e6:.1f} MB"


def test_cuts_fall_in_the_quiet_point_before_the_boundary(tmp_path: Path) -> None:
    """Speech-like tone with 300 ms pauses at 8.2 s and 17.5 s: 10 s chunks end inside those pauses, not at 10 s
    in the middle of a "word"."""
    pauses = (8.2, 17.5)
    audio = tone(25.0)
    for p in pauses:
        audio[round(p * RATE):round((p + 0.3) * RATE)] = 0.0
    path = write_wav(tmp_path / "p.wav", audio)
    cuts = [o for o, _ in decode_chunks(path, chunk_s=10.0)][1:]
    assert len(cuts) == len(pauses)
    for cut, p in zip(cuts, pauses, strict=True):
        assert p <= cut <= p + 0.3, (cut, p)


def test_quiet_cut_without_a_pause_stays_inside_the_search_window() -> None:
    audio = tone(10.0)
    cut = quiet_cut(audio, search_s=2.0)
    assert 8 * RATE <= cut <= 10 * RATE


def test_file_objects_work_like_paths(tmp_path: Path) -> None:
    path = write_mp3(tmp_path / "a.mp3", tone(6.0))
    f = io.BytesIO(path.read_bytes())
    assert probe(f) == pytest.approx(6.0, abs=0.1)
    assert sum(len(c) for _, c in decode_chunks(f, chunk_s=4.0)) / RATE == pytest.approx(6.0, abs=0.1)


def test_not_audio(tmp_path: Path) -> None:
    for name, data in {"text.txt": b"hello, not audio\n" * 100, "empty.bin": b"",
                       "noise.bin": b"\0" + np.random.default_rng(1).bytes(50000)}.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(AudioError) as err:
            probe(tmp_path / name)
        assert err.value.code == "not_audio" and err.value.status == 415, name


def test_truncated_and_corrupt_files_name_what_failed(tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "a.wav", tone(10.0)).read_bytes()
    (tmp_path / "cut.wav").write_bytes(wav[:len(wav) // 2])
    with pytest.raises(AudioError, match="truncated.*10.0 s") as err:
        probe(tmp_path / "cut.wav")
    assert err.value.code == "corrupt" and err.value.status == 400
    with pytest.raises(AudioError, match="truncated"):
        list(decode_chunks(tmp_path / "cut.wav"))
    (tmp_path / "head.wav").write_bytes(wav[:30])  # starts like a WAV: corrupt, not "not audio"
    with pytest.raises(AudioError, match="header") as err:
        probe(tmp_path / "head.wav")
    assert err.value.code == "corrupt"
    mp3 = bytearray(write_mp3(tmp_path / "a.mp3", tone(5.0)).read_bytes())
    (tmp_path / "cut.mp3").write_bytes(mp3[:len(mp3) // 2])
    with pytest.raises(AudioError, match="truncated"):
        list(decode_chunks(tmp_path / "cut.mp3"))
    mp3[2000:6000] = np.random.default_rng(2).bytes(4000)
    (tmp_path / "bad.mp3").write_bytes(bytes(mp3))
    with pytest.raises(AudioError, match=r"decoding the audio failed at \d+\.\d s") as err:
        list(decode_chunks(tmp_path / "bad.mp3"))
    assert err.value.code == "corrupt"


def test_too_long_before_any_chunk(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "a.wav", tone(12.0))
    chunks = decode_chunks(path, chunk_s=5.0, max_s=10.0)
    with pytest.raises(AudioError) as err:
        next(chunks)
    assert err.value.code == "too_long" and err.value.status == 413
    assert len(list(decode_chunks(path, chunk_s=5.0, max_s=12.5))) == 3


class CountingTranscriber:
    """transcribe_file's scheduling without a model: one segment per chunk, and a log of the chunks it got."""

    def __init__(self) -> None:
        self.offsets: list[float] = []

    async def run(self, engine, call):
        return await engine.run_background(partial(call, None))  # no model: the engine's background lane

    def transcribe_chunk(self, audio, offset_s, **_):
        from realtime.asr.offline import OfflineSegment

        self.offsets.append(offset_s)
        return [OfflineSegment(0, offset_s, offset_s + len(audio) / RATE, f"chunk at {offset_s:.1f}", (), -0.1, 0.0,
                               0.0, 1.0)], "en"


def test_transcribe_file_numbers_segments_and_stops_when_cancelled(tmp_path: Path) -> None:
    import asyncio

    from realtime.asr.offline import transcribe_file
    from realtime.asr.pool import Engine

    path = write_wav(tmp_path / "a.wav", tone(30.0))

    async def main() -> tuple[list[int], list[float], list[float], list[tuple[float, float]]]:
        engine = Engine(decoder=None, workers=1)  # type: ignore[arg-type] (only the background lane is used)
        engine.start()
        full, progress = CountingTranscriber(), []
        job = transcribe_file(engine, full, path, chunk_s=5.0, on_progress=lambda d, t: progress.append((d, t)))
        ids = [seg.id async for seg in job]
        assert job.duration == pytest.approx(30.0) and job.language == "en"
        cut = CountingTranscriber()
        job = transcribe_file(engine, cut, path, chunk_s=5.0)
        async for seg in job:
            if seg.id == 1:
                break
        await job.aclose()  # what cancelling the consumer amounts to: no further chunk is read or decoded
        await asyncio.sleep(0.2)
        await engine.close()
        return ids, full.offsets, cut.offsets, progress

    ids, offsets, cut_offsets, progress = asyncio.run(main())
    assert ids == list(range(len(offsets))) and len(offsets) >= 6
    assert len(cut_offsets) == 2
    assert progress[-1] == pytest.approx((30.0, 30.0)) and [d for d, _ in progress] == sorted(d for d, _ in progress)
