"""Overload: does an abusive client hurt the lecture that was admitted?

The admitted speaker plays the lecture at 1.0x four times on one server (`--max-speakers 2 --audio-burst-s 10`):
alone; beside a flood (would-be speakers beyond capacity, each refused with `server_full`, a client sending invalid
control messages as fast as the server answers them, and a listener that never reads its socket); beside a speaker
in another room sending at 10x real time (taken at 2x after its burst: an admitted stream, it shares the decoder);
and beside all of them. Reported: the admitted speaker's latency percentiles in each run, the abuser's effective
rate, refusals and junk messages answered.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import websockets

from benchmarks.align import TimedWord, match_truth, stream_words
from benchmarks.common import Bench, progress
from benchmarks.stream import play
from realtime.client import stream_audio, ws_url
from testbed.latency import summary
from testbed.server import Server
from testbed.speech import wer


async def refused_speakers(server: Server, stop: asyncio.Event, counts: dict[str, int]) -> None:
    """Would-be speakers beyond capacity, one every 0.2 s."""
    while not stop.is_set():
        try:
            async with websockets.connect(ws_url(server.url, "speak", f"overflow-{counts['attempts']}")) as ws:
                await ws.send('{"type": "start"}')
                async with asyncio.timeout(2):  # admitted after all (a slot came free): leave at once
                    async for raw in ws:
                        if '"server_full"' in raw:
                            counts["server_full"] += 1
        except (websockets.ConnectionClosed, TimeoutError):
            pass
        counts["attempts"] += 1
        await asyncio.sleep(0.2)


async def junk_sender(server: Server, stop: asyncio.Event, counts: dict[str, int]) -> None:
    """Invalid JSON on a listener connection, each followed by reading its error, as fast as it goes."""
    async with websockets.connect(ws_url(server.url, "listen", "junk-room")) as ws:
        await ws.recv()  # hello
        while not stop.is_set():
            await ws.send("{not json")
            while '"bad_json"' not in await ws.recv():
                pass
            counts["junk_answered"] += 1


def silent_listener(server: Server, room: str) -> socket.socket:
    """A WebSocket handshake on a raw socket with a tiny receive buffer, then never a read."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall((f"GET /ws/listen/{room} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    return sock


async def admitted(server: Server, bench: Bench, truth: list[TimedWord], room: str) -> dict[str, Any]:
    bar = progress(bench.audio_s, room)
    try:
        result = await play(server, bench, room, 1.0, bar)
    finally:
        bar.close()
    timings = match_truth(stream_words(result.events), truth, 1.0)
    lags = [e["lag_s"] for e in result.events if e["type"] == "status" and e.get("state") == "live"]
    return {"committed": summary([w.to_commit for w in timings]), "first_seen": summary([w.to_first for w in timings]),
            "wer": round(wer(bench.reference, result.text), 3), "lag_max_s": round(max(lags, default=0.0), 2),
            "errors": [e["code"] for e in result.events if e["type"] == "error"]}


async def beside(server: Server, bench: Bench, truth: list[TimedWord], room: str, abuser: bool,
                 flood: bool) -> dict[str, Any]:
    """The admitted speaker's run beside a 10x speaker (`abuser`) and/or the flood of refused speakers, junk
    messages and a listener that never reads (`flood`)."""
    stop = asyncio.Event()
    counts = {"attempts": 0, "server_full": 0, "junk_answered": 0}
    silent = silent_listener(server, room) if flood else None
    victim = asyncio.create_task(admitted(server, bench, truth, room))
    await asyncio.sleep(0.3)  # admitted first; then the abuser takes the second slot, and the rest find it full
    abusive = asyncio.create_task(stream_audio(server.url, f"{room}-abuser", bench.lecture.audio, speed=10.0,
                                               stop_timeout=300)) if abuser else None
    await asyncio.sleep(0.5)
    noise = [asyncio.create_task(refused_speakers(server, stop, counts)),
             asyncio.create_task(junk_sender(server, stop, counts))] if flood else []
    out = await victim
    stop.set()
    await asyncio.gather(*noise, return_exceptions=True)
    if silent is not None:
        silent.close()
    if abusive is not None:
        # The abuser's pace as the server took it: audio received (its status events) over time since its start.
        result = await abusive
        paced = [(e["audio_s"], e["t"]) for e in result.events if e["type"] == "status" and e["state"] == "live"]
        sent_s, at_s = max(paced, default=(0.0, 1.0))
        out["abuser"] = {"sent_at": 10.0, "effective_rate": round(sent_s / max(at_s, 1e-3), 2),
                         "errors": [e["code"] for e in result.events if e["type"] == "error"]}
    return {**out, **(counts if flood else {})}


async def run_overload(server: Server, bench: Bench, truth: list[TimedWord]) -> dict[str, Any]:
    return {
        "audio_s": round(bench.audio_s, 1),
        "alone": await admitted(server, bench, truth, "overload-alone"),
        "flood": await beside(server, bench, truth, "overload-flood", abuser=False, flood=True),
        "abuser": await beside(server, bench, truth, "overload-10x", abuser=True, flood=False),
        "both": await beside(server, bench, truth, "overload-both", abuser=True, flood=True),
        "peak_rss_mb": server.peak_rss_mb(),
    }
