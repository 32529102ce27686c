"""Offline passes with word timestamps: the word-timing truth, and the offline baseline's transcript.

Both are `WhisperModel.transcribe` at beam 5, cached under .cache/bench/ keyed by the audio's hash, the model and
the options: an offline pass never changes for the same audio.

The truth of a lecture built from clips is the concatenation of per-clip passes shifted by each clip's start, so the
noise between clips cannot produce phantom words and the long lecture (the same clips repeated) costs one pass per
distinct clip; a whole-file pass over a lecture with pauses drops whole sentences with base (WER 0.43-0.53 on the
dev lecture, with or without VAD or word timestamps), so it cannot be the truth. Use the largest model the machine
can run for the truth (`--truth-model`).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from benchmarks.align import TimedWord
from benchmarks.common import Bench
from testbed.server import CACHE


@dataclass(frozen=True)
class Transcript:
    words: list[TimedWord]
    text: str
    decode_s: float  # wall time of the pass (measured when it was first computed)
    cached: bool


@lru_cache(maxsize=4)
def load_model(name: str, device: str = "cpu", compute_type: str = "int8") -> Any:
    """The model the server would load for `--model name` (shipped base, tiny.en package, directory or hub name)."""
    from faster_whisper import WhisperModel

    from realtime.asr.whisper import pick_device, resolve_model

    device, compute_type = pick_device(device, compute_type)
    return WhisperModel(str(resolve_model(name, CACHE)), device=device, compute_type=compute_type)


def _key(audio: np.ndarray, **opts: Any) -> str:
    h = hashlib.sha1(audio.astype("<i2").tobytes())
    h.update(json.dumps(opts, sort_keys=True).encode())
    return h.hexdigest()[:20]


def transcribe(audio: np.ndarray, model: str, *, device: str = "cpu", compute_type: str = "int8", beam: int = 5,
               vad: bool = False, words: bool = True, condition: bool = False, use_cache: bool = True) -> Transcript:
    """Transcribe int16 16 kHz audio offline (English), from the cache when possible.

    `words`: word timestamps (without them `words` holds the text's words with zero times); `vad`: faster-whisper's
    Silero filter first; `condition`: condition on previous text (faster-whisper's default for long files).
    """
    opts = {"model": model, "device": device, "compute_type": compute_type, "beam": beam, "vad": vad,
            "words": words, "condition": condition}
    path = CACHE / "bench" / f"offline-{_key(audio, **opts)}.json"
    if use_cache and path.is_file():
        data = json.loads(path.read_text())
        return Transcript([TimedWord(**w) for w in data["words"]], data["text"], data["decode_s"], True)
    whisper = load_model(model, device, compute_type)
    started = time.monotonic()
    segments = list(whisper.transcribe(audio.astype(np.float32) / 32768.0, language="en", beam_size=beam,
                                       word_timestamps=words, vad_filter=vad, condition_on_previous_text=condition)[0])
    if words:
        timed = [TimedWord(w.word.strip(), round(float(w.start), 3), round(float(w.end), 3))
                 for s in segments for w in (s.words or []) if w.word.strip()]
        text = " ".join(w.text for w in timed)
    else:
        text = " ".join(s.text.strip() for s in segments)
        timed = [TimedWord(w, 0.0, 0.0) for w in text.split()]
    decode_s = round(time.monotonic() - started, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**opts, "words": [asdict(w) for w in timed], "text": text, "decode_s": decode_s}))
    return Transcript(timed, text, decode_s, False)


def lecture_truth(bench: Bench, model: str, device: str = "cpu", compute_type: str = "int8") -> list[TimedWord]:
    """Word-timing truth of a clip lecture: one offline pass per clip, shifted to the clip's place in the lecture."""
    out: list[TimedWord] = []
    for clip, (start, _) in zip(bench.lecture.clips, bench.lecture.spans, strict=True):
        for w in transcribe(clip.samples(), model, device=device, compute_type=compute_type).words:
            out.append(TimedWord(w.text, round(w.start + start, 3), round(w.end + start, 3)))
    return out

