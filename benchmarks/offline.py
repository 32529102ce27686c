"""The offline path end to end: a long file posted to `POST /v1/audio/transcriptions` of a real server with the real
`openai` SDK. Reports the real-time factor (wall time / audio duration), the server's peak RSS while it worked, and
WER against the concatenated references.

    python -m benchmarks.offline --minutes 10 [--model base] [--format verbose_json]

The file repeats the English clips of ../shared/audio (REALTIME_TEST_AUDIO) with short pauses until it is
`--minutes` long; it is written to disk as it is made (a 60-minute WAV is 115 MB) and uploaded from there.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import wave
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS
from testbed.server import Server
from testbed.speech import SR, english, load_clips, wer


def build_file(path: Path, minutes: float, pause_s: float = 0.8) -> tuple[float, str]:
    """Write the long WAV; its duration and the reference text of what it holds."""
    clips = english(load_clips(path.parent / "synth"))
    target = round(minutes * 60 * SR)
    pause = np.zeros(round(pause_s * SR), np.int16)
    written, refs, i = 0, [], 0
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        while written < target:
            clip = clips[i % len(clips)]
            audio = clip.samples()
            w.writeframes(audio.astype("<i2").tobytes() + pause.tobytes())
            written += len(audio) + len(pause)
            refs.append(clip.reference)
            i += 1
    return written / SR, " ".join(refs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--model", default="base")
    ap.add_argument("--format", default="json", choices=["json", "verbose_json", "text", "srt", "vtt"])
    ap.add_argument("--server-arg", action="append", default=[], help="extra `realtime serve` argument")
    args = ap.parse_args()

    import openai

    with tempfile.TemporaryDirectory(prefix="offline-bench-") as tmp:
        path = Path(tmp) / "lecture.wav"
        duration, reference = build_file(path, args.minutes)
        server = Server(["--model", args.model, "--max-lecture-s", str(max(duration + 60, 3600)),
                         "--max-upload-mb", "2000", *args.server_arg], Path(tmp) / "server.log")
        try:
            client = openai.OpenAI(base_url=server.http + "/v1", api_key="open-server", max_retries=0,
                                   timeout=24 * 3600)
            rss_idle = server.peak_rss_mb()
            server.reset_peak_rss()
            cpu0, t0 = server.cpu_s(), time.monotonic()
            with open(path, "rb") as f:
                result = client.audio.transcriptions.create(model="whisper-1", file=f, language="en",
                                                            response_format=args.format)
            wall = time.monotonic() - t0
            cpu = server.cpu_s() - cpu0
            peak = server.peak_rss_mb()
        finally:
            server.stop()
    text = result if isinstance(result, str) else result.text
    report = {"minutes": round(duration / 60, 2), "model": args.model, "format": args.format,
              "wall_s": round(wall, 1), "rtf": round(wall / duration, 4), "server_cpu_s": round(cpu, 1),
              "peak_rss_mb": peak, "rss_before_mb": rss_idle, "wer": round(wer(reference, text), 4),
              "words_ref": len(reference.split()), "words_hyp": len(text.split())}
    print(json.dumps(report, indent=1))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"offline-{args.model}-{round(args.minutes)}min.json").write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
