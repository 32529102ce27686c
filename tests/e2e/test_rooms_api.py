"""Rooms with keys on a server that has an admin key (no open rooms): the admin API, who may publish and view,
keys kept out of logs, exports checked with real subtitle parsers, /metrics with the Prometheus parser, the
`room`, `export` and `listen` commands, and the audio rate limit."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import srt
import websockets
import webvtt
from prometheus_client.parser import text_string_to_metric_families

from realtime.client import auth_headers, listen, stream_audio, ws_url
from testbed.server import ServerProcess
from testbed.speech import ROOT, english, normalise

pytestmark = pytest.mark.slow

ADMIN = "ak_test-admin-key-0123456789abcdef"
WRONG = "sk_not-the-right-key-0123456789"


@pytest.fixture(scope="module")
def keyed(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    srv = ServerProcess(cache_dir, tmp_path_factory.mktemp("keyed") / "server.log", "--log-level", "debug",
                        "--audio-burst-s", "5", env={"REALTIME_ADMIN_KEY": ADMIN})
    yield srv
    srv.stop()


def http(srv, method: str, path: str, body: dict | None = None, key: str | None = None) -> tuple[int, str]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(srv.http + path, data=data, method=method,
                                 headers={"content-type": "application/json", **auth_headers(key)})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def refused(url: str, code: str, close: int, key: str | None = None, first: dict | None = None,
                  start: bool = False) -> None:
    """Connect, maybe send a first message and a start, and expect error `code` then close code `close`."""
    async with websockets.connect(url, additional_headers=auth_headers(key), open_timeout=10) as ws:
        if first is not None:
            await ws.send(json.dumps(first))
        if start:
            await ws.send(json.dumps({"type": "start", "language": "en"}))
        errors = []
        with pytest.raises(websockets.ConnectionClosed):
            async with asyncio.timeout(15):
                while True:
                    event = json.loads(await ws.recv())
                    if event["type"] == "error":
                        errors.append(event["code"])
        assert errors == [code] and ws.close_code == close, (errors, ws.close_code, ws.close_reason)


@pytest.fixture(scope="module")
def rooms(keyed) -> dict[str, dict]:
    made = {}
    for title, private in (("Physics 101", False), ("Chem 2", True)):
        status, body = http(keyed, "POST", "/v1/rooms", {"title": title, "private": private}, ADMIN)
        assert status == 201, body
        made[title] = json.loads(body)
    return made


def test_admin_api_needs_the_admin_key(keyed, rooms):
    assert http(keyed, "POST", "/v1/rooms", {"title": "X"})[0] == 401
    status, body = http(keyed, "POST", "/v1/rooms", {"title": "X"}, WRONG)
    assert status == 401 and json.loads(body)["code"] == "bad_key"
    physics = rooms["Physics 101"]
    assert physics["room"] == "physics-101" and physics["speaker_key"].startswith("sk_")
    assert physics["viewer_key"] is None and physics["viewer_url"].endswith("/?room=physics-101")
    chem = rooms["Chem 2"]
    assert chem["viewer_key"].startswith("vk_") and chem["viewer_url"].endswith("#key=" + chem["viewer_key"])
    assert http(keyed, "POST", "/v1/rooms", {"title": "Physics 101"}, ADMIN)[0] == 409
    assert http(keyed, "POST", "/v1/rooms", {"nope": 1}, ADMIN)[0] == 400
    public = {r["room"] for r in json.loads(http(keyed, "GET", "/v1/rooms")[1])}
    everything = {r["room"] for r in json.loads(http(keyed, "GET", "/v1/rooms", key=ADMIN)[1])}
    assert "physics-101" in public and "chem-2" not in public and {"physics-101", "chem-2"} <= everything
    status, body = http(keyed, "DELETE", "/v1/rooms/physics-101")
    assert status == 401  # and the room is still there
    assert http(keyed, "GET", "/v1/rooms/physics-101/transcript")[0] == 200


async def test_who_may_publish_and_view(keyed, rooms, clips):
    physics, chem = rooms["Physics 101"], rooms["Chem 2"]
    speak, hear = ws_url(keyed.url, "speak", "physics-101"), ws_url(keyed.url, "listen", "chem-2")
    await refused(ws_url(keyed.url, "listen", "no-such-room"), "no_such_room", 4404)
    await refused(ws_url(keyed.url, "speak", "ad-hoc-room"), "no_such_room", 4404)  # no open rooms here
    await refused(speak, "key_required", 4401, start=True)
    await refused(speak, "bad_key", 4401, key=WRONG, start=True)
    await refused(speak, "bad_key", 4401, first={"type": "auth", "key": chem["speaker_key"]}, start=True)
    await refused(ws_url(keyed.url, "speak", "chem-2"), "bad_key", 4401, key=chem["viewer_key"], start=True)
    # A private room says nothing before a key: a ping first is refused, so is a wrong key.
    await refused(hear, "key_required", 4401, first={"type": "ping"})
    await refused(hear, "bad_key", 4401, first={"type": "auth", "key": WRONG})
    for headers, first in (({}, {"type": "auth", "key": chem["viewer_key"]}), (auth_headers(chem["viewer_key"]), None)):
        async with websockets.connect(hear, additional_headers=headers) as ws:
            if first:
                await ws.send(json.dumps(first))
            hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert hello["type"] == "hello" and hello["room"] == "chem-2"
            await ws.send(b"\x00\x00")  # a viewer cannot publish
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["code"] == "not_a_speaker"
    assert http(keyed, "GET", "/v1/rooms/chem-2/transcript")[0] == 404  # a private room is no room without a key
    assert http(keyed, "GET", "/v1/rooms/chem-2/transcript", key=chem["viewer_key"])[0] == 200
    # The speaker key publishes.
    clip = english(clips)[0]
    result = await stream_audio(keyed.url, "physics-101", clip.samples(), speed=0, language="en",
                                key=physics["speaker_key"])
    assert result.finals and not [e for e in result.events if e["type"] == "error"], result.events
    # Keys never reach the log, even at debug level.
    log = Path(keyed.log_path).read_text(errors="replace")
    for key in (ADMIN, WRONG, physics["speaker_key"], chem["speaker_key"], chem["viewer_key"]):
        assert key not in log and key[3:] not in log


def test_exports_parse_and_round_trip(keyed, rooms):
    finals = json.loads(http(keyed, "GET", "/v1/rooms/physics-101/transcript")[1])["finals"]
    assert finals, "run after the publishing test"
    words = normalise(" ".join(f["text"] for f in finals))
    status, body = http(keyed, "GET", "/v1/rooms/physics-101/export?format=srt")
    cues = list(srt.parse(body))
    assert status == 200 and cues and normalise(" ".join(c.content for c in cues)) == words
    assert cues[0].start.total_seconds() >= finals[0]["start"] - 0.01
    assert cues[-1].end.total_seconds() <= finals[-1]["end"] + 0.31
    vtt = webvtt.from_buffer(io.StringIO(http(keyed, "GET", "/v1/rooms/physics-101/export?format=vtt")[1]))
    assert normalise(" ".join(c.text for c in vtt)) == words
    doc = json.loads(http(keyed, "GET", "/v1/rooms/physics-101/export?format=json")[1])
    assert [(s["id"], s["text"], s["start"]) for s in doc["segments"]] == [(f["id"], f["text"], f["start"])
                                                                         for f in finals]
    assert doc["title"] == "Physics 101"
    assert normalise(http(keyed, "GET", "/v1/rooms/physics-101/export?format=txt")[1]) == words
    md = http(keyed, "GET", "/v1/rooms/physics-101/export?format=md")[1]
    assert md.startswith("# Physics 101") and "## Notes" in md
    status, body = http(keyed, "GET", "/v1/rooms/physics-101/export?format=doc")
    assert status == 400 and json.loads(body)["code"] == "bad_message"
    assert http(keyed, "GET", "/v1/rooms/chem-2/export?format=srt")[0] == 404
    cli = subprocess.run([sys.executable, "-m", "realtime", "export", "physics-101", "--format", "vtt",
                          "--server", keyed.url], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert cli.returncode == 0 and cli.stdout == http(keyed, "GET", "/v1/rooms/physics-101/export?format=vtt")[1]


def test_metrics_in_prometheus_format(keyed, rooms):
    assert http(keyed, "GET", "/metrics")[0] == 401  # monitoring is for the admin
    status, body = http(keyed, "GET", "/metrics", key=ADMIN)
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(body)}
    value = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    health = keyed.health()
    assert value[("realtime_ready", ())] == 1
    assert value[("realtime_audio_seconds_total", ())] > 0
    assert value[("realtime_decodes_total", (("kind", "final"),))] == health["decodes"]["final"]
    assert value[("realtime_events_total", (("type", "final"),))] >= 1
    assert value[("realtime_refused_total", (("code", "bad_key"),))] >= 3
    assert value[("realtime_connections_total", (("role", "speaker"),))] >= 1
    for name in ("realtime_open_connections", "realtime_lag_seconds", "realtime_decode_queue", "realtime_llm_tokens",
                 "realtime_llm_calls", "realtime_resident_memory_bytes", "realtime_store_errors"):
        assert name in families, name


def test_room_cli_on_the_running_servers_database_and_listen_since(keyed, rooms):
    made = subprocess.run([sys.executable, "-m", "realtime", "room", "create", "Biology 1", "--db", keyed.db,
                           "--json"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert made.returncode == 0, made.stderr
    bio = json.loads(made.stdout)
    assert bio["room"] == "biology-1"
    listed = subprocess.run([sys.executable, "-m", "realtime", "room", "list", "--db", keyed.db],
                            capture_output=True, text=True, timeout=60, cwd=ROOT).stdout
    assert "biology-1" in listed and "Physics 101" in listed
    finals = json.loads(http(keyed, "GET", "/v1/rooms/physics-101/transcript")[1])["finals"]
    since = finals[0]["seq"]
    out = subprocess.run([sys.executable, "-m", "realtime", "listen", "physics-101", "--jsonl", "--idle", "2",
                          "--since", str(since), "--server", keyed.url], capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assert events[0]["type"] == "hello" and events[0]["replay"] in ("exact", "durable")
    assert [e["id"] for e in events if e["type"] == "final"] == [f["id"] for f in finals[1:]]
    assert all(e["seq"] > since for e in events[1:])


async def test_a_room_made_by_the_cli_works_at_once_and_audio_is_throttled(keyed, rooms):
    made = subprocess.run([sys.executable, "-m", "realtime", "room", "create", "Silence 1", "--db", keyed.db,
                           "--json"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    key = json.loads(made.stdout)["speaker_key"]
    # 20 s of silence as fast as the client can: 5 s of burst, then 2x real time, so at least 7.5 s.
    started = time.monotonic()
    result = await stream_audio(keyed.url, "silence-1", np.zeros(20 * 16000, np.int16), speed=0, key=key)
    elapsed = time.monotonic() - started
    assert not [e for e in result.events if e["type"] == "error"], result.events
    assert result.events[-1]["state"] == "stopped" and result.events[-1]["audio_s"] == pytest.approx(20, abs=0.2)
    print(f"\n20 s of audio sent as fast as possible took {elapsed:.1f} s (burst 5 s, then 2x)")
    assert elapsed >= 7.0, elapsed
    hello = await listen(keyed.url, "silence-1", idle=1)
    assert hello.events[0]["type"] == "hello"


async def test_a_quick_start_server_opens_no_room_to_a_proxys_clients(server):
    """On loopback with no admin key rooms open on first use, but not for requests a reverse proxy relayed."""
    relayed = {"X-Forwarded-For": "203.0.113.7"}
    async with websockets.connect(ws_url(server.url, "listen", "via-proxy"), additional_headers=relayed) as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["code"] == "no_such_room"
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        assert ws.close_code == 4404
    async with websockets.connect(ws_url(server.url, "listen", "open-locally")) as local:  # made by a local visit
        assert json.loads(await asyncio.wait_for(local.recv(), 10))["type"] == "hello"
        url = ws_url(server.url, "speak", "open-locally")
        async with websockets.connect(url, additional_headers={"Forwarded": "for=203.0.113.7"}) as ws:
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "hello"  # public: may watch
            await ws.send(json.dumps({"type": "start", "language": "en"}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["code"] == "key_required"
