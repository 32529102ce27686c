"""The fuzz driver of tests/e2e/test_fuzz.py: the connections to the real server, sending each drawn message as the
model predicts its answer, reading and checking what comes back, the totals, and the loop that draws examples until
a category's quota of messages was sent."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import io
import json
import math
import os
import random
import threading
import time
import urllib.parse
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import websockets
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from websockets.frames import Close
from yarl import URL

from realtime.core import protocol
from realtime.core.access import bearer
from realtime.core.protocol import check_room
from testbed.server import ServerProcess
from tests.e2e.fuzzing.model import (
    CLOSE_CODES,
    ERROR_CODES,
    EXPORT_TYPES,
    HEALTH_DETAILS,
    HEALTH_KEYS,
    ROOM_EVENTS,
    ROOM_INFO_KEYS,
    ROOM_LIST_KEYS,
    Branch,
    Peer,
    ProtocolModel,
    RoomModel,
)
from tests.e2e.fuzzing.strategies import (
    ADMIN,
    AUDIO,
    CLIENTS,
    CLIP,
    KEYS,
    LISTEN,
    MAX_ROOM,
    ORIGINS,
    PRIVATE,
    SPEAK,
    WS_LIMIT,
    Out,
    Req,
    auth_header,
    client_headers,
    host_header,
    origin_header,
)

TOTAL = int(os.environ.get("REALTIME_FUZZ_MESSAGES", "600"))
SEED = int(os.environ.get("REALTIME_FUZZ_SEED") or random.randrange(2 ** 32))
SHARES = {"speaker_text": 0.3, "listener_text": 0.2, "binary": 0.2, "url": 0.1, "http": 0.2}
PONG_TIMEOUT_S = 15.0
HTTP_MOVE_AFTER = 4  # a proxied HTTP client moves to a new address after this many 429s for a presented key


# ---------------------------------------------------------------- the harness


class Broken(AssertionError):
    """A property failed."""


class AioSocket:
    """The part of websockets' client connection the harness uses, over aiohttp's WebSocket client, which lets a
    handshake carry a Host header of the test's choosing."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse):
        self.ws = ws

    @property
    def close_code(self) -> int | None:
        return self.ws.close_code

    @property
    def close_reason(self) -> str:
        return ""

    def closed(self) -> websockets.ConnectionClosed:
        return websockets.ConnectionClosed(Close(self.ws.close_code or 1006, ""), None)

    async def recv(self) -> str | bytes:
        msg = await self.ws.receive()
        if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
            return msg.data
        raise self.closed()

    async def send(self, data: str | bytes | list) -> None:
        if isinstance(data, list):
            data = data[0][:0].join(data)
        try:
            await (self.ws.send_str(data) if isinstance(data, str) else self.ws.send_bytes(data))
        except (ConnectionError, RuntimeError) as exc:
            raise self.closed() from exc

    async def close(self) -> None:
        await self.ws.close()


