"""Overload with real server processes: a listener that never reads holds up nobody else, a speaker far faster than
real time is slowed to the allowed rate, and 500 connections dropped abruptly leave no task or memory behind.

That a never-reading listener is finally cut off with 4408 is checked in tests/core/test_rooms.py: on loopback the
kernel first absorbs up to its 4 MB send buffer (tcp_wmem), which takes minutes of room events to fill."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.overload import silent_listener
from realtime.client import listen, stream_audio, ws_url
from testbed.latency import summary
from testbed.server import ARTIFACTS, ServerProcess
from testbed.speech import english, wer

pytestmark = pytest.mark.slow


def keep(name: str, data: dict) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "overload.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**results, name: data}, indent=1))
    print(f"\n{name}: {json.dumps(data)}")


def metrics_text(srv) -> str:
    with urllib.request.urlopen(srv.http + "/metrics", timeout=10) as r:
        return r.read().decode()


def metrics(srv) -> dict[str, float]:
    return {s.name: s.value for f in text_string_to_metric_families(metrics_text(srv)) for s in f.samples
            if not s.labels}


def close_code_of(sock: socket.socket) -> tuple[int | None, int]:
    """Read everything the server wrote, walk its (unmasked) frames and return the close frame's code."""
    sock.settimeout(5)
    data = b""
    while True:
        try:
            chunk = sock.recv(1 << 16)
        except (TimeoutError, ConnectionResetError):
            break
        if not chunk:
            break
        data += chunk
    pos = data.index(b"\r\n\r\n") + 4
    while pos + 2 <= len(data):
        opcode, length = data[pos] & 0x0F, data[pos + 1] & 0x7F
        pos += 2
        if length == 126:
            length, pos = struct.unpack(">H", data[pos:pos + 2])[0], pos + 2
        elif length == 127:
            length, pos = struct.unpack(">Q", data[pos:pos + 8])[0], pos + 8
        if opcode == 8:
            return struct.unpack(">H", data[pos:pos + 2])[0], len(data)
        pos += length
    return None, len(data)


