"""Bad input from clients gets a documented error (with `seq` and a human message) and, unless the protocol says the
connection must end, the connection stays usable; nothing a client does wrong disturbs other rooms, the finals of its
own room, or the server's health."""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import websockets

from realtime.client import stream_audio, ws_url
from testbed.speech import english, wer

pytestmark = pytest.mark.slow

SILENCE_100MS = bytes(3200)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------- helpers


@contextlib.asynccontextmanager
async def connect(server, role: str, room: str, *, hello: bool = True) -> AsyncIterator[Any]:
    """A raw WebSocket to /ws/{role}/{room}; by default the `hello` is read and checked."""
    async with websockets.connect(ws_url(server.url, role, room), max_size=None, open_timeout=10) as ws:
        if hello:
            event = await next_event(ws)
            assert event["type"] == "hello", event
            assert event["role"] == ("speaker" if role == "speak" else "listener")
            assert event["room"] == room
        yield ws


ROOM_EVENTS = ("status", "partial", "final", "notes", "panel", "summary")


async def next_event(ws, timeout: float = 10.0, skip: tuple[str, ...] = ROOM_EVENTS) -> dict:
    """The next event whose type is not in `skip` (room traffic that may interleave with replies)."""
    async with asyncio.timeout(timeout):
        while True:
            raw = await ws.recv()
            assert isinstance(raw, str), f"server sent a binary frame: {raw[:40]!r}"
            event = json.loads(raw)
            assert isinstance(event.get("seq"), int) and not isinstance(event["seq"], bool), event
            if event["type"] not in skip:
                return event


async def wait_for(ws, pred: Callable[[dict], bool], timeout: float = 10.0) -> dict:
    async with asyncio.timeout(timeout):
        while True:
            event = json.loads(await ws.recv())
            assert event["type"] != "error", event
            if pred(event):
                return event


async def expect_error(ws, code: str) -> dict:
    event = await next_event(ws)
    assert event["type"] == "error", f"expected error {code}, got {event}"
    assert event["code"] == code, event
    assert isinstance(event["message"], str) and len(event["message"].split()) >= 3, event
    assert set(event) == {"type", "seq", "code", "message"}, event
    return event


async def expect_pong(ws, ident: Any = None) -> None:
    """Ping and get the matching pong next: the connection is open and nothing else (no error) was pending."""
    ident = ident if ident is not None else uuid.uuid4().hex
    await ws.send(json.dumps({"type": "ping", "id": ident}))
    event = await next_event(ws)
    assert event["type"] == "pong" and event["id"] == ident, event


async def expect_closed(ws, code: int) -> None:
    with pytest.raises(websockets.ConnectionClosed):
        async with asyncio.timeout(10):
            while True:
                await ws.recv()
    assert ws.close_code == code, (ws.close_code, ws.close_reason)


async def start(ws, **fields: Any) -> dict:
    await ws.send(json.dumps({"type": "start", "language": "en", **fields}))
    return await wait_for(ws, lambda e: e["type"] == "status" and e["state"] == "live")


async def get_json(server, path: str) -> Any:
    return await asyncio.to_thread(server.get_json, path)


async def wait_speakers(server, n: int, timeout: float = 30.0) -> dict:
    """Poll /healthz until the engine holds `n` admitted streams (slots are released once the last final is out)."""
    async with asyncio.timeout(timeout):
        while True:
            health = await get_json(server, "/healthz")
            if health["speakers"] == n:
                return health
            await asyncio.sleep(0.2)


# ---------------------------------------------------------------- the checks (reused by the concurrency test)

BAD_STARTS = [
    {"type": "start", "language": "English!"},
    {"type": "start", "language": 42},
    {"type": "start", "task": "summarise"},
    {"type": "start", "sample_rate": 44100},
    {"type": "start", "encoding": "f32le"},
    {"type": "start", "prompt": 123},
    {"type": "start", "prompt": "x" * 2001},
]


async def check_unstarted_speaker(server) -> None:
    async with connect(server, "speak", unique("bad-json")) as ws:
        await ws.send("{not json")
        await expect_error(ws, "bad_json")
        await ws.send("")
        await expect_error(ws, "bad_json")
        await ws.send(json.dumps(["start"]))
        await expect_error(ws, "bad_json")
        await ws.send("42")
        await expect_error(ws, "bad_json")
        await ws.send(json.dumps({"type": "dance"}))
        await expect_error(ws, "unknown_type")
        await ws.send(json.dumps({"language": "en"}))
        await expect_error(ws, "bad_message")
        await ws.send(json.dumps({"type": "ping", "id": {"nested": 1}}))
        await expect_error(ws, "bad_message")
        for msg in BAD_STARTS:
            await ws.send(json.dumps(msg))
            await expect_error(ws, "bad_message")
        # None of the rejected starts started anything.
        await ws.send(SILENCE_100MS)
        await expect_error(ws, "not_started")
        await ws.send(b"\x00")  # not_started wins over bad_audio: nothing is parsed before a start
        await expect_error(ws, "not_started")
        await expect_pong(ws, 7)
        await expect_pong(ws, "str-id")


