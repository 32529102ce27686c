"""What the ecosystem endpoints cost a live lecture, measured with the harness's own truth and aligner:

- `realtime`: the dev lecture as an OpenAI Realtime transcription session (the real `openai` SDK, 24 kHz PCM,
  server VAD) against the same lecture over the native protocol, alternating (native, openai, native, openai, ...)
  so that the machine's drift falls on both: word end -> committed (the native `partial`'s committed words, the
  OpenAI `delta`), WER of the finals / of the completed items. A third arm, `native_24k`, streams over the native
  protocol the audio the OpenAI session hears (taken to 24 kHz and back to 16 kHz by the same resamplers), which
  tells what the protocol costs from what the resampling does to the VAD and the decoder.
- `upload`: a live speaker's word end -> committed alone, then beside an upload of a `--upload-minutes` recording
  into another room (it decodes on the pool's low-priority lane); the upload's progress during the live run.

    python -m benchmarks.ecosystem [--sections realtime,upload] [--rounds 2] [--upload-minutes 60]

Writes benchmarks/results/ecosystem-<section>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.align import latency_report, match_truth, stream_words
from benchmarks.common import RESULTS, Bench, dev_lecture, environment, write_json
from benchmarks.offline import build_file
from benchmarks.stream import measure, play
from benchmarks.truth import lecture_truth
from realtime.client import upload_file
from realtime.core.audio import Resampler
from testbed.latency import summary
from testbed.server import Server
from testbed.speech import wer

STEP_S = 0.1


async def openai_session(server: Server, bench: Bench, room: str) -> list[dict[str, Any]]:
    """Stream the lecture at 1.0x through `client.realtime.connect`; every server event with `t`, seconds since
    the first audio was sent (the clock the native client stamps its events with)."""
    from openai import AsyncOpenAI

    pcm = Resampler(16000, 24000)(bench.lecture.audio).astype("<i2").tobytes()
    step = int(48000 * STEP_S)
    client = AsyncOpenAI(api_key="open-server", base_url=server.http + "/v1", max_retries=0)
    events: list[dict[str, Any]] = []
    async with client.realtime.connect(extra_query={"intent": "transcription", "room": room}) as conn:
        await conn.session.update(session={"type": "transcription", "audio": {"input": {
            "format": {"type": "audio/pcm", "rate": 24000},
            "transcription": {"model": "whisper-1", "language": "en"}}}})
        t0 = time.monotonic()

        async def feed() -> None:
            for i in range(0, len(pcm), step):
                await conn.input_audio_buffer.append(audio=base64.b64encode(pcm[i:i + step]).decode())
                await asyncio.sleep(max(0.0, t0 + (i + step) / 48000 - time.monotonic()))
            for _ in range(30):  # 3 s of silence end the last turn
                await conn.input_audio_buffer.append(audio=base64.b64encode(bytes(step)).decode())
                await asyncio.sleep(STEP_S)

        feeder = asyncio.create_task(feed())
        try:
            while True:
                try:
                    ev = await asyncio.wait_for(conn.recv(), 5.0 if feeder.done() else 60.0)
                except TimeoutError:
                    break
                events.append({"t": time.monotonic() - t0, **ev.model_dump(exclude_none=True)})
        finally:
            feeder.cancel()
    return events


def as_native(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI events in the shape the aligner reads: each delta a `partial` whose committed text is the item's
    deltas so far, each completed item a `final` (its words untimed: only receive times are compared)."""
    out: list[dict[str, Any]] = []
    index: dict[str, int] = {}
    sent: dict[str, str] = {}
    for e in events:
        item = e.get("item_id")
        if e["type"].endswith("transcription.delta"):
            sent[item] = sent.get(item, "") + e["delta"]
            out.append({"type": "partial", "utterance": index.setdefault(item, len(index)), "t": e["t"],
                        "committed": sent[item], "unstable": ""})
        elif e["type"].endswith("transcription.completed"):
            words = [{"w": w, "start": 0.0, "end": 0.0} for w in e["transcript"].split()]
            out.append({"type": "final", "utterance": index.setdefault(item, len(index)), "t": e["t"],
                        "text": e["transcript"], "words": words})
    return out