@pytest.fixture(scope="module")
def busy(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """A status event every 10 ms (about 17 KB/s to every listener) and small queues."""
    srv = ServerProcess(cache_dir, tmp_path_factory.mktemp("overload") / "server.log", "--listener-queue", "16",
                        "--status-interval-s", "0.01", "--audio-burst-s", "5")
    yield srv
    srv.stop()


async def test_a_listener_that_never_reads_slows_nobody(busy, clips):
    room = "never-reads"
    clip = english(clips)[1]
    audio = np.concatenate([clip.samples()] * 2)
    reader_events: list[dict] = []
    await stream_audio(busy.url, "warm-up", audio, speed=0, language="en")  # the decoder's buffers, allocated once
    reader = asyncio.create_task(listen(busy.url, room, idle=8, on_event=reader_events.append))
    await asyncio.sleep(0.3)
    rss_before = metrics(busy)["realtime_resident_memory_bytes"]
    silent = silent_listener(busy, room)
    result = await stream_audio(busy.url, room, audio, speed=1.0, language="en")
    await reader
    rss_after = metrics(busy)["realtime_resident_memory_bytes"]
    code, received = close_code_of(silent)
    silent.close()
    speaker_t = {e["seq"]: e["t"] for e in result.events if e["type"] != "hello"}
    # The speaker's and the reader's clocks start at different moments: compare each delivery to the first one.
    pairs = [(e["t"], speaker_t[e["seq"]]) for e in reader_events if e["seq"] in speaker_t and e["type"] != "hello"]
    offset = min(r - s for r, s in pairs)
    spread_ms = [round((r - s - offset) * 1000, 1) for r, s in pairs]
    seqs = [e["seq"] for e in reader_events if e["type"] != "hello"]
    keep("never_reads", {"events": len(seqs), "silent_close_code": code, "silent_bytes_buffered": received,
                         "rss_growth_mb": round((rss_after - rss_before) / 2**20, 1),
                         "reader_delivery_spread_ms": summary(spread_ms)})
    # RSS is recorded, not asserted: the ~0.25 MB it leaves unread sits in the kernel's socket buffers, far below
    # the allocator's own swings (0.3 and 30.6 MB in two runs of this test); queue bounds are tests/core's job.
    assert code in (None, 4408), code  # still open (the kernel's buffers hold it all), or cut off as too slow
    assert received > 100_000  # the room really was sending it plenty
    assert summary(spread_ms)["p95"] < 250, summary(spread_ms)  # others' delivery unaffected (a generous bound)
    assert seqs == list(range(seqs[0], seqs[-1] + 1)), "the reading listener missed events"
    assert result.finals and wer(" ".join([clip.reference] * 2), result.text) < 0.5


async def test_a_speaker_at_10x_is_slowed_to_2x_and_still_transcribed(busy, clips):
    clip = english(clips)[2]
    audio = np.concatenate([clip.samples()] * 3)  # about 30 s, well past the 5 s burst
    started = time.monotonic()
    result = await stream_audio(busy.url, "ten-x", audio, speed=10.0, language="en")
    live = [(e["audio_s"], e["t"]) for e in result.events if e["type"] == "status" and e["state"] == "live"]
    sent, at = max(live)
    rate = sent / at
    keep("ten_x_speaker", {"audio_s": round(len(audio) / 16000, 1), "effective_rate": round(rate, 2),
                           "wall_s": round(time.monotonic() - started, 1), "finals": len(result.finals)})
    assert not [e for e in result.events if e["type"] == "error"]
    assert rate < 2.6, rate  # 5 s of burst, then 2x: about 2.2x over 30 s
    assert wer(" ".join([clip.reference] * 3), result.text) < 0.5


async def test_500_connections_dropped_abruptly_leak_nothing(busy):
    """Three rounds of 500, each measured 11 s later (after realtime/server/memory.py has handed freed heap back); the
    first round settles what is allocated once. What leaks per connection (a task, a room, a connection object, the
    parser and buffers of its socket) shows exactly in the task, room and connection gauges and as growth of
    Python's heap blocks. The bounds are the noise of 24 rounds (12,000 connections) on this machine: RSS wandered
    in 241-329 MB and heap blocks in 241k-305k with no trend, swinging up to 65 MB and 64k blocks between rounds,
    because cyclic garbage waits for Python's next full collection. Over the last two rounds (1,000 connections)
    they catch 100 leaked heap blocks or 100 KB of RSS per connection."""

    async def churn(i: int) -> None:
        role = "speak" if i % 5 == 0 else "listen"
        ws = await websockets.connect(ws_url(busy.url, role, f"churn-{i % 7}"), open_timeout=30)
        if role == "speak" and i % 25 == 0:
            await ws.send(json.dumps({"type": "start", "language": "en"}))
            await ws.send(bytes(6400))
        await ws.recv()
        ws.transport.abort()  # no close frame, no FIN handshake: a vanished client

    samples = [metrics(busy)]
    for _ in range(3):
        for batch in range(10):  # 500 in all, 50 at a time
            await asyncio.gather(*(churn(batch * 50 + i) for i in range(50)))
        await asyncio.sleep(11)
        samples.append(metrics(busy))
    tasks = [m["realtime_asyncio_tasks"] for m in samples]
    blocks = [int(m["realtime_python_heap_blocks"]) for m in samples]
    rss = [round(m["realtime_resident_memory_bytes"] / 2**20, 1) for m in samples]
    last = samples[-1]
    keep("churn_500x3", {"tasks": tasks, "rss_mb": rss, "python_heap_blocks": blocks,
                         "rooms_in_memory_after": last["realtime_rooms"]})
    assert max(tasks[1:]) <= tasks[0] + 2, tasks
    assert last["realtime_speakers"] == 0 and last["realtime_rooms"] == 0
    open_after = {s.labels["role"]: s.value for f in text_string_to_metric_families(metrics_text(busy))
                  for s in f.samples if s.name == "realtime_open_connections"}
    assert open_after == {"speaker": 0, "listener": 0}, open_after
    assert blocks[3] - blocks[1] < 100_000, blocks
    assert rss[3] - rss[1] < 100, rss
