"""Capacity: N speakers in N separate rooms of one server, all at 1.0x, for N = 1, 2, 4, 8...

Every speaker plays the same lecture (starts staggered by 0.37 s so their utterances do not line up), so the same
truth times all of them. The figure of merit is the largest N whose p95 committed latency, over all speakers' words,
stays under `target_s` (2.5 s): beyond it the decoder pool is saturated and captions fall behind.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from benchmarks.align import TimedWord, WordTiming, final_delays, match_truth, stream_words
from benchmarks.common import Bench, progress
from benchmarks.stream import play
from testbed.latency import summary
from testbed.server import Server
from testbed.speech import wer

STAGGER_S = 0.37


async def run_n(server: Server, bench: Bench, truth: list[TimedWord], n: int, speed: float = 1.0) -> dict[str, Any]:
    """N concurrent speakers; latency percentiles over all their words, the worst server lag, mean WER."""
    cpu0, wall0 = server.cpu_s(), time.monotonic()
    bar = progress(bench.audio_s * n, f"capacity N={n}")
    try:
        results = await asyncio.gather(*(play(server, bench, f"cap{n}-{i}", speed, bar, delay_s=i * STAGGER_S)
                                         for i in range(n)))
    finally:
        bar.close()
    wall = time.monotonic() - wall0
    cpu = server.cpu_s() - cpu0
    timings: list[WordTiming] = []
    delays: list[float] = []
    wers, lags, refused = [], [0.0], 0
    for r in results:
        t = match_truth(stream_words(r.events), truth, speed)
        timings += t
        delays += final_delays(r.events, t)
        wers.append(wer(bench.reference, r.text))
        lags += [e["lag_s"] for e in r.events if e["type"] == "status" and e.get("state") == "live"]
        refused += any(e["type"] == "error" for e in r.events)
    return {
        "n": n, "refused": refused, "wer_mean": round(sum(wers) / len(wers), 3),
        "committed": summary([w.to_commit for w in timings]), "first_seen": summary([w.to_first for w in timings]),
        "final_delay": summary(delays), "server_lag_max_s": round(max(lags), 2),
        "server_cores": round(cpu / wall, 2), "matched_words": len(timings), "truth_words": len(truth) * n,
    }


async def run_capacity(server: Server, bench: Bench, truth: list[TimedWord], ns: list[int],
                       target_s: float = 2.5) -> dict[str, Any]:
    """Each N in turn on the same server (rooms are separate, so earlier runs leave nothing to decode)."""
    rows = []
    for n in ns:
        row = await run_n(server, bench, truth, n)
        rows.append(row)
        print(f"capacity N={n}: committed p95 {row['committed']['p95']} s, lag max {row['server_lag_max_s']} s",
              flush=True)
    ok = [r["n"] for r in rows if r["committed"]["p95"] < target_s and not r["refused"]]
    return {"audio_s": round(bench.audio_s, 1), "target_p95_s": target_s, "rows": rows,
            "max_n_under_target": max(ok) if ok else 0, "peak_rss_mb": server.peak_rss_mb()}