@dataclass
class Totals:
    sent: Counter = field(default_factory=Counter)
    kinds: dict[str, Counter] = field(default_factory=dict)
    errors: Counter = field(default_factory=Counter)
    closes: Counter = field(default_factory=Counter)
    events: Counter = field(default_factory=Counter)
    http: Counter = field(default_factory=Counter)
    handshake_refusals: Counter = field(default_factory=Counter)
    harness: Counter = field(default_factory=Counter)
    tamed: Counter = field(default_factory=Counter)
    outcomes: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    wall_s: dict[str, float] = field(default_factory=dict)
    dims: Counter = field(default_factory=Counter)  # the Host, Origin and client labels the HTTP requests carried
    limited: Counter = field(default_factory=Counter)  # 429s and throttled /healthz answers, by limit
    answers: dict[str, Counter] = field(default_factory=dict)  # per kind of HTTP request: "status code"

    def count(self, category: str, kind: str, tamed: str = "") -> None:
        self.sent[category] += 1
        self.kinds.setdefault(category, Counter())[kind] += 1
        if tamed:
            self.tamed[tamed] += 1

    def report(self) -> dict[str, Any]:
        lat = sorted(self.latencies) or [0.0]
        return {
            "messages": sum(self.sent.values()), "target": TOTAL, "seed": SEED, "sent": dict(self.sent),
            "kinds": {c: dict(k.most_common()) for c, k in self.kinds.items()},
            "error_codes": dict(self.errors.most_common()),
            "close_codes": {str(k): v for k, v in sorted(self.closes.items())},
            "http_status": {str(k): v for k, v in sorted(self.http.items())},
            "handshake_refusals": {str(k): v for k, v in sorted(self.handshake_refusals.items())},
            "events": dict(self.events.most_common()), "probes": dict(self.harness),
            "url_outcomes": dict(self.outcomes.most_common()), "steered": dict(self.tamed),
            "http_answers": {k: dict(sorted(c.items())) for k, c in sorted(self.answers.items())},
            "http_dimensions": dict(sorted(self.dims.items())), "rate_limited": dict(self.limited),
            "pong_latency_s": {"n": len(self.latencies), "median": round(lat[len(lat) // 2], 4),
                               "p99": round(lat[int(len(lat) * 0.99)], 4), "max": round(lat[-1], 4)},
            "wall_s": {k: round(v, 1) for k, v in self.wall_s.items()},
        }


class Fuzz(ProtocolModel):
    def __init__(self, server: ServerProcess):
        self.server = server
        self.totals = Totals()
        self.log: deque[str] = deque(maxlen=40)
        self.failures: list[str] = []
        self.quota = {c: round(TOTAL * s) for c, s in SHARES.items()}
        self.quota["http"] += TOTAL - sum(self.quota.values())
        self.rooms: dict[str, RoomModel] = {}
        self.created: dict[str, RoomModel] = {}
        self.buckets: dict[tuple[str, str], Any] = {}  # the model's view of the server's per-client limits
        # The client address each kind of fuzzed WebSocket comes from (a proxy on loopback forwards it), one each,
        # so that one's throttle for wrong keys is the model's to follow alone (and 127.0.0.1, the harness's own
        # admin requests, is the HTTP fuzzing's).
        self.addresses = {slot: f"198.18.0.{n + 1}" for n, slot in enumerate(("speaker_text", "listener_text",
                                                                               "binary", "url"))}
        self.http_addresses = {label: first for label, (_, _, first) in CLIENTS.items()}  # ... and the HTTP ones'
        self.http_refusals: Counter = Counter()  # 429s for a key since the HTTP client last moved
        self.seen: dict[str, dict[str, Any]] = {}  # what the observers saw in their rooms: finals, summary, state
        self.settled = False
        self.missing_room: dict[str, bytes] = {}  # the body of the content endpoints' 404 for a missing room
        self.peers: dict[str, list[Peer]] = {}
        self.observers: list[asyncio.Task] = []
        self.closing_down = False
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz-loop", daemon=True)
        self.thread.start()
        self.session: aiohttp.ClientSession | None = None

    def run(self, coro, timeout: float = 300.0) -> Any:
        return asyncio.run_coroutine_threadsafe(asyncio.wait_for(coro, timeout), self.loop).result()

    @staticmethod
    def reset(peer: Peer) -> None:
        peer.expected, peer.closing, peer.started, peer.audio_s, peer.authed = deque(), None, False, 0.0, True
        peer.last_seq, peer.last_room_seq, peer.replay_until, peer.expect_hello = -1, -1, None, False
        peer.key_ops = []

    def fail(self, what: str) -> None:
        history = "\n  ".join(self.log)
        raise Broken(f"{what}\nlast messages sent (oldest first):\n  {history}\nseed {SEED}; server log "
                     f"{self.server.log_path}")

    # ------------------------------------------------------------ setup and teardown

    async def setup(self) -> None:
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        # The fuzz rooms are made first, before any wrong key was sent from this address: while it is throttled
        # for keys that opened nothing, every key it presents is refused, the admin key included (docs/protocol.md
        # "Rooms").
        assert not self.totals.sent and not self.buckets, "the fuzz rooms must be made before anything is fuzzed"
        for name, private in ((SPEAK, False), (AUDIO, False), (LISTEN, False), (PRIVATE, True), (CLIP, False)):
            info = await self.create(name, private)
            self.rooms[name] = RoomModel(name, info["speaker_key"], info["viewer_key"], title=info["title"])
        KEYS.update({"speak-sk": self.rooms[SPEAK].speaker_key, "private-vk": self.rooms[PRIVATE].viewer_key,
                     "audio-sk": self.rooms[AUDIO].speaker_key, "private-sk": self.rooms[PRIVATE].speaker_key})
        self.peers = {"speaker_text": [Peer("speaker-A", "speaker", "speaker_text"),
                                       Peer("speaker-B", "speaker", "speaker_text")],
                      "listener_text": [Peer("listener", "listener", "listener_text")],
                      "binary": [Peer("audio-speaker", "speaker", "binary"),
                                 Peer("audio-listener", "listener", "binary")]}
        for room in (SPEAK, AUDIO):
            self.observers.append(asyncio.get_running_loop().create_task(self.observe(room)))

    async def create(self, name: str, private: bool) -> dict:
        async with self.session.post(self.server.http + "/v1/rooms", json={"title": f"Fuzz {name}", "room": name,
                                                                           "private": private},
                                     headers={"Authorization": f"Bearer {ADMIN}"}) as r:
            assert r.status == 201, (r.status, await r.text())
            info = await r.json()
        assert self.viewer_url_ok(info), info  # links on --public-url; nothing here uses them
        return info

    async def admin_get(self, path: str, timeout: float = 60.0) -> tuple[int, bytes]:
        status, _, body = await self.admin_request("GET", path, timeout=timeout)
        return status, body

    async def admin_request(self, method: str, path: str, timeout: float = 60.0, headers: dict | None = None,
                            **kwargs: Any) -> tuple[int, Any, bytes]:
        """A request with the admin key, waiting out the throttle of wrong keys that the fuzzing earned this
        address (429 with Retry-After, the admin key too)."""
        deadline = time.monotonic() + timeout
        while True:
            async with self.session.request(method, self.server.http + path, **kwargs,
                                            headers={"Authorization": f"Bearer {ADMIN}", **(headers or {})}) as r:
                status, answer, body = r.status, r.headers, await r.read()
            if status != 429:
                return status, answer, body
            self.totals.harness["admin_waits"] += 1
            left = deadline - time.monotonic()
            if left <= 0:
                raise Broken(f"{method} {path} with the admin key still throttled after {timeout:g} s: {status} "
                             f"{body!r}")
            await asyncio.sleep(min(left, float(answer.get("Retry-After") or 1)))

    async def teardown(self) -> None:
        self.closing_down = True
        for peers in self.peers.values():
            for peer in peers:
                if peer.ws is not None:
                    await peer.ws.close()
        for task in self.observers:
            task.cancel()
        await asyncio.gather(*self.observers, return_exceptions=True)
        if self.session is not None:
            await self.session.close()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        if not self.thread.is_alive():
            self.loop.close()

    # ------------------------------------------------------------ what arrives

    async def observe(self, room: str) -> None:
        """A listener in a fuzzed room for the whole run: room events arrive gap-free, nothing else does."""
        last = None
        try:
            async with websockets.connect(f"{self.server.url}/ws/listen/{room}", max_size=None, max_queue=None,
                                          proxy=None) as ws:
                async for raw in ws:
                    event = self.check_event(None, raw)
                    if event["type"] == "hello":
                        last = event["seq"]
                        continue
                    if event["type"] not in ROOM_EVENTS:
                        self.failures.append(f"observer of {room} got a reply: {raw[:300]}")
                    elif event["seq"] <= last:
                        continue  # history
                    elif event["seq"] != last + 1:
                        self.failures.append(f"observer of {room}: seq {event['seq']} after {last} (a gap)")
                    else:
                        seen = self.seen.setdefault(room, {"finals": 0, "summary": False, "state": None, "seq": 0})
                        seen["seq"] = event["seq"]
                        if event["type"] == "final":
                            seen["finals"] += 1
                        elif event["type"] == "summary":
                            seen["summary"] = True
                        elif event["type"] == "status":
                            seen["state"] = event["state"]
                    last = max(last, event["seq"])
                if not self.closing_down:
                    self.failures.append(f"observer of {room} closed: {ws.close_code} {ws.close_reason}")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - reported by the test
            self.failures.append(f"observer of {room}: {exc!r}")

    async def read(self, peer: Peer, deadline: float, waiting_for: str) -> dict | None:
        """The next message on a peer (None: closed), within the deadline: the server answers in bounded time."""
        try:
            raw = await asyncio.wait_for(peer.ws.recv(), max(0.01, deadline - time.monotonic()))
        except websockets.ConnectionClosed:
            return None
        except TimeoutError:
            self.fail(f"{peer.name}: no answer within {PONG_TIMEOUT_S:g} s while waiting for {waiting_for} "
                      f"(expected next: {list(peer.expected)[:5]})")
        return self.check_event(peer, raw)

    async def sync(self, peer: Peer) -> None:
        """Ping with a fresh id and require its pong within PONG_TIMEOUT_S, every expected reply before it."""
        if peer.ws is None:
            return
        if peer.closing is not None:
            return await self.drain(peer)
        ident = uuid.uuid4().hex
        t0 = time.monotonic()
        try:
            await peer.ws.send(json.dumps({"type": "ping", "id": ident}))
        except websockets.ConnectionClosed:
            pass
        self.totals.harness["sync_pings"] += 1
        deadline = t0 + PONG_TIMEOUT_S
        while True:
            event = await self.read(peer, deadline, f"the pong {ident}")
            if event is None:
                self.fail(f"{peer.name}: closed unexpectedly with {peer.ws.close_code} {peer.ws.close_reason!r} "
                          f"(expected next: {list(peer.expected)[:5]})")
            if event["type"] == "pong" and event["id"] == ident:
                break
            if event["type"] in ("error", "pong"):
                self.match_reply(peer, event)
            elif event["type"] == "hello":
                self.fail(f"{peer.name}: a second hello: {event}")
        self.totals.latencies.append(time.monotonic() - t0)
        if peer.expected:
            self.fail(f"{peer.name}: missing replies {list(peer.expected)[:5]}")

    async def drain(self, peer: Peer) -> None:
        """The model says the server closes this connection: the replies it expects, then the close code."""
        deadline = time.monotonic() + PONG_TIMEOUT_S
        while (event := await self.read(peer, deadline, f"the close {peer.closing}")) is not None:
            if event["type"] in ("error", "pong"):
                self.match_reply(peer, event)
            elif event["type"] == "hello":
                self.fail(f"{peer.name}: a hello while closing: {event}")
        code = peer.ws.close_code
        self.totals.closes[code] += 1
        if code not in CLOSE_CODES:
            self.fail(f"{peer.name}: undocumented close code {code} {peer.ws.close_reason!r}")
        if code != peer.closing or peer.expected:
            self.fail(f"{peer.name}: closed with {code} {peer.ws.close_reason!r}; expected {peer.closing} after "
                      f"{list(peer.expected)[:5]}")
        self.apply_key_ops(peer)
        await self.forget(peer)

    async def forget(self, peer: Peer) -> None:
        with contextlib.suppress(Exception):
            await peer.ws.close()
        peer.ws, peer.closing, peer.started, peer.key_ops = None, None, False, []
        room = peer.room
        if room is not None and room.speaker is peer:
            await self.wait_idle(room.name)  # its stream is finished like at a disconnect
            room.speaker = None

    async def wait_idle(self, room: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, body = await self.admin_get("/v1/rooms", max(1.0, deadline - time.monotonic()))
            assert status == 200, (status, body)
            info = {x["room"]: x for x in json.loads(body)}
            if not info.get(room, {}).get("speaking"):
                return
            await asyncio.sleep(0.05)
        self.fail(f"room {room} still speaking {timeout:g} s after its speaker left")

    # ------------------------------------------------------------ connections

    async def connect(self, path: str, headers: dict[str, str], deflate: bool) -> Any:
        return await websockets.connect(self.server.url + path, additional_headers=headers, max_size=None,
                                        max_queue=None, open_timeout=10, close_timeout=3, proxy=None,
                                        compression="deflate" if deflate else None)

    async def handshake(self, path: str, headers: dict[str, str], client: str, deflate: bool,
                        host: str | None = None) -> Any:
        """A WebSocket handshake from `client` (a proxy on loopback forwards it). A key in it is never refused
        before the upgrade, throttled or not: where it matters, the refusal is `bad_key` after it."""
        headers = {**headers, "X-Forwarded-For": client}
        if host is None:
            return await self.connect(path, headers, deflate)
        self.totals.harness["handshakes_with_host"] += 1
        return await self.connect_as(path, headers, host, deflate)

    async def connect_peer(self, peer: Peer, path: str, headers: dict[str, str]) -> None:
        """Connect `peer` from its slot's address."""
        peer.client = self.addresses[peer.slot]
        peer.ws = await self.handshake(path, headers, peer.client, peer.deflate)
        self.totals.harness["connections"] += 1

    async def key_determinate(self, client: str) -> bool:
        """Whether `client` is throttled for wrong keys for the next KEY_HORIZON_S, after waiting, if that cannot
        be told now, until it surely holds a token."""
        bucket = self.bucket("keys", client)
        while (verdict := self.keys_throttled(client)) is None:
            self.totals.harness["throttle_waits"] += 1
            await asyncio.sleep(max(0.01, (1 + 2e-3 - bucket.lo_at(time.monotonic())) / bucket.rate))
        return verdict

    async def open_speaker(self, peer: Peer, room: str, variant: tuple[str, bool]) -> None:
        header, peer.deflate = variant
        self.reset(peer)
        peer.room, peer.key = self.rooms[room], (None if header == "none" else KEYS[header])
        await self.connect_peer(peer, f"/ws/speak/{room}", auth_header(header))
        await self.read_hello(peer)

    async def open_listener(self, peer: Peer, variant: tuple[str, str, bool]) -> None:
        where, header, peer.deflate = variant
        self.reset(peer)
        if where == "public":
            peer.room, peer.authed = self.rooms[LISTEN], True
        else:
            peer.room = self.rooms[PRIVATE]
            header = {"private-header": "private-vk", "private-junk": "junk"}.get(where, "none")
            peer.authed = where != "private-none"
        throttled = False
        if where == "private-header":
            throttled = await self.key_determinate(self.addresses[peer.slot])
        await self.connect_peer(peer, f"/ws/listen/{peer.room.name}", auth_header(header))
        if where == "private-auth":
            throttled = await self.key_determinate(peer.client)
            await peer.ws.send(json.dumps({"type": "auth", "key": KEYS["private-vk"]}))
            self.totals.harness["auth_first"] += 1
        if where == "private-junk" or throttled:  # refused at once: a wrong key (counted), or throttled
            peer.refuse(protocol.BAD_KEY, 4401, "refuse" if throttled else "count")
            await self.drain(peer)
            return await self.open_listener(peer, ("public", "none", peer.deflate))
        if peer.authed:
            await self.read_hello(peer)

    async def read_hello(self, peer: Peer) -> None:
        event = await self.read(peer, time.monotonic() + PONG_TIMEOUT_S, "hello")
        if event is None or event["type"] != "hello":
            self.fail(f"{peer.name}: expected hello, got {event} (close {peer.ws.close_code})")
        if event["room"] != peer.room.name or event["role"] != peer.role or event["protocol"] != 1:
            self.fail(f"{peer.name}: wrong hello {event}")
        peer.expect_hello = False

    # ------------------------------------------------------------ sending

    async def deliver(self, category: str, peer: Peer, out: Out) -> None:
        if peer.deflate and WS_LIMIT - 1024 <= out.size <= WS_LIMIT:
            # F7 (documented): with permessage-deflate aiohttp's limit applies to the compressed frame and to the
            # decompressed message with `>`: within this band the outcome depends on compressibility.
            out = dataclasses.replace(out, tamed="F7", payload=out.payload[:WS_LIMIT - 1025 if isinstance(
                out.payload, bytes) else 40000])
        if out.size >= WS_LIMIT and out.fragments > 1:
            # F9 (documented): a client still sending fragments when aiohttp closes may see 1006, not 1009.
            out = dataclasses.replace(out, fragments=1, tamed="F9")
        if out.size >= WS_LIMIT and peer.expected:
            # F8 (documented): aiohttp closes at once with 1009; replies still queued for earlier messages may be lost.
            await self.sync(peer)
        throttled = await self.key_determinate(peer.client) if self.key_dependent(peer, out) else None
        self.predict(peer, out, throttled)
        self.log.append(f"{category} {peer.name}: {out!r}")
        try:
            await peer.ws.send(out.parts())
        except websockets.ConnectionClosed:
            pass
        self.totals.count(category, out.kind, out.tamed)
        if peer.expect_hello:
            await self.read_hello(peer)
        if peer.closing is not None:
            await self.drain(peer)

    async def exhaust(self, client: str) -> None:
        """Wrong keys from `client` over HTTP until it is throttled, each answer checked against its bucket (401
        while it has a token, then 429 with its Retry-After)."""
        bucket = self.bucket("keys", client)
        headers = {"X-Forwarded-For": client, "Authorization": f"Bearer {KEYS['junk']}"}
        for _ in range(20):
            t0 = time.monotonic()
            async with self.session.get(self.server.http + "/metrics", headers=headers) as r:
                status, retry = r.status, r.headers.get("Retry-After")
                await r.read()
            t1 = time.monotonic()
            self.totals.harness["exhaust_requests"] += 1
            if status == 401 and bucket.may_pass(t1):
                bucket.apply({"charge"}, t0, t1)
                continue
            if status == 429 and bucket.may_refuse(t0):
                lo, hi = bucket.retry_after(t0, t1)
                if retry is None or not lo <= int(retry) <= hi:
                    self.fail(f"wrong keys from {client}: 429 with Retry-After {retry}, expected {lo}-{hi} s")
                bucket.apply({"refuse"}, t0, t1)
                self.totals.harness["exhausted"] += 1
                return
            self.fail(f"wrong keys from {client}: {status} (bucket {bucket.lo_at(t1):.3f}-{bucket.hi_at(t1):.3f})")
        self.fail(f"wrong keys from {client}: never throttled")

    async def speaker_batch(self, example: dict) -> None:
        peers = self.peers["speaker_text"]
        if example["exhaust"]:
            await self.sync_all(peers)
            await self.exhaust(self.addresses["speaker_text"])
        if example["reopen"] is not None:
            index, variant = example["reopen"]
            await self.sync_all(peers)
            if peers[index].ws is not None:
                await self.close_peer(peers[index])
            await self.open_speaker(peers[index], SPEAK, variant)
        current = None
        for index, out in example["batch"]:
            if self.totals.sent["speaker_text"] >= self.quota["speaker_text"]:
                break
            peer = peers[index]
            if current is not None and current is not peer:
                await self.sync(current)  # the other connection's messages are handled before this one's
            if peer.closing is not None:  # taken over
                await self.drain(peer)
            if peer.ws is None:
                await self.sync_all(peers)
                await self.open_speaker(peer, SPEAK, ("speak-sk", peer.deflate))
            await self.deliver("speaker_text", peer, out)
            current = peer
        await self.sync_all(peers)

    async def listener_batch(self, example: dict) -> None:
        peer = self.peers["listener_text"][0]
        if example["exhaust"]:
            await self.sync(peer)
            await self.exhaust(self.addresses["listener_text"])
        if example["reopen"] is not None or peer.ws is None:
            if peer.ws is not None:
                await self.sync(peer)
                await self.close_peer(peer)
            await self.open_listener(peer, example["reopen"] or ("public", "none", False))
        for out in example["batch"]:
            if self.totals.sent["listener_text"] >= self.quota["listener_text"]:
                break
            if peer.ws is None:
                await self.open_listener(peer, ("public", "none", peer.deflate))
            await self.deliver("listener_text", peer, out)
        await self.sync(peer)

    async def binary_batch(self, example: dict) -> None:
        speaker, listener = self.peers["binary"]
        if example["exhaust"]:
            await self.sync_all([speaker, listener])
            await self.exhaust(self.addresses["binary"])
        if example["reopen"] is not None:
            await self.sync_all([speaker, listener])
            for peer in (speaker, listener):
                if peer.ws is not None:
                    await self.close_peer(peer)
        for index, out in example["batch"]:
            if self.totals.sent["binary"] >= self.quota["binary"]:
                break
            peer = (speaker, listener)[index]
            if peer.ws is None:
                deflate = bool(example["reopen"])
                if peer is speaker:
                    await self.open_speaker(peer, AUDIO, ("audio-sk", deflate))
                else:
                    self.reset(peer)
                    peer.room, peer.deflate = self.rooms[AUDIO], deflate
                    await self.connect_peer(peer, f"/ws/listen/{AUDIO}", {})
                    await self.read_hello(peer)
            if peer.audio_s > 90:  # stay within --audio-burst-s: past it the server would slow this sender down
                await self.sync(peer)
                await self.close_peer(peer)
                continue
            await self.deliver("binary", peer, out)
        await self.sync_all([speaker, listener])

    async def sync_all(self, peers: list[Peer]) -> None:
        for peer in peers:
            await self.sync(peer)

    async def close_peer(self, peer: Peer) -> None:
        await peer.ws.close()
        if peer.ws.close_code is not None:
            self.totals.closes[peer.ws.close_code] += 1
        await self.forget(peer)

    async def end_category(self, category: str) -> None:
        for peer in self.peers.get(category, []):
            await self.sync(peer)
            if peer.ws is not None:
                await self.close_peer(peer)
        self.check_observers()

    def check_observers(self) -> None:
        if self.failures:
            self.fail("observers: " + "; ".join(self.failures[:5]))

    # ------------------------------------------------------------ URLs

    async def url_probe(self, probe: tuple) -> None:
        endpoint, name, since, header, deflate, host, origin, exhaust = probe
        if self.totals.sent["url"] >= self.quota["url"]:
            return
        if exhaust:
            await self.exhaust(self.addresses["url"])
        path = f"/ws/{endpoint}/{name.segment}"
        if since is not None:
            path += "?since=" + urllib.parse.quote(since, safe="")
        host_value = host_header(host, self.server.port)
        headers = auth_header(header)
        key = bearer(headers.get("Authorization"))
        origin_value = origin_header(origin, host_value if host_value is not None else self.own_host)
        if origin_value is not None:
            headers["Origin"] = origin_value
        client = self.addresses["url"]
        self.log.append(f"url {path[:300]} auth={header} host={host_value!r} origin={origin_value!r} from {client}")
        expected = self.url_outcome(endpoint, name, since, header, host, origin)
        if key is not None and expected == ("hello", None) and self.room_model(name.name).viewer_key:
            # a key that opens a private room: refused while throttled
            expected = self.url_outcome(endpoint, name, since, header, host, origin,
                                        await self.key_determinate(client))
        self.totals.count("url", f"{endpoint}-{expected[0]}")
        if expected[0] == "bad_host":
            return await self.refused_upgrade(path, headers, host_value)
        try:
            ws = await self.handshake(path, headers, client, deflate, host_value)
        except (websockets.InvalidStatus, aiohttp.WSServerHandshakeError) as exc:
            status = exc.response.status_code if isinstance(exc, websockets.InvalidStatus) else exc.status
            self.totals.handshake_refusals[status] += 1
            # A name that is no room name may not be routed at all (an empty segment, a decoded '/'): aiohttp
            # refuses the handshake, before the origin is looked at.
            if not (400 <= status < 500 and self.url_outcome(endpoint, name, since, header)[0] == "bad_room"):
                self.fail(f"{path[:300]}: handshake answered {status}; expected {expected}")
            return
        peer = Peer(f"url-{endpoint}", "speaker" if endpoint == "speak" else "listener")
        peer.ws, peer.client = ws, client
        try:
            outcome, code = expected
            key_op = "count" if outcome == "bad_key" else None
            if outcome == "hello":
                peer.room = self.room_model(name.name)
                if peer.room.viewer_key and key is None:
                    if await self.key_determinate(client):  # the right key, refused while throttled
                        outcome, code, key_op = "bad_key", 4401, "refuse"
                    if key_op:
                        peer.key_ops.append((key_op, client, time.monotonic()))
                    await ws.send(json.dumps({"type": "auth", "key": KEYS["private-vk"]}))
                    self.totals.harness["auth_first"] += 1
            elif key_op:
                peer.key_ops.append((key_op, client, time.monotonic()))
            if outcome == "hello":
                await self.read_hello(peer)
                await self.sync(peer)
                await self.close_peer(peer)
            else:
                if outcome == "bad_room" and name.name is None:  # undecodable: only that it is refused is known
                    code = None
                event = await self.read(peer, time.monotonic() + PONG_TIMEOUT_S, f"the refusal {outcome}")
                if event is None or event["type"] != "error" or event["seq"] != 0 or (
                        code is not None and event["code"] != outcome):
                    self.fail(f"{path[:300]}: expected error {outcome} (seq 0), got {event}")
                if (await self.read(peer, time.monotonic() + PONG_TIMEOUT_S, "the close")) is not None:
                    self.fail(f"{path[:300]}: more after the refusal")
                self.totals.closes[ws.close_code] += 1
                if ws.close_code != code and not (code is None and ws.close_code in (4400, 4404)):
                    self.fail(f"{path[:300]}: closed with {ws.close_code}, expected {code} ({outcome})")
                self.apply_key_ops(peer)
            self.totals.outcomes[outcome if key_op != "refuse" else "bad_key-throttled"] += 1
        finally:
            await ws.close()

    @property
    def own_host(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    async def connect_as(self, path: str, headers: dict[str, str], host: str, deflate: bool) -> AioSocket:
        """A WebSocket whose handshake carries `Host: host` (websockets would add its own Host beside it)."""
        ws = await self.session.ws_connect(URL(self.server.http + path, encoded=True), headers={**headers,
                                           "Host": host}, compress=15 if deflate else 0, max_msg_size=0,
                                           autoping=True, timeout=aiohttp.ClientWSTimeout(ws_close=3))
        return AioSocket(ws)

    async def refused_upgrade(self, path: str, headers: dict[str, str], host: str | None) -> None:
        """A WebSocket handshake with a Host the server does not answer: HTTP 421 `bad_host`, before the upgrade."""
        upgrade = {**headers, "Host": host or "", "Upgrade": "websocket", "Connection": "Upgrade",
                   "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode()}
        async with self.session.get(URL(self.server.http + path, encoded=True), headers=upgrade) as r:
            status, ctype, nosniff, body = r.status, r.content_type, r.headers.get("X-Content-Type-Options"), \
                await r.read()
        self.totals.handshake_refusals[status] += 1
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if status != 421 or ctype != "application/json" or nosniff != "nosniff" or not isinstance(data, dict) or \
                set(data) != {"type", "code", "message"} or data["code"] != protocol.BAD_HOST:
            self.fail(f"{path[:300]} with Host {host!r}: expected HTTP 421 bad_host, got {status} {body[:300]!r}")
        self.totals.outcomes["bad_host"] += 1

    # ------------------------------------------------------------ HTTP

    async def settle_rooms(self) -> None:
        """Before the HTTP fuzzing: every lecture in the observed rooms is over (its summary, if it had finals,
        came before its `stopped`), so whether a room has a summary is known."""
        for name, room in self.rooms.items():
            if name not in self.seen:
                continue
            await self.wait_idle(name)
            async with websockets.connect(f"{self.server.url}/ws/listen/{name}", proxy=None) as ws:
                now = json.loads(await asyncio.wait_for(ws.recv(), 10))["seq"]  # the room's latest event
            deadline = time.monotonic() + 30
            while self.seen[name]["seq"] < now or self.seen[name]["state"] == "live":
                if time.monotonic() > deadline:
                    self.fail(f"the observer of {name} is behind the room ({self.seen[name]}, seq {now})")
                await asyncio.sleep(0.05)
            room.summary = self.seen[name]["summary"]
        self.settled = True

    def request_headers(self, req: Req) -> tuple[dict[str, str], str | None]:
        host = host_header(req.host, self.server.port)
        headers = auth_header(req.auth)
        headers.update(client_headers(req.client, self.http_addresses[req.client]))
        if host is not None:
            headers["Host"] = host
        origin = origin_header(req.origin, host if host is not None else self.own_host)
        if origin is not None:
            headers["Origin"] = origin
        if req.acrm:
            headers["Access-Control-Request-Method"] = req.acrm
        if req.content_type is not None:
            headers["Content-Type"] = req.content_type
        return headers, origin

    async def http_call(self, req: Req) -> None:
        if self.totals.sent["http"] >= self.quota["http"]:
            return
        if not self.settled:
            await self.settle_rooms()
        headers, origin = self.request_headers(req)
        self.log.append(f"http {req!r}")
        t0 = time.monotonic()
        # (aiohttp warns of big bodies given as bytes: a stream it is)
        payload = io.BytesIO(req.body) if req.body is not None and len(req.body) > 65536 else req.body
        async with self.session.request(req.method, URL(self.server.http + req.path, encoded=True), data=payload,
                                        headers=headers, skip_auto_headers=["Content-Type"]) as r:
            status, answer, body = r.status, r.headers, await r.read()
        t1 = time.monotonic()
        self.totals.count("http", req.kind, req.tamed)
        self.totals.http[status] += 1
        self.totals.dims.update([f"host:{req.host.split(':')[0]}", f"origin:{req.origin}", f"client:{req.client}"])
        text = body.decode("utf-8", "replace")
        if status >= 500 or "Traceback" in text:
            # Never 5xx: the fuzzer sends one request at a time, so no 503 `busy` either (more than 16 waiting).
            self.fail(f"{req!r}: HTTP {status} {text[:500]!r}")
        data, code = None, None
        if answer.get("Content-Type", "").startswith("application/json"):
            try:
                data = json.loads(text)
            except ValueError:
                self.fail(f"{req!r}: invalid JSON body {text[:300]!r}")
            if status >= 400:
                if not isinstance(data, dict) or set(data) != {"type", "code", "message"} or data["type"] != "error" \
                        or data["code"] not in ERROR_CODES or not isinstance(data["message"], str):
                    self.fail(f"{req!r}: HTTP {status} with a body that is not a documented error: {text[:300]!r}")
                code = data["code"]
        self.totals.answers.setdefault(req.kind, Counter())[f"{status} {code or ''}".strip()] += 1
        self.check_headers(req, status, answer, origin)
        allowed = self.http_expected(req, t0, t1)
        health = "short" if isinstance(data, dict) and set(data) == HEALTH_KEYS else "details"  # (/healthz)
        matched = [b for b in allowed if (b.status, b.code) == (status, code)
                   and (b.body not in ("short", "details") or b.body == health)]
        if not matched:
            self.fail(f"{req!r}: HTTP {status} {text[:300]!r}; expected one of "
                      f"{sorted({(b.status, b.code or '') for b in allowed})}")
        if ORIGINS[req.origin][2] and not all(b.raised for b in matched) and \
                answer.get("Access-Control-Allow-Origin") != origin:
            self.fail(f"{req!r}: HTTP {status} to an allowed origin without Access-Control-Allow-Origin")
        if status == 429:
            self.check_limited(req, matched, answer, t0, t1)
        if code == protocol.NO_SUCH_ROOM and req.kind in ("transcript", "export", "summary", "ask", "patch"):
            # A private room without its key answers exactly as a missing one (its name is no secret).
            if self.missing_room.setdefault("body", body) != body:
                self.fail(f"{req!r}: 404 {text!r}, but a missing room is {self.missing_room['body']!r}")
        self.settle(matched, t0, t1)
        if status == 429 and req.client != "local" and any(
                op[0] == "keys" and op[2] == "refuse" for b in matched for op in b.ops):
            self.http_refusals[req.client] += 1
            if self.http_refusals[req.client] >= HTTP_MOVE_AFTER:  # (127.0.0.1 cannot move: it stays throttled)
                self.http_refusals[req.client] = 0
                self.totals.harness["http_addresses"] += 1
                n = self.totals.harness["http_addresses"]
                self.http_addresses[req.client] = f"198.19.{n >> 8}.{n & 255}"
        for branch in matched[:1]:
            self.check_answer(req, branch, answer, data, text)
            if branch.apply is not None:
                branch.apply(data)

    def check_headers(self, req: Req, status: int, answer: Any, origin: str | None) -> None:
        """What every HTTP answer carries (realtime/server/headers.py, docs/protocol.md "Origins")."""
        if answer.get("X-Content-Type-Options") != "nosniff" or answer.get("Referrer-Policy") != "no-referrer":
            self.fail(f"{req!r}: HTTP {status} without nosniff and no-referrer: {dict(answer)}")
        page = req.path.split("?")[0] in ("/", "/speak")
        csp = answer.get("Content-Security-Policy", "")
        if page and ("frame-ancestors 'none'" not in csp or answer.get("X-Frame-Options") != "DENY"):
            self.fail(f"{req!r}: a page without frame-ancestors 'none' and X-Frame-Options DENY: {dict(answer)}")
        if req.path.startswith("/static/widget.js") and csp:
            self.fail(f"{req!r}: the widget, embedded by other sites, has a CSP: {csp}")
        acao = answer.get("Access-Control-Allow-Origin")
        if acao is not None and (not ORIGINS[req.origin][2] or acao != origin or "Origin" not in answer.get("Vary",
                                                                                                              "")):
            self.fail(f"{req!r}: Access-Control-Allow-Origin {acao!r} (Vary {answer.get('Vary')!r}) for origin "
                      f"{origin!r}")

    def check_limited(self, req: Req, matched: list[Branch], answer: Any, t0: float, t1: float) -> None:
        """A refusal by a per-client limit: its Retry-After is the wait for the client's next token (of one of the
        buckets that may have refused it)."""
        refusals = {op for b in matched for op in b.ops if op[2] == "refuse"}
        if not refusals:
            return
        if len({op[0] for op in refusals}) == 1:
            self.totals.limited[next(iter(refusals))[0]] += 1
        retry = answer.get("Retry-After")
        if retry is None:
            self.fail(f"{req!r}: 429 without Retry-After")
        ranges = [self.bucket(kind, client).retry_after(t0, t1) for kind, client, _ in refusals]
        if not any(lo <= int(retry) <= hi for lo, hi in ranges):
            self.fail(f"{req!r}: Retry-After {retry}, expected {' or '.join(f'{lo}-{hi}' for lo, hi in ranges)} s")

    def check_answer(self, req: Req, branch: Branch, answer: Any, data: Any, text: str) -> None:
        """The body of an answer, where the document says what it holds."""
        kind, name, ctype = branch.body, req.name.name if req.name else None, answer.get("Content-Type", "")
        problem = None
        if kind == "short":
            problem = set(data) != HEALTH_KEYS or data["status"] != "ok" or data["ready"] is not True
        elif kind == "details":
            problem = not HEALTH_KEYS | HEALTH_DETAILS <= set(data) or data["protocol"] != protocol.PROTOCOL_VERSION
        elif kind == "metrics":
            problem = not ctype.startswith("text/plain") or "realtime_ready" not in text
        elif kind == "created":
            problem = set(data) != ROOM_INFO_KEYS or not self.viewer_url_ok(data) or \
                (data["viewer_key"] is None) == data["private"]
            if not problem:
                check_room(data["room"], MAX_ROOM)
        elif kind == "deleted":
            problem = data != {"room": name, "deleted": True}
        elif kind.startswith("list-"):
            rooms = {**self.rooms, **self.created}
            want = {n for n, r in rooms.items() if kind == "list-all" or not r.private}
            problem = not isinstance(data, list) or {x.get("room") for x in data} != want or any(
                set(x) != ROOM_LIST_KEYS or x["ask"] != rooms[x["room"]].ask or x["private"] != rooms[x["room"]].private
                or x["open"] for x in data)
        elif kind.startswith("room-ask:"):
            problem = set(data) != ROOM_LIST_KEYS or data["room"] != name or data["ask"] != kind.split(":")[1]
        elif kind == "transcript":
            problem = set(data) != {"room", "finals", "text"} or data["room"] != name
        elif kind == "export":
            fmt = req.format or "txt"
            problem = answer.get("Content-Disposition") != f'attachment; filename="{name}.{fmt}"' or \
                not ctype.startswith(EXPORT_TYPES[fmt])
        elif kind == "summary":
            problem = not ctype.startswith("text/markdown") or not text.strip()
        elif kind == "answer":
            problem = not isinstance(data, dict) or not {"answer", "source", "citations"} <= set(data)
        elif kind == "page":
            problem = not ctype.startswith("application/javascript" if "widget" in req.path else "text/html")
        if problem:
            self.fail(f"{req!r}: HTTP {branch.status} {ctype} {text[:300]!r} is not the {kind} answer")

    # ------------------------------------------------------------ driving hypothesis

    def category(self, name: str, strategy: st.SearchStrategy, handler) -> None:
        """Draw examples until the category's quota of messages was sent; the first broken property fails."""
        quota, t0, failure = self.quota[name], time.monotonic(), []
        for attempt in range(50):
            remaining = quota - self.totals.sent[name]
            if remaining <= 0 or failure:
                break

            @settings(max_examples=max(1, math.ceil(remaining / 3)), deadline=None, database=None,
                      phases=[Phase.generate], suppress_health_check=list(HealthCheck))
            @seed(SEED + attempt * 7919 + len(name))
            @given(strategy)
            def run(example):
                if failure or self.totals.sent[name] >= quota:
                    return
                try:
                    self.run(handler(example))
                except Exception as exc:  # kept, not raised: hypothesis would replay it on a changed server
                    failure.append(exc)

            run()
        if failure:
            raise failure[0]
        assert self.totals.sent[name] == quota, (name, self.totals.sent[name], quota)
        self.run(self.end_category(name))
        self.totals.wall_s[name] = time.monotonic() - t0
