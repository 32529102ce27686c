"""The batched offline path: a recorded file, decoded in bounded chunks, transcribed at low priority.

Files (uploads to `POST /v1/audio/transcriptions`, recorded lectures uploaded into rooms) can be hours long, so
nothing here holds a whole file: `decode_chunks` reads it with PyAV (FFmpeg) and hands out about `chunk_s` of 16 kHz
mono float32 at a time, cut at the quietest 100 ms near the boundary so that no word is split between chunks.
Each chunk is transcribed by faster-whisper's `BatchedInferencePipeline` (Silero VAD cuts the chunk into speech
pieces of up to 30 s, split at pauses: `speech_pieces`, decoded as one batch), one chunk at a time: on CPU by a
copy of the model in a nice-19 thread beside the live pool (`realtime.asr.lane`), elsewhere on the loaded model
through `Engine.run_background`, only while no live speaker waits for a decode. Live captions keep priority; an
upload takes what the speakers leave.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import numpy as np

from realtime.asr.lane import Lane
from realtime.asr.sniff import HEAD_BYTES, looks_like_audio
from realtime.config import available_cpus
from realtime.core.audio import SAMPLE_RATE

CUT_WINDOW_S = 0.1  # the quiet point is the lowest-energy window of this length ...
CUT_HOP_S = 0.02
CUT_SEARCH_S = 5.0  # ... within this many seconds before the chunk boundary
PIECE_GAP_S = 0.5  # speech pieces decoded as one batch item never span a pause this long (see speech_pieces)
MAX_PIECE_S = 30.0  # Whisper's window
TRUNCATION_SLACK_S = 1.0  # decoded audio this much shorter than the header says (and 2%) is a truncated file
STATUS = {"not_audio": 415, "corrupt": 400, "too_long": 413, "too_large": 413}
Source = str | Path | BinaryIO
T = TypeVar("T")


class AudioError(ValueError):
    """A file that cannot be transcribed. `code`: not_audio (415), corrupt (400: truncated or undecodable, the
    message names what failed), too_long (413: over max_s), too_large (413: over an upload size limit)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.status = STATUS[code]


@dataclass(frozen=True)
class OfflineWord:
    start: float
    end: float
    word: str
    probability: float


@dataclass(frozen=True)
class OfflineSegment:
    id: int
    start: float
    end: float
    text: str
    words: tuple[OfflineWord, ...]
    avg_logprob: float
    no_speech_prob: float
    temperature: float
    compression_ratio: float


# ------------------------------------------------------------------------------------------------ reading files


def _rewind(source: Source) -> Any:
    if isinstance(source, (str, Path)):
        return str(source)
    source.seek(0)
    return source


def _head(source: Source, size: int = 16) -> bytes:
    if isinstance(source, (str, Path)):
        with open(source, "rb") as f:
            return f.read(size)
    source.seek(0)
    head = source.read(size)
    source.seek(0)
    return head


def _open(source: Source):
    """The PyAV container and its first audio stream, or AudioError."""
    import av

    try:
        container = av.open(_rewind(source), mode="r", metadata_errors="ignore")
    except (FileNotFoundError, av.error.FileNotFoundError):
        raise
    except (av.error.FFmpegError, UnicodeDecodeError, OSError) as exc:
        if looks_like_audio(_head(source, HEAD_BYTES)):
            raise AudioError("corrupt", f"the file looks like audio but its header cannot be read "
                                        f"({_ffmpeg_reason(exc)})") from None
        raise AudioError("not_audio", "the file is not audio FFmpeg can read") from None
    if not container.streams.audio:
        container.close()
        raise AudioError("not_audio", "the file has no audio stream")
    return container, container.streams.audio[0]


def _ffmpeg_reason(exc: BaseException) -> str:
    return (getattr(exc, "strerror", None) or str(exc) or type(exc).__name__).splitlines()[0][:200]


def _riff_duration(head: bytes) -> float | None:
    """The duration a WAV header's data chunk declares. FFmpeg derives a WAV's duration from the file's size, so
    without this a WAV cut short would read as a shorter, valid file."""
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos, byte_rate = 12, 0
    while pos + 8 <= len(head):
        cid, size = head[pos:pos + 4], int.from_bytes(head[pos + 4:pos + 8], "little")
        if cid == b"fmt " and pos + 20 <= len(head):
            byte_rate = int.from_bytes(head[pos + 16:pos + 20], "little")
        elif cid == b"data":
            return size / byte_rate if byte_rate and 0 < size < 0xFFFFFFFF else None  # 0/-1: streamed WAV
        pos += 8 + size + (size & 1)
    return None


