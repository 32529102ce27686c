"""Recorded lectures into rooms (`POST /v1/rooms/{room}/upload`) against a real server with the real model and real
speech: finals on the file's clock, notes, summary and exports, listeners during the upload and late joiners, every
refusal (with nothing written into the room), a live room, cancelling, and `realtime upload` end to end."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
import wave
from pathlib import Path

import aiohttp
import numpy as np
import pytest
import srt
import websockets

from realtime.client import UploadRefused, auth_headers, listen, stream_audio, upload_file, ws_url
from testbed.server import ServerProcess
from testbed.speech import ROOT, english, make_lecture, wer, write_wav
from tests.httpclient import code_of, http, new_room

pytestmark = pytest.mark.slow

ADMIN = "ak_upload-admin-key-0123456789abcdef"
MAX_MB = 5  # the two-minute lecture below is 3.7 MB
MAX_S = 150


@pytest.fixture(scope="module")
def srv(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    srv = ServerProcess(cache_dir, tmp_path_factory.mktemp("upload") / "server.log", "--max-upload-mb", str(MAX_MB),
                        "--max-lecture-s", str(MAX_S), env={"REALTIME_ADMIN_KEY": ADMIN})
    yield srv
    srv.stop()



@pytest.fixture(scope="module")
def lecture(clips, tmp_path_factory) -> tuple[Path, float, list]:
    """Three English clips with pauses between them, as a WAV file (about half a minute)."""
    chosen = english(clips)[:3]
    lec = make_lecture(chosen)
    path = tmp_path_factory.mktemp("lecture") / "lecture.wav"
    write_wav(path, lec.audio)
    return path, len(lec.audio) / 16000, chosen


@pytest.fixture(scope="module")
def long_lecture(clips, tmp_path_factory) -> tuple[Path, float]:
    """About two minutes of speech (two 60 s chunks or more), under MAX_S, for cancelling mid-way."""
    pool = english(clips)
    chosen, total = [], 0.0
    while total < 110:
        clip = pool[len(chosen) % len(pool)]
        chosen.append(clip)
        total += len(clip.samples()) / 16000 + 2
    lec = make_lecture(chosen)
    path = tmp_path_factory.mktemp("long") / "long.wav"
    write_wav(path, lec.audio[: int(min(len(lec.audio) / 16000, MAX_S - 5) * 16000)])
    with wave.open(str(path)) as w:
        return path, w.getnframes() / 16000


def transcript(srv, room: str) -> dict:
    status, _, body = http(srv, "GET", f"/v1/rooms/{room}/transcript")
    assert status == 200, body
    return json.loads(body)


@pytest.fixture(scope="module")
def uploaded(srv, lecture):
    """One upload with a listener watching from before it starts; what each saw."""
    path, duration, chosen = lecture
    key = new_room(srv, "rec-1", ADMIN)

    async def run():
        events: list[dict] = []
        watcher = asyncio.create_task(listen(srv.url, "rec-1", idle=60, on_event=events.append))
        await asyncio.sleep(1.0)
        lines: list[dict] = []
        sent: list[int] = []
        started = time.monotonic()
        last = await upload_file(srv.url, "rec-1", str(path), key=key, language="en",
                                 on_sent=lambda n, _: sent.append(n), on_line=lines.append)
        elapsed = time.monotonic() - started
        for _ in range(100):  # the summary and the stopped status follow the done line closely
            if any(e["type"] == "status" and e["state"] == "stopped" for e in events):
                break
            await asyncio.sleep(0.1)
        watcher.cancel()
        return last, lines, sent, events, elapsed

    return (*asyncio.run(run()), duration, chosen, key)


def test_upload_publishes_finals_on_the_files_clock(srv, uploaded, lecture):
    last, lines, sent, events, elapsed, duration, chosen, _ = uploaded
    print(f"upload of {duration:.1f} s took {elapsed:.1f} s")
    assert last["type"] == "done" and last["state"] == "done", last
    assert lines[0]["type"] == "accepted" and abs(lines[0]["total_s"] - duration) < 0.5, lines[0]
    assert len(sent) > 1 and sent[-1] == lecture[0].stat().st_size  # the body went out in pieces
    finals = transcript(srv, "rec-1")["finals"]
    assert finals and last["finals"] == len(finals)
    starts = [f["start"] for f in finals]
    assert starts == sorted(starts), starts
    for f in finals:
        assert 0 <= f["start"] <= f["end"] <= duration + 0.01, f
        assert f["words"] and all(f["start"] <= w["start"] <= w["end"] <= f["end"] + 1e-6 for w in f["words"]), f
        assert f["language"] == "en"
    text = " ".join(f["text"] for f in finals)
    reference = " ".join(c.reference for c in chosen)
    assert wer(reference, text) < 0.35, (reference, text)


def test_listener_sees_finals_progress_notes_and_summary(uploaded):
    _, _, _, events, _, duration, _, _ = uploaded
    kinds = [e["type"] for e in events]
    assert kinds[0] == "hello" and "final" in kinds and "notes" in kinds and "summary" in kinds, kinds
    statuses = [e for e in events if e["type"] == "status"]
    progress = [s["upload"] for s in statuses if s.get("upload") and s["state"] == "live"]
    assert progress and all(p["total_s"] > 0 and 0 <= p["done_s"] <= p["total_s"] for p in progress), statuses
    assert statuses[-1]["state"] == "stopped" and statuses[-1]["upload"]["state"] == "done", statuses[-1]
    assert abs(statuses[-1]["upload"]["done_s"] - duration) < 0.5
    seqs = [e["seq"] for e in events if e["type"] != "hello"]
    assert seqs == sorted(seqs)


def test_late_joiner_notes_summary_and_exports(srv, uploaded):
    finals = transcript(srv, "rec-1")["finals"]
    late = asyncio.run(listen(srv.url, "rec-1", idle=3))
    assert [e["text"] for e in late.events if e["type"] == "final"] == [f["text"] for f in finals]
    assert {"notes", "summary"} <= {e["type"] for e in late.events}
    status, _, summary = http(srv, "GET", "/v1/rooms/rec-1/summary")
    assert status == 200 and summary.strip(), summary
    status, _, body = http(srv, "GET", "/v1/rooms/rec-1/export?format=srt")
    cues = list(srt.parse(body))
    assert status == 200 and len(cues) >= len(finals)  # a long offline segment is split into readable cues
    assert " ".join(c.content for c in cues).split() == " ".join(f["text"] for f in finals).split()
    assert cues[0].start.total_seconds() == pytest.approx(finals[0]["start"], abs=0.002)
    status, _, txt = http(srv, "GET", "/v1/rooms/rec-1/export?format=txt")
    assert status == 200 and finals[-1]["text"] in txt
    status, _, body = http(srv, "GET", "/v1/rooms/rec-1/upload", key=ADMIN)
    assert status == 200 and json.loads(body)["upload"]["state"] == "done", body


def raw_upload(srv, room: str, body: bytes, key: str | None, content_type: str = "audio/wav",
               headers: dict | None = None) -> tuple[int, str]:
    status, _, text = http(srv, "POST", f"/v1/rooms/{room}/upload", body, key=key,
                           headers={"Content-Type": content_type, **(headers or {})})
    return status, text


def test_bad_input_is_refused_and_nothing_is_written(srv, lecture, tmp_path):
    path, _, _ = lecture
    key = new_room(srv, "rec-bad", ADMIN)
    wav = path.read_bytes()
    long_quiet = tmp_path / "long.wav"  # 8 kHz 8-bit: MAX_S + 30 s of near silence in well under MAX_MB
    with wave.open(str(long_quiet), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(8000)
        w.writeframes(bytes([128]) * 8000 * (MAX_S + 30))
    cases = [
        (raw_upload(srv, "rec-bad", wav, None), 401, "key_required"),
        (raw_upload(srv, "rec-bad", wav, "sk_wrong-0123456789abcdef"), 401, "bad_key"),
        (raw_upload(srv, "rec-nope", wav, ADMIN), 404, "no_such_room"),
        (raw_upload(srv, "rec-bad", b"hello, this is text\n" * 50, key, "text/plain"), 415, "not_audio"),
        (raw_upload(srv, "rec-bad", np.random.default_rng(1).bytes(20000), key, "application/octet-stream"), 415,
         "not_audio"),
        (raw_upload(srv, "rec-bad", wav[: len(wav) // 2], key), 400, "corrupt"),  # truncated: header says more
        (raw_upload(srv, "rec-bad", b"RIFF" + np.random.default_rng(2).bytes(5000), key), 400, "corrupt"),
        (raw_upload(srv, "rec-bad", b"", key), 400, "corrupt"),
        (raw_upload(srv, "rec-bad", long_quiet.read_bytes(), key), 413, "too_long"),
        (raw_upload(srv, "rec-bad", bytes(MAX_MB * 1_000_000 + 1), key, "application/octet-stream"), 413,
         "too_large"),
        (raw_upload(srv, "rec-bad", wav, key, headers={"Origin": "https://evil.example"}), 403,
         "origin_not_allowed"),
    ]
    for (status, body), want_status, want_code in cases:
        assert (status, code_of(body)) == (want_status, want_code), body
        if want_status in (400, 413):
            assert json.loads(body)["message"], body
    assert "truncated" in cases[5][0][1]
    assert transcript(srv, "rec-bad")["finals"] == []
    status, _, body = http(srv, "GET", "/v1/rooms/rec-bad/upload", key=key)
    info = json.loads(body)["upload"]
    assert status == 200 and info["state"] == "refused" and info["finals"] == 0, body
    # A refused upload releases the room: a good one goes through afterwards.
    assert raw_upload(srv, "rec-bad", b"", key)[0] == 400


def test_live_room_and_running_upload_refuse_each_other(srv, clips, long_lecture):
    key = new_room(srv, "rec-live", ADMIN)
    path, _ = long_lecture

    async def run():
        live = asyncio.create_task(stream_audio(srv.url, "rec-live", english(clips)[0].samples(), speed=1.0,
                                                language="en", key=key))
        await asyncio.sleep(1.5)
        with pytest.raises(UploadRefused) as refused:
            await upload_file(srv.url, "rec-live", str(path), key=key)
        await live
        # Now an upload runs: a second one and a live speaker (even with takeover) are refused.
        lines: list[dict] = []
        up = asyncio.create_task(upload_file(srv.url, "rec-live", str(path), key=key, language="en",
                                             on_line=lines.append))
        while not lines and not up.done():
            await asyncio.sleep(0.1)
        assert lines, await up  # the upload's refusal, if it was refused
        with pytest.raises(UploadRefused) as second:
            await upload_file(srv.url, "rec-live", str(path), key=key)
        async with websockets.connect(ws_url(srv.url, "speak", "rec-live"), additional_headers=auth_headers(key)) \
                as ws:
            await ws.send(json.dumps({"type": "start", "language": "en", "takeover": True}))
            got = []
            with contextlib.suppress(websockets.ConnectionClosedError):  # closed with 4409, not 1000
                async for m in ws:
                    got.append(json.loads(m))
            close = ws.close_code
        status, _, body = http(srv, "DELETE", "/v1/rooms/rec-live/upload", key=key)
        last = await up
        return refused.value, second.value, got, close, (status, body), last

    refused, second, got, close, deleted, last = asyncio.run(run())
    assert (refused.status, refused.code) == (409, "speaker_exists") and "live" in refused.message
    assert (second.status, second.code) == (409, "speaker_exists") and "upload" in second.message
    assert [e["code"] for e in got if e["type"] == "error"] == ["speaker_exists"] and close == 4409, got
    assert deleted[0] == 200 and json.loads(deleted[1])["upload"]["state"] == "cancelled", deleted
    assert last["type"] == "cancelled"


def finals_count(srv, room: str) -> int:
    return len(transcript(srv, room)["finals"])


def test_cancel_stops_decoding_and_is_marked(srv, long_lecture):
    """A client that goes away mid-transcription cancels it: the finals stop growing, the status says where."""
    path, duration = long_lecture
    key = new_room(srv, "rec-cancel", ADMIN)

    async def run():
        events: list[dict] = []
        watcher = asyncio.create_task(listen(srv.url, "rec-cancel", idle=90, on_event=events.append))
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{srv.http}/v1/rooms/rec-cancel/upload", data=path.read_bytes(),
                                    params={"language": "en"},
                                    headers={**auth_headers(key), "Content-Type": "audio/wav"}) as response:
                assert response.status == 200
                async for raw in response.content:
                    line = json.loads(raw)
                    if line["type"] == "progress" and line["done_s"] > 0:
                        break  # the first chunk is in: walk away
        for _ in range(300):
            if any(e["type"] == "status" and e["state"] == "stopped" for e in events):
                break
            await asyncio.sleep(0.1)
        watcher.cancel()
        return events

    events = asyncio.run(run())
    stopped = [e for e in events if e["type"] == "status" and e["state"] == "stopped"]
    assert stopped, [e["type"] for e in events]
    info = stopped[-1]["upload"]
    assert info["state"] == "cancelled" and info["reason"] == "client disconnected", info
    assert 0 < info["done_s"] < duration - 1, info
    kept = finals_count(srv, "rec-cancel")
    assert kept == info["finals"]
    time.sleep(8)  # a chunk already decoding would have landed by now: nothing more comes
    assert finals_count(srv, "rec-cancel") == kept
    assert all(f["end"] <= info["done_s"] + 0.01 for f in transcript(srv, "rec-cancel")["finals"])
    status, _, body = http(srv, "GET", "/v1/rooms/rec-cancel/upload", key=key)
    assert json.loads(body)["upload"]["state"] == "cancelled"


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "realtime", "upload", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_cli_upload(srv, lecture, tmp_path):
    path, _, _ = lecture
    key = new_room(srv, "rec-cli", ADMIN)
    proc = cli(str(path), "--room", "rec-cli", "--server", srv.url, "--key", key, "--language", "en")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "uploading" in proc.stderr and "100%" in proc.stderr and "transcribing" in proc.stderr, proc.stderr
    assert f"{finals_count(srv, 'rec-cli')} finals" in proc.stderr.splitlines()[-1], proc.stderr
    wrong = cli(str(path), "--room", "rec-cli", "--server", srv.url, "--key", "sk_wrong-0123456789abcdef")
    assert wrong.returncode == 3 and "401 bad_key" in wrong.stderr and "Traceback" not in wrong.stderr, wrong.stderr
    missing = cli(str(tmp_path / "nope.wav"), "--room", "rec-cli", "--server", srv.url)
    assert missing.returncode == 2 and "no such file" in missing.stderr
    text = tmp_path / "notes.txt"
    text.write_text("not a recording\n" * 20)
    bad = cli(str(text), "--room", "rec-cli", "--server", srv.url, "--key", key)
    assert bad.returncode == 3 and "415 not_audio" in bad.stderr, bad.stderr