async def check_started_speaker(server) -> None:
    async with connect(server, "speak", unique("bad-audio")) as ws:
        await start(ws)
        await ws.send(SILENCE_100MS + b"\x00")
        await expect_error(ws, "bad_audio")
        await ws.send(bytes(40000))
        err = await expect_error(ws, "frame_too_large")
        assert "32000" in err["message"], err
        await expect_pong(ws)  # still open after an oversized frame
        await ws.send(bytes(32000))  # exactly the limit is fine
        await expect_pong(ws)
        await ws.send(json.dumps({"type": "start", "language": "en"}))
        await expect_error(ws, "already_started")
        await ws.send(json.dumps({"type": "start", "task": "nope"}))
        await expect_error(ws, "bad_message")
        for _ in range(5):
            await ws.send(SILENCE_100MS)
        await expect_pong(ws)
        await ws.send(json.dumps({"type": "stop"}))
        stopped = await wait_for(ws, lambda e: e["type"] == "status" and e["state"] == "stopped", timeout=30)
        assert stopped["audio_s"] == 1.5, stopped  # 1 s + 5 x 0.1 s accepted; the rejected frames count for nothing


async def check_listener(server, room: str | None = None) -> None:
    async with connect(server, "listen", room or unique("bad-listener")) as ws:
        await ws.send(SILENCE_100MS)
        await expect_error(ws, "not_a_speaker")
        await ws.send(b"\x01")
        await expect_error(ws, "not_a_speaker")
        await ws.send(json.dumps({"type": "start", "language": "en"}))
        await expect_error(ws, "not_a_speaker")
        await ws.send(json.dumps({"type": "stop"}))
        await expect_error(ws, "not_a_speaker")
        await ws.send("[1, 2")
        await expect_error(ws, "bad_json")
        await ws.send(json.dumps([{"type": "start"}]))
        await expect_error(ws, "bad_json")
        await ws.send(json.dumps({"type": "subscribe"}))
        await expect_error(ws, "unknown_type")
        await ws.send(json.dumps({"type": "start", "task": "nope"}))
        await expect_error(ws, "bad_message")
        await expect_pong(ws)


BAD_ROOMS = [
    "a" * 65,
    "bad room",
    "-leading-dash",
    ".hidden",
    "semi;colon",
    "ünïcode",
    "a/b",  # ws_url percent-encodes it to a%2Fb
]


async def check_bad_room(server, role: str, name: str) -> None:
    async with connect(server, role, name, hello=False) as ws:
        err = await expect_error(ws, "bad_room")
        assert err["seq"] == 0
        await expect_closed(ws, 4400)


async def check_speaker_exists(server) -> None:
    """A second connection may watch, but its `start` is refused while the room has a speaker; with `takeover` it
    replaces the speaker, whose connection is closed with `taken_over`."""
    room = unique("two-speakers")
    async with connect(server, "speak", room) as first:
        await first.send(json.dumps({"type": "start", "language": "en"}))
        await wait_for(first, lambda e: e["type"] == "status" and e["state"] == "live")
        async with connect(server, "speak", room) as second:
            await second.send(json.dumps({"type": "start", "language": "en"}))
            await expect_error(second, "speaker_exists")
            await expect_closed(second, 4409)
        await expect_pong(first)  # the room's speaker is untouched
        async with connect(server, "speak", room) as third:
            await third.send(json.dumps({"type": "start", "language": "en", "takeover": True}))
            await expect_error(first, "taken_over")
            await expect_closed(first, 4409)
            await wait_for(third, lambda e: e["type"] == "status" and e["state"] == "live")
            await expect_pong(third)


# ---------------------------------------------------------------- tests


async def test_bad_messages_from_a_speaker_before_start(server):
    await check_unstarted_speaker(server)


async def test_bad_audio_from_a_started_speaker(server):
    await check_started_speaker(server)
    await wait_speakers(server, 0)


async def test_bad_input_from_a_listener(server):
    await check_listener(server)


@pytest.mark.parametrize("role", ["speak", "listen"])
@pytest.mark.parametrize("name", BAD_ROOMS, ids=lambda n: n if len(n) < 20 else f"{len(n)}-chars")
async def test_bad_room_names(server, role, name):
    await check_bad_room(server, role, name)


