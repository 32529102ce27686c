"""Play a lecture through a running server with the real `websockets` client and measure what listeners got.

At `speed` 1.0 the audio goes out at its real pace in 100 ms packets while the server decodes, so every latency is
computation-aware. At `speed` 0 it goes out as fast as the socket takes it: latency is then meaningless and the
figures are throughput (real-time factor) and WER.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.align import (
    TimedWord,
    WordTiming,
    final_delays,
    lag_series,
    latency_report,
    match_truth,
    slope,
    stream_words,
)
from benchmarks.common import Bench, progress
from realtime.client import StreamResult, stream_audio
from testbed.latency import percentile
from testbed.server import Server
from testbed.speech import wer


async def play(server: Server, bench: Bench, room: str, speed: float, bar: Any = None, delay_s: float = 0.0,
               also: Callable[[dict[str, Any]], None] | None = None) -> StreamResult:
    """Stream `bench` into `room`; status events (every 2 s) advance the progress bar by the audio received, and
    `also` sees every event as it arrives."""
    await asyncio.sleep(delay_s)
    seen = 0.0

    def on_event(ev: dict[str, Any]) -> None:
        nonlocal seen
        if also is not None:
            also(ev)
        if bar is not None and ev["type"] == "status" and ev["audio_s"] > seen:
            bar.update(ev["audio_s"] - seen)
            seen = ev["audio_s"]

    timeout = 120.0 + (0 if speed > 0 else bench.audio_s * 2)
    return await stream_audio(server.url, room, bench.lecture.audio, speed=speed, language="en",
                              on_event=on_event, stop_timeout=timeout)


def lag_report(events: list[dict[str, Any]], timings: list[WordTiming]) -> dict[str, Any]:
    """Does the stream fall behind? The server's own lag reports, and the drift of committed latency over time.

    `bounded`: the p95 committed latency of the last quarter of the lecture is within 1 s of the first quarter's.
    """
    series = lag_series(events)
    lags = [lag for _, _, lag in series]
    quarters: list[float] = []
    if timings:
        horizon = max(w.truth_end for w in timings)
        for q in range(4):
            part = [w.to_commit for w in timings if q * horizon / 4 <= w.truth_end <= (q + 1) * horizon / 4]
            quarters.append(round(percentile(part, 95), 3))
    trend = slope([w.truth_end for w in timings], [w.to_commit for w in timings]) * 600
    return {
        "server_lag_max_s": round(max(lags), 2) if lags else 0.0,
        "server_lag_p95_s": round(percentile(lags, 95), 2) if lags else 0.0,
        "committed_p95_by_quarter": quarters,
        "committed_trend_s_per_10min": round(trend, 3),
        "bounded": bool(quarters) and bool(quarters[-1] <= quarters[0] + 1.0),
    }


def measure(events: list[dict[str, Any]], bench: Bench, truth: list[TimedWord], speed: float) -> dict[str, Any]:
    """WER and (at a real-time pace) the latency and lag figures of one recorded stream."""
    text = " ".join(e["text"] for e in events if e["type"] == "final")
    out: dict[str, Any] = {"finals": sum(e["type"] == "final" for e in events),
                           "wer": round(wer(bench.reference, text), 3)}
    if speed > 0:
        timings = match_truth(stream_words(events), truth, speed)
        out["latency"] = latency_report(timings, final_delays(events, timings), len(truth))
        out["lag"] = lag_report(events, timings)
        out["committed_values"] = [round(w.to_commit, 3) for w in timings]
        out["first_seen_values"] = [round(w.to_first, 3) for w in timings]
        out["committed_at"] = [round(w.truth_end, 2) for w in timings]
        out["lag_series"] = [[round(t, 1), lag] for t, _, lag in lag_series(events)]
    return out


async def run_stream(server: Server, bench: Bench, truth: list[TimedWord], speed: float, room: str,
                     events_path: Path | None = None) -> dict[str, Any]:
    """One speaker: play, then measure, with the server's CPU, decode time and peak RSS over the run."""
    cpu0, health0, wall0 = server.cpu_s(), server.health(), time.monotonic()
    bar = progress(bench.audio_s, f"{room} {speed:g}x")
    try:
        result = await play(server, bench, room, speed, bar)
    finally:
        bar.close()
    wall = time.monotonic() - wall0
    cpu, health = server.cpu_s() - cpu0, server.health()
    decode_s = sum(health["decode_s"].values()) - sum(health0["decode_s"].values())
    if events_path is not None:
        events_path.parent.mkdir(parents=True, exist_ok=True)
        events_path.write_text("\n".join(json.dumps(e) for e in result.events) + "\n")
    return {
        "speed": speed, "audio_s": round(bench.audio_s, 1), "wall_s": round(wall, 1),
        "rtf": round(wall / bench.audio_s, 3), "decode_rtf": round(decode_s / bench.audio_s, 3),
        "server_cpu_s": round(cpu, 1), "server_cores": round(cpu / wall, 2),
        "server_cpu_per_audio_s": round(cpu / bench.audio_s, 3), "peak_rss_mb": server.peak_rss_mb(),
        "close_code": result.close_code, **measure(result.events, bench, truth, speed),
        "notes": _notes(health.get("notes"), result.events),
    }


def _notes(health: dict[str, Any] | None, events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """What the notes did while the lecture played: the server's update latency (window closed -> notes event),
    rejections and LLM tokens, and the notes versions the speaker saw, by source."""
    if not health:
        return None
    seen = [e for e in events if e["type"] == "notes"]
    return {"engine": health.get("engine"), "latency_s": health.get("latency_s"), "updates": health.get("updates"),
            "rejected": health.get("rejected"), "failures": health.get("failures"), "llm": health.get("llm"),
            "versions_seen": dict(Counter(str(e.get("source")) for e in seen))}
