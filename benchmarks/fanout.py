"""Fan-out: one speaker and many listeners (1,000 by default) in one room on loopback.

Listeners run in separate processes (2 by default) so that client-side JSON parsing does not sit in the speaker's
event loop. Every connection stamps each event with CLOCK_MONOTONIC, which is shared by all processes on Linux.
The server puts no send time on the wire, so an event's delivery latency is measured from its first receipt by
any connection in the room (the speaker included): how long the slowest listeners wait behind the fastest. Every
listener must receive every room event the speaker received (`missed` = 0) and none may be closed as too slow (4408).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import resource
import time
from typing import Any

import websockets

from benchmarks.common import Bench, progress
from benchmarks.stream import play
from realtime.client import ws_url
from testbed.latency import percentile
from testbed.server import Server

CONNECT_CONCURRENCY = 50


def raise_fd_limit() -> None:
    """Each listener is a socket on both sides of loopback; the default soft limit of 1024 is too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _listeners(url: str, count: int, ready: Any, timeout: float) -> list[dict[str, Any]]:
    out = [{"hello": -1, "seq": [], "t": [], "close": None} for _ in range(count)]
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    connected = 0
    all_connected = asyncio.Event()

    async def one(rec: dict[str, Any]) -> None:
        nonlocal connected
        async with gate:
            ws = await websockets.connect(url, max_size=None, open_timeout=60)
        connected += 1
        if connected == count:
            all_connected.set()
        try:
            async for raw in ws:
                now = time.monotonic()
                ev = json.loads(raw)
                if ev["type"] == "hello":
                    rec["hello"] = ev["seq"]
                elif "seq" in ev:
                    rec["seq"].append(ev["seq"])
                    rec["t"].append(now)
                if ev["type"] == "status" and ev.get("state") == "stopped":
                    break
        except websockets.ConnectionClosed:
            pass
        finally:
            await ws.close()
            rec["close"] = ws.close_code

    tasks = [asyncio.create_task(one(rec)) for rec in out]
    await asyncio.wait_for(all_connected.wait(), 120)
    ready.put(count)
    await asyncio.wait(tasks, timeout=timeout)
    for task in tasks:
        task.cancel()
    return out


def _worker(url: str, count: int, ready: Any, results: Any, timeout: float) -> None:
    raise_fd_limit()
    results.put(asyncio.run(_listeners(url, count, ready, timeout)))


async def run_fanout(server: Server, bench: Bench, listeners: int = 1000, processes: int = 2,
                     room: str = "fanout") -> dict[str, Any]:
    """Connect the listeners, play the lecture at 1.0x, then check delivery and measure its latency."""
    ctx = mp.get_context("spawn")
    ready, results = ctx.Queue(), ctx.Queue()
    url = ws_url(server.url, "listen", room)
    timeout = bench.audio_s + 180
    sizes = [listeners // processes + (i < listeners % processes) for i in range(processes)]
    procs = [ctx.Process(target=_worker, args=(url, n, ready, results, timeout), daemon=True) for n in sizes if n]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=180)
    await asyncio.sleep(1.0)  # let the last joins' history settle
    cpu0, wall0 = server.cpu_s(), time.monotonic()
    speaker_t: dict[int, float] = {}  # receive times on the clock the listener processes share

    def stamp(ev: dict[str, Any]) -> None:
        if "seq" in ev and ev["type"] != "hello":
            speaker_t.setdefault(ev["seq"], time.monotonic())

    bar = progress(bench.audio_s, f"fan-out {listeners}")
    try:
        result = await play(server, bench, room, 1.0, bar, also=stamp)
    finally:
        bar.close()
    wall = time.monotonic() - wall0
    cpu = server.cpu_s() - cpu0
    records: list[dict[str, Any]] = []
    for _ in procs:
        records += await asyncio.get_running_loop().run_in_executor(None, results.get, True, timeout + 60)
    for p in procs:
        p.join(10)
    return summarise(result.events, speaker_t, records) | {
        "listeners": listeners, "processes": len(procs), "audio_s": round(bench.audio_s, 1),
        "server_cpu_s": round(cpu, 1), "server_cores": round(cpu / wall, 2), "peak_rss_mb": server.peak_rss_mb()}


def summarise(speaker_events: list[dict[str, Any]], speaker_t: dict[int, float],
              records: list[dict[str, Any]]) -> dict[str, Any]:
    """Missed events and delivery latency (from each event's first receipt in the room) over all listeners.

    `records`: per listener, its `hello` seq, the `seq` and monotonic `t` of every event after it, its close code.
    """
    expected = {e["seq"] for e in speaker_events if e["type"] not in ("hello", "pong", "error") and "seq" in e}
    first = dict(speaker_t)
    for rec in records:
        for seq, t in zip(rec["seq"], rec["t"], strict=True):
            first[seq] = min(first.get(seq, t), t)
    delays, missed, slow = [], 0, 0
    for rec in records:
        got = dict(zip(rec["seq"], rec["t"], strict=True))
        missed += len({s for s in expected if s > rec["hello"]} - got.keys())
        slow += rec["close"] == 4408
        delays += [t - first[s] for s, t in got.items() if s in expected]
    ms = [d * 1000 for d in delays]
    return {"events": len(expected), "deliveries": len(delays), "missed": missed, "slow_closed": slow,
            "delivery_ms": {"p50": round(percentile(ms, 50), 1), "p99": round(percentile(ms, 99), 1),
                            "max": round(max(ms), 1) if ms else float("nan")}}
