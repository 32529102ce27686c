"""The OpenAI Realtime transcription session with the real, unmodified `openai` SDK (`client.realtime.connect`)
against a real server process and the shipped model, on real speech sent as 24 kHz PCM and as G.711: deltas come
while the speaker is still talking, the deltas joined are each item's completed text, the words are as good as the
offline decode of the same audio, a room's viewers see the captions, and manual commits end turns."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path

import numpy as np
import openai
import pytest
import websockets
from openai import AsyncOpenAI

from realtime.client import listen
from realtime.core.audio import Resampler, ulaw_encode
from testbed.server import ServerProcess
from testbed.speech import english, make_lecture, wer, write_wav
from tests.httpclient import http, new_room

pytestmark = pytest.mark.slow

ADMIN = "ak_oai-realtime-admin-0123456789abcdef"
STEP_S = 0.1  # audio per append, as a browser or a telephony bridge sends it


@pytest.fixture(scope="module")
def srv(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    server = ServerProcess(cache_dir, tmp_path_factory.mktemp("oai-rt") / "server.log",
                           env={"REALTIME_ADMIN_KEY": ADMIN})
    yield server
    server.stop()



def client(srv, key: str) -> AsyncOpenAI:
    return AsyncOpenAI(api_key=key, base_url=srv.http + "/v1", max_retries=0)


async def run_session(srv, room: str, key: str, session: dict, audio: bytes, bytes_per_s: int,
                      speed: float = 1.0, commits: list[int] | None = None, tail: bytes = b"") -> tuple:
    """Stream `audio` paced at `speed` times real time (then `tail`, unpaced), committing after the byte offsets in
    `commits`; collect every server event with the audio time the client had sent when it arrived."""
    events: list[tuple[float, dict]] = []
    step = int(bytes_per_s * STEP_S)
    sent = 0
    async with client(srv, key).realtime.connect(extra_query={"intent": "transcription", "room": room}) as conn:
        await conn.session.update(session=session)

        async def feed() -> None:
            nonlocal sent
            started = time.monotonic()
            cuts = sorted(commits or [])
            for i in range(0, len(audio), step):
                await conn.input_audio_buffer.append(audio=base64.b64encode(audio[i:i + step]).decode())
                sent = i + len(audio[i:i + step])
                if cuts and sent >= cuts[0]:
                    cuts.pop(0)
                    await conn.input_audio_buffer.commit()
                wait = started + sent / bytes_per_s / speed - time.monotonic()
                await asyncio.sleep(max(0.0, wait))
            for i in range(0, len(tail), step):
                await conn.input_audio_buffer.append(audio=base64.b64encode(tail[i:i + step]).decode())
                await asyncio.sleep(STEP_S / 4)

        feeder = asyncio.create_task(feed())
        expected = len(commits) if commits else 0
        deadline = time.monotonic() + len(audio) / bytes_per_s / speed + 60
        try:
            while time.monotonic() < deadline:
                try:
                    ev = await asyncio.wait_for(conn.recv(), 1.0)
                except TimeoutError:  # quiet: done once all audio is in and every item has completed
                    seen = [e for _, e in events]
                    done = sum(e["type"].endswith("transcription.completed") for e in seen)
                    if feeder.done() and done >= expected and not _open_items(seen):
                        break
                    continue
                events.append((sent / bytes_per_s, ev.model_dump(exclude_none=True)))
                if ev.type == "error":
                    break
        finally:
            await feeder
    return events


def _open_items(events: list[dict]) -> set[str]:
    started = {e["item_id"] for e in events if e["type"] == "input_audio_buffer.speech_started"}
    committed = {e["item_id"] for e in events if e["type"] == "input_audio_buffer.committed"}
    completed = {e["item_id"] for e in events if e["type"].endswith("transcription.completed")}
    return (started | committed) - completed


def items(events: list[dict]) -> dict[str, dict]:
    """Per item: its deltas joined, its completed transcript, in commit order."""
    out: dict[str, dict] = {}
    for e in events:
        if e["type"] == "input_audio_buffer.committed":
            out.setdefault(e["item_id"], {"deltas": "", "completed": None, "previous": e.get("previous_item_id")})
    for e in events:
        if e["type"].endswith("transcription.delta"):
            out[e["item_id"]]["deltas"] += e["delta"]
        elif e["type"].endswith("transcription.completed"):
            out[e["item_id"]]["completed"] = e["transcript"]
    return out


@pytest.fixture(scope="module")
def lecture(clips):
    chosen = english(clips)[:3]
    return make_lecture(chosen), " ".join(c.reference for c in chosen)


@pytest.fixture(scope="module")
def vad_session(srv, lecture):
    """Three English clips with pauses, streamed at 1.0x as 24 kHz PCM with server VAD, while a viewer watches."""
    lec, _ = lecture
    key = new_room(srv, "rt-vad", ADMIN)
    pcm24 = Resampler(16000, 24000)(lec.audio).astype("<i2").tobytes()
    silence = bytes(24000 * 2 * 2)
    session = {"type": "transcription", "audio": {"input": {
        "format": {"type": "audio/pcm", "rate": 24000},
        "transcription": {"model": "whisper-1", "language": "en"},
        "turn_detection": {"type": "server_vad", "silence_duration_ms": 500}}}}

    async def run():
        seen: list[dict] = []
        watcher = asyncio.create_task(listen(srv.url, "rt-vad", idle=120, on_event=seen.append))
        await asyncio.sleep(0.5)
        events = await run_session(srv, "rt-vad", key, session, pcm24, 48000, tail=silence)
        await asyncio.sleep(1.0)
        watcher.cancel()
        return events, seen

    return asyncio.run(run())


def test_deltas_arrive_while_the_turn_is_spoken(vad_session):
    events, _ = vad_session
    kinds = [e["type"] for _, e in events]
    assert kinds[:2] == ["session.created", "session.updated"], kinds[:3]
    assert events[1][1]["session"]["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert "error" not in kinds, [e for _, e in events if e["type"] == "error"]
    stopped = {e["item_id"]: e["audio_end_ms"] / 1000 for _, e in events
               if e["type"] == "input_audio_buffer.speech_stopped"}
    early = [e["item_id"] for sent_s, e in events if e["type"].endswith("transcription.delta")
             and sent_s < stopped.get(e["item_id"], 0)]
    assert early, "no delta arrived before its turn's speech ended"
    long_turns = [i for i, end in stopped.items() if end - next(
        e["audio_start_ms"] / 1000 for _, e in events if e.get("item_id") == i
        and e["type"] == "input_audio_buffer.speech_started") > 4]
    assert set(long_turns) <= set(early), (long_turns, early)  # every turn over 4 s streamed part of itself


def test_deltas_join_to_completed_and_match_offline(srv, vad_session, lecture, tmp_path):
    events, _ = vad_session
    lec, reference = lecture
    got = items([e for _, e in events])
    assert got and all(v["completed"] is not None for v in got.values()), got
    assert all(v["deltas"] == v["completed"] for v in got.values()), got
    order = list(got)
    assert [got[i]["previous"] for i in order[1:]] == order[:-1]  # items chain in commit order
    streamed = " ".join(v["completed"] for v in got.values())
    path = tmp_path / "lecture.wav"
    write_wav(path, lec.audio)
    with open(path, "rb") as f:
        offline = openai.OpenAI(api_key=ADMIN, base_url=srv.http + "/v1", max_retries=0, timeout=300) \
            .audio.transcriptions.create(model="whisper-1", file=f, language="en").text
    print(f"WER streamed {wer(reference, streamed):.3f} offline {wer(reference, offline):.3f}")
    assert wer(reference, streamed) <= wer(reference, offline) + 0.05, (streamed, offline)


def test_the_rooms_viewers_see_the_session_as_captions(srv, vad_session):
    events, seen = vad_session
    finals = [e["text"] for e in seen if e["type"] == "final"]
    completed = " ".join(e["transcript"] for _, e in events if e["type"].endswith("transcription.completed"))
    assert finals and wer(" ".join(finals), completed) < 0.15, (finals, completed)
    status, _, body = http(srv, "GET", "/v1/rooms/rt-vad/transcript")
    assert status == 200 and [f["text"] for f in json.loads(body)["finals"]] == finals


def test_manual_commits_end_turns_in_g711(srv, clips):
    """`turn_detection: null`: only the client's commits end turns (one per clip), here in 8 kHz mu-law."""
    key = new_room(srv, "rt-manual", ADMIN)
    chosen = english(clips)[3:5]
    down = Resampler(16000, 8000)
    pieces = [ulaw_encode(down(np.concatenate([c.samples(), np.zeros(4000, np.int16)]))) for c in chosen]
    audio = b"".join(pieces)
    commits = list(np.cumsum([len(p) for p in pieces]))
    session = {"type": "transcription", "audio": {"input": {
        "format": {"type": "audio/pcmu"}, "transcription": {"model": "whisper-1", "language": "en"},
        "turn_detection": None}}}
    events = asyncio.run(run_session(srv, "rt-manual", key, session, audio, 8000, speed=1.5, commits=commits))
    kinds = [e["type"] for _, e in events]
    assert "error" not in kinds and "input_audio_buffer.speech_stopped" in kinds, events
    got = items([e for _, e in events])
    assert len(got) == 2, got
    for (item, v), clip in zip(got.items(), chosen, strict=True):
        assert v["deltas"] == v["completed"] and wer(clip.reference, v["completed"]) < 0.35, (item, v)