async def section_realtime(server: Server, bench: Bench, truth: list, rounds: int) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {"native": [], "native_24k": [], "openai": []}
    round_trip = Resampler(24000, 16000)(Resampler(16000, 24000)(bench.lecture.audio))
    bench_24k = dataclasses.replace(bench, lecture=dataclasses.replace(bench.lecture, audio=round_trip))
    for r in range(rounds):
        result = await play(server, bench, f"native-{r}", 1.0)
        runs["native"].append(measure(result.events, bench, truth, 1.0))
        result = await play(server, bench_24k, f"native24k-{r}", 1.0)
        runs["native_24k"].append(measure(result.events, bench, truth, 1.0))
        events = await openai_session(server, bench, f"openai-{r}")
        timings = match_truth(stream_words(as_native(events)), truth, 1.0)
        text = " ".join(e["transcript"] for e in events if e["type"].endswith("transcription.completed"))
        runs["openai"].append({"wer": round(wer(bench.reference, text), 3),
                               "latency": latency_report(timings, [], len(truth)),
                               "committed_values": [round(w.to_commit, 3) for w in timings],
                               "errors": [e for e in events if e["type"] == "error"]})
        print(f"round {r}: " + ", ".join(f"{k} {v[-1]['latency']['committed']} WER {v[-1]['wer']}"
                                         for k, v in runs.items()), flush=True)
    pooled = {k: summary([v for run in rs for v in run["committed_values"]]) for k, rs in runs.items()}
    wers = {k: [run["wer"] for run in rs] for k, rs in runs.items()}
    return {"rounds": rounds, "committed_pooled": pooled, "wer": wers,
            "ratio_p95_openai_to_native": round(pooled["openai"]["p95"] / pooled["native"]["p95"], 3),
            "runs": {k: [{key: v for key, v in run.items() if key != "committed_values"} for run in rs]
                     for k, rs in runs.items()}}


async def section_upload(server: Server, bench: Bench, truth: list, minutes: float, tmp: Path) -> dict[str, Any]:
    path = tmp / "recording.wav"
    duration, _ = build_file(path, minutes)
    alone = measure((await play(server, bench, "live-alone", 1.0)).events, bench, truth, 1.0)
    lines: list[dict[str, Any]] = []
    upload = asyncio.create_task(upload_file(server.url, "recording", str(path), language="en",
                                             on_line=lines.append))
    while not any(x.get("type") == "progress" and x.get("done_s", 0) > 0 for x in lines):
        if upload.done():
            raise RuntimeError(f"the upload ended early: {upload.result()}")
        await asyncio.sleep(0.5)
    at_start = lines[-1]["done_s"]
    t0 = time.monotonic()
    beside = measure((await play(server, bench, "live-beside", 1.0)).events, bench, truth, 1.0)
    wall = time.monotonic() - t0
    done_s = lines[-1]["done_s"]
    upload.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await upload
    return {"upload_minutes": round(duration / 60, 1),
            "alone": {"latency": alone["latency"], "wer": alone["wer"]},
            "beside_upload": {"latency": beside["latency"], "wer": beside["wer"]},
            "upload_during_live": {"audio_s_decoded": round(done_s - at_start, 1), "wall_s": round(wall, 1),
                                   "rtf": round(wall / max(done_s - at_start, 1e-9), 3)},
            "ratio_p95_beside_to_alone": round(beside["latency"]["committed"]["p95"]
                                               / alone["latency"]["committed"]["p95"], 3)}


async def main_async(args: argparse.Namespace) -> int:
    bench = dev_lecture()
    truth = lecture_truth(bench, "base")
    sections = args.sections.split(",")
    with tempfile.TemporaryDirectory(prefix="ecosystem-") as tmp:
        server = Server(["--max-lecture-s", str(args.upload_minutes * 60 + 600), "--max-upload-mb", "2000",
                         "--max-speakers", "3"], Path(tmp) / "server.log")
        try:
            for name in sections:
                head = {"section": name, "lecture": bench.name, "audio_s": round(bench.audio_s, 1),
                        "date": time.strftime("%Y-%m-%d"), "env": environment()}
                if name == "realtime":
                    head["realtime"] = await section_realtime(server, bench, truth, args.rounds)
                else:
                    head["upload"] = await section_upload(server, bench, truth, args.upload_minutes, Path(tmp))
                write_json(RESULTS / f"ecosystem-{name}.json", head)
                print(json.dumps({k: v for k, v in head[name].items() if k != "runs"}, indent=1), flush=True)
        finally:
            server.stop()
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sections", default="realtime,upload")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--upload-minutes", type=float, default=60.0)
    args = ap.parse_args()
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    raise SystemExit(main())