async def test_longest_room_name_is_accepted(server):
    async with connect(server, "listen", "r" * 64) as ws:
        await expect_pong(ws)


async def test_second_speaker_is_refused(server):
    await check_speaker_exists(server)


async def test_server_full(server):
    health = await wait_speakers(server, 0)
    limit = health["max_speakers"]
    if health["model"]["device"] == "cpu":  # a worker per core, 2 speakers per worker
        assert limit == 2 * health["model"]["workers"] and health["model"]["cpu_threads"] == 1, health
    refused = health["refused"]
    async with contextlib.AsyncExitStack() as stack:
        speakers = [await stack.enter_async_context(connect(server, "speak", unique("full"))) for _ in range(limit)]
        for ws in speakers:
            await start(ws)
        assert (await get_json(server, "/healthz"))["speakers"] == limit
        async with connect(server, "speak", unique("full-extra")) as extra:
            await expect_pong(extra)  # connecting is fine; starting is what needs a slot
            await extra.send(json.dumps({"type": "start", "language": "en"}))
            err = await expect_error(extra, "server_full")
            assert "try again" in err["message"]
            await expect_closed(extra, 1013)
        for ws in speakers:
            await expect_pong(ws)  # the admitted ones are unaffected
        health = await get_json(server, "/healthz")
        assert health["refused"] == refused + 1 and health["speakers"] == limit
    await wait_speakers(server, 0)
    async with connect(server, "speak", unique("full-after")) as ws:  # slots come back once speakers leave
        await start(ws)


async def test_other_rooms_keep_working_during_bad_input(server, clips):
    """A real clip streams in one room while every kind of bad input hits others; then the same room's finals
    survive a barrage from a listener."""
    clip = min(english(clips), key=lambda c: len(c.samples()))
    room = unique("busy")
    errors_before = (await get_json(server, "/healthz"))["decode_errors"]
    streaming = asyncio.create_task(stream_audio(server.url, room, clip.samples(), speed=2.0, language="en",
                                                 stop_timeout=60))
    await asyncio.sleep(0.3)
    # Round after round of bad input until the clip is done. The clip's stream holds one slot and
    # check_started_speaker another (released before it returns), so max_speakers=2 is enough.
    rounds = 0
    while not streaming.done() or rounds == 0:
        await asyncio.gather(
            check_unstarted_speaker(server),
            check_started_speaker(server),
            check_listener(server),
            *(check_bad_room(server, role, name) for role in ("speak", "listen") for name in BAD_ROOMS[:3]),
        )
        rounds += 1
        assert rounds < 500
    result = await asyncio.wait_for(streaming, 90)
    print(f"{rounds} rounds of bad input while streaming {clip.name}")
    assert not [e for e in result.events if e["type"] == "error"], result.events
    assert result.finals and result.text.strip(), result.events
    assert wer(clip.reference, result.text) < 0.5, (clip.reference, result.text)
    assert result.events[-1]["type"] == "status" and result.events[-1]["state"] == "stopped"

    before = await get_json(server, f"/v1/rooms/{room}/transcript")
    assert [f["text"] for f in before["finals"]] == [f["text"] for f in result.finals]
    # A listener in the same room: it gets the finals replayed, then misbehaves in every way.
    async with connect(server, "listen", room) as ws:
        replay = [await wait_for(ws, lambda e: e["type"] == "final") for _ in result.finals]
        assert [f["text"] for f in replay] == [f["text"] for f in result.finals]
    for _ in range(3):
        await check_listener(server, room)
    async with connect(server, "speak", room, hello=False) as ws:  # a speaker that never starts
        hello = await next_event(ws)
        assert hello["type"] == "hello" and hello["finals"] == len(result.finals)
        await ws.send(b"\x00\x00")
        await expect_error(ws, "not_started")
        await ws.send("{")
        await expect_error(ws, "bad_json")
    after = await get_json(server, f"/v1/rooms/{room}/transcript")
    assert after["finals"] == before["finals"] and after["text"] == before["text"]
    rooms = {r["room"]: r for r in await get_json(server, "/v1/rooms")}
    assert rooms[room]["finals"] == len(result.finals) and not rooms[room]["speaking"]

    with pytest.raises(urllib.error.HTTPError) as missing:
        await get_json(server, f"/v1/rooms/{unique('never')}/transcript")
    assert missing.value.code == 404
    with urllib.request.urlopen(server.http + "/healthz", timeout=10) as r:
        assert r.status == 200
        health = json.loads(r.read())
    assert health["status"] == "ok" and health["decode_errors"] == errors_before, health