def _declared_duration(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000  # AV_TIME_BASE
    return None


def probe(source: Source) -> float:
    """The file's duration in seconds, from its header (or, when the header has none, by decoding it once, in
    bounded memory). AudioError when it is not audio or cannot be read."""
    riff = _riff_duration(_head(source, 4096))  # read before PyAV shares a file object's position
    container, stream = _open(source)
    with container:
        declared = _declared_duration(container, stream)
    if riff is not None and declared is not None and riff > declared + max(TRUNCATION_SLACK_S, 0.02 * riff):
        raise AudioError("corrupt", f"the WAV file is truncated: its header says {riff:.1f} s of audio, "
                                    f"the file holds {declared:.1f} s")
    if declared is not None:
        return max(0.0, declared)
    return sum(len(chunk) for _, chunk in decode_chunks(source)) / SAMPLE_RATE


def _frames(container, stream) -> Iterator[np.ndarray]:
    """Decoded float32 16 kHz mono pieces of the first audio stream, one per decoded frame."""
    import av

    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    done = 0
    try:
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                piece = out.to_ndarray().reshape(-1)
                done += len(piece)
                yield piece
        for out in resampler.resample(None):
            yield out.to_ndarray().reshape(-1)
    except av.error.FFmpegError as exc:
        raise AudioError("corrupt", f"decoding the audio failed at {done / SAMPLE_RATE:.1f} s "
                                    f"({_ffmpeg_reason(exc)})") from None


def quiet_cut(audio: np.ndarray, search_s: float = CUT_SEARCH_S) -> int:
    """Where to end a chunk: the middle of the lowest-energy 100 ms within the last `search_s` of `audio`."""
    win, hop = round(CUT_WINDOW_S * SAMPLE_RATE), round(CUT_HOP_S * SAMPLE_RATE)
    lo = max(0, len(audio) - round(search_s * SAMPLE_RATE))
    region = audio[lo:].astype(np.float64)
    if len(region) <= win:
        return len(audio)
    power = np.concatenate([[0.0], np.cumsum(region * region)])
    starts = np.arange(0, len(region) - win + 1, hop)
    energy = power[starts + win] - power[starts]
    best = starts[len(energy) - 1 - int(np.argmin(energy[::-1]))]  # the latest of equally quiet windows
    return lo + int(best) + win // 2


def decode_chunks(source: Source, *, chunk_s: float = 60.0,
                  max_s: float | None = None) -> Iterator[tuple[float, np.ndarray]]:
    """(offset seconds, float32 16 kHz mono) chunks of about `chunk_s` (at most `chunk_s`), read incrementally.

    Memory stays at about one chunk whatever the file's length. Each chunk ends at a quiet point (`quiet_cut`) in
    its last few seconds. AudioError: not audio; corrupt (a decoding error, or a file that ends well before its
    header says: truncated), naming what failed; too_long when the header or the decoded audio passes `max_s`.
    """
    if chunk_s <= 1.0:
        raise ValueError("chunk_s must be over 1 s")
    limit = round(chunk_s * SAMPLE_RATE)
    search_s = min(CUT_SEARCH_S, chunk_s / 4)
    riff = _riff_duration(_head(source, 4096))
    container, stream = _open(source)
    with container:
        declared = riff if riff is not None else _declared_duration(container, stream)
        if max_s is not None and declared is not None and declared > max_s:
            raise AudioError("too_long", f"the audio is {declared:.0f} s long, over the limit of {max_s:.0f} s")
        pending: list[np.ndarray] = []
        have = 0
        offset = 0  # samples handed out so far
        for piece in _frames(container, stream):
            pending.append(piece)
            have += len(piece)
            if max_s is not None and (offset + have) / SAMPLE_RATE > max_s + 1.0:
                raise AudioError("too_long", f"the audio is longer than the limit of {max_s:.0f} s")
            while have >= limit:
                buf = np.concatenate(pending)
                cut = quiet_cut(buf[:limit], search_s)
                yield offset / SAMPLE_RATE, buf[:cut]
                offset += cut
                pending, have = [buf[cut:].copy()], len(buf) - cut  # a copy: the view would keep `buf` alive
        tail = np.concatenate(pending) if pending else np.zeros(0, np.float32)
        total = (offset + len(tail)) / SAMPLE_RATE
        if declared is not None and total < declared - max(TRUNCATION_SLACK_S, 0.02 * declared):
            raise AudioError("corrupt", f"the file is truncated: its header says {declared:.1f} s of audio, "
                                        f"only {total:.1f} s could be decoded")
        if len(tail):
            yield offset / SAMPLE_RATE, tail


# ------------------------------------------------------------------------------------------------ transcribing


def speech_pieces(audio: np.ndarray, gap_s: float = PIECE_GAP_S) -> list[dict[str, float]]:
    """Silero VAD's speech regions, joined across pauses shorter than `gap_s` up to 30 s: the batch items.

    The pipeline's own grouping packs speech into 30 s items whatever the pauses between; a batch item cannot seek
    as sequential decoding does, and base ends a window at a longer pause inside it and drops what follows. On
    10 minutes of FLEURS clips with 0.8 s pauses that lost 29% of the words (WER 0.44); items that never span a
    pause of 0.5 s or more gave WER 0.10 at about the same speed (3-minute sample; benchmarks/offline.py).
    """
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    regions = get_speech_timestamps(audio, VadOptions(min_silence_duration_ms=160, max_speech_duration_s=MAX_PIECE_S))
    out: list[list[float]] = []
    for r in regions:
        start, end = r["start"] / SAMPLE_RATE, r["end"] / SAMPLE_RATE
        if out and start - out[-1][1] < gap_s and end - out[-1][0] <= MAX_PIECE_S:
            out[-1][1] = end
        else:
            out.append([start, end])
    return [{"start": round(s, 3), "end": round(e, 3)} for s, e in out]


class OfflineTranscriber:
    """faster-whisper's batched pipeline, on the server's loaded model or on a copy of it in a lane of its own.

    `decoder` is the server's WhisperDecoder: its model, device and compute type (set by --model, --device,
    --compute-type) and its final beam size are used as they are, so the shipped base model on CPU and a large
    model on CUDA both work by configuration alone. An English-only model transcribes English whatever is asked.
    `threads` > 0 on CPU: the chunks are decoded by a copy of the model with that many threads in a low-priority
    thread beside the live pool, or with `idle_threads` (0: every core) while no live speaker is admitted
    (`realtime.asr.lane`, which says why); 0, or on a GPU: on the loaded model, in the
    live pool's background lane (`Engine.run_background`).
    """

    def __init__(self, decoder: Any, *, batch_size: int = 8, threads: int = 0, idle_threads: int = 0):
        from faster_whisper import BatchedInferencePipeline

        self.decoder = decoder
        self.lane: Lane | None = None
        if threads > 0 and getattr(decoder, "device", "cpu") == "cpu":
            self.lane = Lane(partial(_own_pipeline, decoder), threads, idle_threads or available_cpus())
        self.name: str = decoder.name
        self.batch_size = max(1, batch_size)
        self.multilingual: bool = bool(getattr(decoder, "multilingual", True))
        options = getattr(decoder, "options", None)
        self.beam_size: int = getattr(options, "final_beam", 5)
        self.pipeline = None if self.lane else BatchedInferencePipeline(decoder.model)
        self._lock = threading.Lock()  # the pipeline keeps per-call state (last_speech_timestamp)

    async def run(self, engine: Any, call: Callable[[Any], T]) -> T:
        """`call(pipeline)` on this transcriber's lane, or in the engine's background lane."""
        if self.lane is not None:  # every core while no live speaker is admitted
            return await self.lane.run(call, wide=lambda: engine.speakers == 0)
        return await engine.run_background(partial(call, self.pipeline))

    def transcribe_chunk(self, audio: np.ndarray, offset_s: float, *, language: str | None = None,
                         task: str = "transcribe", prompt: str | None = None, temperature: float = 0.0,
                         word_timestamps: bool = False, pipeline: Any = None) -> tuple[list[OfflineSegment], str]:
        """Blocking: one chunk's segments (ids from 0, times on the file's clock) and its language."""
        if not self.multilingual:
            language, task = "en", "transcribe"
        if len(audio) < SAMPLE_RATE // 10:  # under 100 ms: nothing to hear, and the VAD needs a window
            return [], language or "en"
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        with self._lock:
            pieces = speech_pieces(audio)
            if not pieces:
                return [], language or "en"
            segments, info = (pipeline or self.pipeline).transcribe(
                audio, language=language, task=task, beam_size=self.beam_size, best_of=1, temperature=temperature,
                initial_prompt=prompt or None, word_timestamps=word_timestamps, without_timestamps=False,
                clip_timestamps=pieces, batch_size=self.batch_size, log_progress=False)
            out = []
            for seg in segments:
                text = seg.text.strip()
                if not text:
                    continue
                words = tuple(OfflineWord(_t(w.start, offset_s), _t(w.end, offset_s), w.word,
                                          round(float(w.probability), 4)) for w in (seg.words or [])
                              if w.word.strip())
                out.append(OfflineSegment(len(out), _t(seg.start, offset_s), _t(seg.end, offset_s), text, words,
                                          float(seg.avg_logprob), float(seg.no_speech_prob),
                                          float(seg.temperature if seg.temperature is not None else temperature),
                                          float(seg.compression_ratio)))
        return out, info.language


def _own_pipeline(decoder: Any, threads: int) -> Any:
    """A batched pipeline on a copy of the decoder's model with `threads` threads (called on the lane's thread)."""
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    model = WhisperModel(str(decoder.path), device="cpu", compute_type=decoder.compute_type, cpu_threads=threads,
                         num_workers=1)
    return BatchedInferencePipeline(model)


def _t(seconds: float, offset_s: float) -> float:
    return round(float(seconds) + offset_s, 3)  # plain floats (faster-whisper gives numpy ones): JSON-ready


class FileTranscription:
    """What `transcribe_file` returns: an async iterator of OfflineSegment (ids counted across the file) that also
    tells, once known, the file's `duration` (s) and `language` (the one asked, else the first chunk's)."""

    def __init__(self, run: Callable[[FileTranscription], AsyncIterator[OfflineSegment]]):
        self.duration: float | None = None
        self.language: str | None = None
        self.done_s = 0.0
        self._gen = run(self)

    def __aiter__(self) -> FileTranscription:
        return self

    async def __anext__(self) -> OfflineSegment:
        return await self._gen.__anext__()

    async def aclose(self) -> None:
        await self._gen.aclose()


def transcribe_file(engine: Any, transcriber: OfflineTranscriber, source: Source, *, language: str | None = None,
                    task: str = "transcribe", prompt: str | None = None, temperature: float = 0.0,
                    word_timestamps: bool = False, max_s: float | None = None, chunk_s: float = 60.0,
                    on_progress: Callable[[float, float], None] | None = None) -> FileTranscription:
    """Transcribe a file chunk by chunk; each chunk is one job below live decodes (`OfflineTranscriber.run`).

    Iterate the result with `async for`. File reading happens in a thread (FFmpeg decoding is off the event loop)
    and one chunk ahead at most. `on_progress(done_s, total_s)` after each chunk. Cancelling the iteration (or
    `aclose`) stops before the next chunk; a chunk already on a worker finishes there and is dropped. AudioError
    as `decode_chunks` raises it (too_long before any work when the header shows it).
    """

    async def run(job: FileTranscription) -> AsyncIterator[OfflineSegment]:
        total = await asyncio.to_thread(probe, source)
        job.duration = total
        if max_s is not None and total > max_s:
            raise AudioError("too_long", f"the audio is {total:.0f} s long, over the limit of {max_s:.0f} s")
        chunks = decode_chunks(source, chunk_s=chunk_s, max_s=max_s)
        lang, next_id = language, 0
        try:
            while True:
                item = await asyncio.to_thread(next, chunks, None)
                if item is None:
                    break
                offset, audio = item
                call = partial(transcriber.transcribe_chunk, audio, offset, language=lang, task=task,
                               prompt=prompt, temperature=temperature, word_timestamps=word_timestamps)
                segments, detected = await transcriber.run(engine, lambda p, c=call: c(pipeline=p))
                if lang is None and segments:  # the first chunk with speech fixes the file's language
                    lang = detected
                job.language = lang or detected
                for seg in segments:
                    yield dataclasses.replace(seg, id=next_id)
                    next_id += 1
                job.done_s = min(total, offset + len(audio) / SAMPLE_RATE) if total else offset
                if on_progress is not None:
                    on_progress(job.done_s, total)
        finally:
            with contextlib.suppress(ValueError):  # "generator already executing": a read in flight when cancelled
                chunks.close()

    return FileTranscription(run)
