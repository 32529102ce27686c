"""Stream the multi-clip dev lecture through a real server at a given pace and report latency and WER.

    .venv/bin/python -m benchmarks.lecture [--speed 1.0] [--clips 6] [-- server flags...]

Starts `realtime serve` with the given flags (shipped model by default), plays the lecture (English dev clips joined
with 1-3 s of low noise), and prints a JSON report: per-word committed latency (word end -> first shown as
committed), first-appearance latency, end of speech -> final delay, WER, and the server's peak RSS.

Word ends here are the finals' own word times (quick, no truth pass); `python -m benchmarks.run` is the full
harness, timed against an independent offline truth and with baselines, capacity and fan-out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

from realtime.client import stream_audio
from realtime.core.audio import SAMPLE_RATE
from testbed.latency import final_delays, summary, word_latencies
from testbed.server import Server
from testbed.speech import ROOT, english, load_clips, make_lecture, wer


async def run(args: argparse.Namespace, server_args: list[str]) -> dict:
    tmp = Path(tempfile.mkdtemp())
    clips = english(load_clips(tmp))[: args.clips]
    lecture = make_lecture(clips)
    server = Server(server_args, tmp / "server.log")
    try:
        result = await stream_audio(server.url, "bench", lecture.audio, speed=args.speed, language="en")
        lat = word_latencies(result.events, args.speed)
        out = ROOT / "benchmarks" / "results"
        out.mkdir(parents=True, exist_ok=True)
        (out / "lecture-events.jsonl").write_text("\n".join(json.dumps(e) for e in result.events))
        return {
            "speed": args.speed, "server_args": server_args, "audio_s": round(len(lecture.audio) / SAMPLE_RATE, 1),
            "finals": len(result.finals),
            "wer": round(wer(" ".join(c.reference for c in clips), result.text), 3),
            "committed_latency": summary([w.to_commit for w in lat]),
            "first_seen_latency": summary([w.to_first for w in lat]),
            "final_delay": summary(final_delays(result.events, speed=args.speed)),
            "peak_rss_mb": server.peak_rss_mb(),
            "decode_s": server.get_json("/healthz")["decode_s"],
            "decodes": server.get_json("/healthz")["decodes"],
            "text": [f["text"] for f in result.finals] if args.text else None,
        }
    finally:
        server.stop()


def main() -> None:
    argv = sys.argv[1:]
    server_args = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser()
    parser.add_argument("--speed", type=float, default=1.0)
    parser.add_argument("--clips", type=int, default=6)
    parser.add_argument("--text", action="store_true")
    print(json.dumps(asyncio.run(run(parser.parse_args(argv), server_args)), indent=1))


if __name__ == "__main__":
    main()