def test_refusals_are_openai_errors(srv):
    """A wrong key, and a commit with nothing to commit, answer `error` events the SDK parses."""
    new_room(srv, "rt-refuse", ADMIN)

    async def run():
        out = []
        async with client(srv, "sk_wrong-0123456789abcdef").realtime.connect(
                extra_query={"intent": "transcription", "room": "rt-refuse"}) as conn:
            async for ev in conn:
                out.append(ev)
                if ev.type == "error":
                    break
        async with client(srv, ADMIN).realtime.connect(
                extra_query={"intent": "transcription", "room": "rt-refuse"}) as conn:
            await conn.input_audio_buffer.commit()
            async for ev in conn:
                out.append(ev)
                if ev.type == "error":
                    break
        return out

    events = asyncio.run(run())
    errors = [e.error for e in events if e.type == "error"]
    assert [e.code for e in errors] == ["bad_key", "input_audio_buffer_commit_empty"], errors
    assert all(e.message and e.type for e in errors)


def test_a_browser_sends_the_key_as_a_subprotocol(srv):
    """Browsers cannot set headers on a WebSocket: OpenAI's browser examples offer `realtime` and
    `openai-insecure-api-key.<key>`; the handshake must select one of them, or the browser fails it."""

    key = new_room(srv, "rt-browser", ADMIN)

    async def run(offered: list[str]):
        async with websockets.connect(f"{srv.url}/v1/realtime?intent=transcription&room=rt-browser",
                                      subprotocols=offered) as ws:
            created = json.loads(await ws.recv())
            await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
            return ws.subprotocol, created["type"], json.loads(await ws.recv())

    chosen, first, reply = asyncio.run(run(["realtime", "openai-insecure-api-key." + key]))
    assert (chosen, first) == ("realtime", "session.created")
    assert reply["error"]["code"] == "input_audio_buffer_commit_empty", reply  # the key was taken
    chosen, first, _ = asyncio.run(run(["openai-insecure-api-key." + key]))
    assert chosen == "openai-insecure-api-key." + key and first == "session.created"
