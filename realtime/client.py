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


def ws_url(server: str, role: str, room: str, since: int | None = None, translate: str | None = None) -> str:
    base = server.rstrip("/")
    if base.startswith("http"):
        base = "ws" + base[4:]
    query = "&".join(p for p in (f"since={since}" if since is not None else "",
                                 f"translate={quote(translate)}" if translate else "") if p)
    return f"{base}/ws/{role}/{quote(room, safe='')}" + (f"?{query}" if query else "")


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
                 key: str | None = None, ssl: SSLContext | None = None,
                 translate: str | None = None) -> StreamResult:
    """Join a room as a listener; return when the server closes or after `idle` seconds without events. With
    `since` (the last seq seen) the server sends only what came after it; with `translate` (a language code) the
    finals' translations into it come too. `ssl` as for `stream_audio`."""
    result = StreamResult()
    t0 = time.monotonic()
    async with websockets.connect(ws_url(server, "listen", room, since, translate), max_size=None,
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


# ---------------------------------------------------------------- recorded lectures (POST /v1/rooms/{room}/upload)


class UploadRefused(Exception):
    """The server refused an upload (an HTTP error status) or ended it with an `error` line."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.status, self.code, self.message = status, code, message


def _content_type(path: str) -> str:
    import mimetypes

    guessed = mimetypes.guess_type(path)[0] or ""
    return guessed if guessed.startswith(("audio/", "video/")) else "application/octet-stream"


async def upload_file(server: str, room: str, path: str, *, key: str | None = None, language: str | None = None,
                      task: str = "transcribe", prompt: str = "",
                      on_sent: Callable[[int, int], None] | None = None,
                      on_line: Callable[[dict[str, Any]], None] | None = None,
                      ssl: SSLContext | None = None, chunk_bytes: int = 1 << 18) -> dict[str, Any]:
    """Upload a recording into a room and follow its transcription (docs/protocol.md, Recorded lectures).

    The file is read and sent in pieces (never whole in memory) with `Expect: 100-continue`, so a refusal (key,
    size, a live room) comes before the body is sent. `on_sent(bytes_sent, total_bytes)` as the body goes out;
    `on_line(line)` for every NDJSON line of the answer (`accepted`, `progress`, then the last). Returns the last
    line (`done` or `cancelled`); UploadRefused for an HTTP error or an `error` line."""
    import os

    import aiohttp

    size = os.path.getsize(path)
    params = {k: v for k, v in (("language", language), ("task", task), ("prompt", prompt)) if v}

    async def body():
        sent = 0
        with open(path, "rb") as f:
            while piece := await asyncio.to_thread(f.read, chunk_bytes):
                sent += len(piece)
                if on_sent:
                    on_sent(sent, size)
                yield piece

    url = f"{http_url(server)}/v1/rooms/{quote(room, safe='')}/upload"
    headers = {**auth_headers(key), "Content-Type": _content_type(path), "Content-Length": str(size)}
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=600)
    async with aiohttp.ClientSession(timeout=timeout) as session, \
            session.post(url, data=body(), params=params, headers=headers, expect100=True,
                         **({"ssl": ssl} if ssl is not None else {})) as response:
        if response.status != 200:
            text = await response.text()
            try:
                err = json.loads(text)
                code, message = err.get("code", "error"), err.get("message", text)
            except ValueError:
                code, message = "error", text.strip()[:300] or response.reason or ""
            raise UploadRefused(response.status, code, message)
        last: dict[str, Any] = {}
        async for raw in response.content:
            if not raw.strip():
                continue
            last = json.loads(raw)
            if on_line:
                on_line(last)
        if last.get("type") == "error" or not last:
            error = last.get("error") or {"code": "incomplete", "message": "the answer ended early"}
            raise UploadRefused(200, error.get("code", "error"), error.get("message", ""))
        return last
