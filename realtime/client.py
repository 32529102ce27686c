"""Python client (websockets): play a file into a room as a microphone would, or listen to a room.

Used by `realtime stream`/`realtime listen`, the tests and the benchmarks. Every received event can be recorded with
its receive time `t` (seconds since the first audio was sent), which is what latency measurements align against.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from ssl import SSLContext
from typing import Any
from urllib.parse import quote

import numpy as np
import websockets

from realtime.core.audio import SAMPLE_RATE
from realtime.core.protocol import (
    BAD_ROOM,
    CLOSING,
    IDLE_TIMEOUT,
    NO_SUCH_ROOM,
    ORIGIN_NOT_ALLOWED,
    PERMANENT_CLOSES,
    SHUTTING_DOWN,
    TAKEN_OVER,
)

# Errors after which the server closes a speaker's connection: refusals of `start` or audio (CLOSING), of the
# handshake, a takeover, an idle connection, a shutdown.
REFUSALS = frozenset(CLOSING) | {BAD_ROOM, NO_SUCH_ROOM, ORIGIN_NOT_ALLOWED, TAKEN_OVER, IDLE_TIMEOUT, SHUTTING_DOWN}


@dataclass
class StreamResult:
    events: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None

    @property
    def finals(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == "final"]

    @property
    def text(self) -> str:
        return " ".join(e["text"] for e in self.finals)

    @property
    def permanent(self) -> bool:
        """Whether the server closed with a code after which reconnecting cannot help (a bad room name, a missing
        or wrong key, an origin not allowed, no such room, a lecture at its maximum length)."""
        return self.close_code in PERMANENT_CLOSES


def ws_url(server: str, role: str, room: str, since: int | None = None) -> str:
    base = server.rstrip("/")
    if base.startswith("http"):
        base = "ws" + base[4:]
    return f"{base}/ws/{role}/{quote(room, safe='')}" + (f"?since={since}" if since is not None else "")


def http_url(server: str) -> str:
    """The HTTP base of a server given as ws://, wss://, http:// or https://."""
    base = server.rstrip("/")
    return "http" + base[2:] if base.startswith("ws") else base


def auth_headers(key: str | None) -> dict[str, str]:
    """Keys go in a header, never in the URL (proxies log URLs)."""
    return {"Authorization": f"Bearer {key}"} if key else {}


def _tls(context: SSLContext | None) -> dict[str, Any]:
    """websockets' `ssl` argument only when one is given (it refuses one for ws://)."""
    return {"ssl": context} if context is not None else {}


async def stream_audio(server: str, room: str, audio: np.ndarray, *, speed: float = 1.0, chunk_ms: int = 100,
                       language: str | None = None, task: str = "transcribe", prompt: str = "",
                       on_event: Callable[[dict[str, Any]], None] | None = None,
                       stop_timeout: float = 120.0, key: str | None = None,
                       takeover: bool = False, ssl: SSLContext | None = None) -> StreamResult:
    """Send int16 16 kHz mono audio at `speed` x real time (0 = as fast as possible), then stop and wait for the
    server's `stopped` status, collecting every event. `ssl`: a context for wss:// (default: the system's CAs)."""
    result = StreamResult()
    chunk = SAMPLE_RATE * chunk_ms // 1000
    stopped = asyncio.Event()
    t0 = time.monotonic()

    history_until = -1  # a speaker joining a room that already has captions is sent them first: not ours

    live = False  # our start was accepted

    async def receive(ws) -> None:
        nonlocal history_until, live
        try:
            async for raw in ws:
                event = json.loads(raw)
                if event["type"] == "hello":
                    history_until = event["seq"]
                elif event["type"] in ("final", "partial") and event["seq"] <= history_until:
                    continue
                event["t"] = round(time.monotonic() - t0, 4)
                result.events.append(event)
                if on_event:
                    on_event(event)
                if event["type"] == "status":
                    live = live or event.get("state") == "live"
                    if event.get("state") == "stopped":
                        stopped.set()
                if event["type"] == "error" and (event.get("code") in REFUSALS or not live):
                    stopped.set()  # refused, or the start itself was (a bad start field): nothing will come
        finally:
            stopped.set()  # the server closed the connection

    async with websockets.connect(ws_url(server, "speak", room), max_size=None,
                                  additional_headers=auth_headers(key), **_tls(ssl)) as ws:
        receiver = asyncio.create_task(receive(ws))
        await ws.send(json.dumps({"type": "start", "language": language, "task": task, "prompt": prompt,
                                  "takeover": takeover}))
        t0 = time.monotonic()
        pcm = audio.astype("<i2").tobytes()
        with contextlib.suppress(websockets.ConnectionClosed):
            for i, start in enumerate(range(0, len(audio), chunk)):
                if stopped.is_set():
                    break
                await ws.send(pcm[start * 2:(start + chunk) * 2])
                if speed > 0:
                    due = t0 + (i + 1) * chunk_ms / 1000 / speed
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
                else:
                    await asyncio.sleep(0)
            if not stopped.is_set():
                await ws.send(json.dumps({"type": "stop"}))
        if not stopped.is_set():
            try:
                await asyncio.wait_for(stopped.wait(), stop_timeout)
            except TimeoutError:
                pass
        await ws.close()
        result.close_code = ws.close_code
        receiver.cancel()
    return result


async def listen(server: str, room: str, *, idle: float | None = None,
                 on_event: Callable[[dict[str, Any]], None] | None = None, since: int | None = None,
                 key: str | None = None, ssl: SSLContext | None = None) -> StreamResult:
    """Join a room as a listener; return when the server closes or after `idle` seconds without events. With
    `since` (the last seq seen) the server sends only what came after it. `ssl` as for `stream_audio`."""
    result = StreamResult()
    t0 = time.monotonic()
    async with websockets.connect(ws_url(server, "listen", room, since), max_size=None,
                                  additional_headers=auth_headers(key), **_tls(ssl)) as ws:
        while True:
            try:
                raw = await (asyncio.wait_for(ws.recv(), idle) if idle else ws.recv())
            except (TimeoutError, websockets.ConnectionClosed):
                break
            event = json.loads(raw)
            event["t"] = round(time.monotonic() - t0, 4)
            result.events.append(event)
            if on_event:
                on_event(event)
        result.close_code = ws.close_code
    return result
