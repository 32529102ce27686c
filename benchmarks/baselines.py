"""Baselines measured in the same run as the live stream, so readers see what streaming costs and what the commit
policy buys.

- offline: the lecture transcribed after the fact with the streaming model at beam 5, as a whole file (faster-whisper
  defaults) and clip by clip. The per-clip WER is the floor for the stream; stream WER minus it is the cost of
  streaming. The whole-file pass shows what a plain offline run of the recording gives (with base it drops
  sentences after pauses).
- naive fixed chunks: the audio cut into independent `chunk_s` pieces, each transcribed on its own as soon as it is
  complete (what a "just send 2-3 s blobs to Whisper" captioner does), greedy so that it keeps up (beam 5 on
  full-window chunks is slower than real time on two cores). Words are final when their chunk is done, so
  first-seen and committed coincide; they are timed computation-aware from the measured decode cost of each chunk
  (benchmarks.align.schedule_chunks), and words cut at chunk borders show up in its WER.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from benchmarks.align import StreamWord, TimedWord, latency_report, match_truth, schedule_chunks
from benchmarks.common import Bench
from benchmarks.truth import load_model, transcribe
from testbed.speech import SR, wer


def offline(bench: Bench, model: str, device: str, compute_type: str) -> dict[str, Any]:
    """WER and real-time factor of offline transcription with the streaming model: of the whole file with
    faster-whisper's defaults (what a user does with the recording afterwards), and clip by clip (the floor)."""
    whole = transcribe(bench.lecture.audio, model, device=device, compute_type=compute_type, words=False,
                       condition=True)
    clips = [transcribe(c.samples(), model, device=device, compute_type=compute_type) for c in bench.lecture.clips]
    clip_s = sum(c.samples().size for c in bench.lecture.clips) / SR
    return {
        "whole_file": {"wer": round(wer(bench.reference, whole.text), 3), "decode_s": whole.decode_s,
                       "rtf": round(whole.decode_s / bench.audio_s, 3), "cached": whole.cached},
        "per_clip": {"wer": round(wer(bench.reference, " ".join(c.text for c in clips)), 3),
                     "rtf": round(sum(c.decode_s for c in clips) / clip_s, 3),
                     "cached": all(c.cached for c in clips)},
    }


def naive_chunks(bench: Bench, truth: list[TimedWord], model: str, device: str, compute_type: str,
                 chunk_s: float = 2.5, beam: int = 1) -> dict[str, Any]:
    """Independent fixed chunks, each decoded in-process; latency simulated on one worker from measured costs."""
    whisper = load_model(model, device, compute_type)
    audio = bench.lecture.audio.astype(np.float32) / 32768.0
    step = int(chunk_s * SR)
    ready, cost, chunk_words = [], [], []
    for start in range(0, len(audio), step):
        piece = audio[start:start + step]
        began = time.monotonic()
        segments, _ = whisper.transcribe(piece, language="en", beam_size=beam, word_timestamps=True,
                                         condition_on_previous_text=False, vad_filter=False)
        offset = start / SR
        words = [TimedWord(w.word.strip(), offset + float(w.start), offset + float(w.end))
                 for s in segments for w in (s.words or []) if w.word.strip()]
        cost.append(time.monotonic() - began)
        ready.append((start + len(piece)) / SR)
        chunk_words.append(words)
    done = schedule_chunks(ready, cost)
    stream = [StreamWord(w.text, i, w.end, t, t, t) for i, (words, t) in enumerate(zip(chunk_words, done, strict=True))
              for w in words]
    timings = match_truth(stream, truth)
    # The "final" of a chunk is the chunk itself: delay from the end of its last matched spoken word.
    last: dict[int, float] = {}
    for w in timings:
        last[w.utterance] = max(last.get(w.utterance, 0.0), w.truth_end)
    delays = [done[i] - end for i, end in last.items()]
    text = " ".join(w.text for words in chunk_words for w in words)
    return {"chunk_s": chunk_s, "beam": beam, "wer": round(wer(bench.reference, text), 3),
            "rtf": round(sum(cost) / bench.audio_s, 3), "latency": latency_report(timings, delays, len(truth)),
            "committed_values": [round(w.to_commit, 3) for w in timings]}
