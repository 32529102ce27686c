"""The model of docs/protocol.md that tests/e2e/test_fuzz.py checks the server against: the documented error codes,
close codes and event fields, the state of the fuzzed rooms and connections, and what the server must answer to each
fuzzed message, URL and HTTP request (`ProtocolModel`, mixed into `harness.Fuzz`).

The HTTP model is exact: for each request it lists the answers the document allows (status and error code, and
what the body must be), which is one answer except where the outcome depends on time. Those are the per-client
limits (keys that opened nothing; questions and summaries), which the model follows as token buckets whose level it
knows within bounds (`Bucket`): a request may be refused only when the bucket may be empty while the server handles
it, and must be when it surely is. The WebSocket model follows the same buckets (a key presented to a private room
or to `start` while its client is throttled is `bad_key`), but a WebSocket message has no answer that could say
which way it went: where a right key's fate depends on the level, the harness waits until it does not
(`Fuzz.key_determinate`), and the model predicts with the level known (`throttled`).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from realtime.core import protocol
from realtime.core.access import bearer, slug
from realtime.core.protocol import Auth, Ping, ProtocolError, Start, Stop, check_room, parse_text
from tests.e2e.fuzzing.strategies import (
    ADMIN,
    JSON_TYPES,
    MAX_FRAME,
    MAX_MESSAGE,
    MAX_ROOM,
    ORIGINS,
    PREFLIGHT_PATHS,
    PUBLIC_URL,
    WS_LIMIT,
    Name,
    Out,
    Req,
    auth_header,
    host_answered,
    roundtrip,
)
from tests.protocol_doc import DOC_CLOSES, DOC_ERRORS, doc_section

# ---------------------------------------------------------------- what the protocol document promises

# The error codes and close codes are the tables of docs/protocol.md ("Error codes", "Close codes"); that they are
# realtime/core/protocol.py's constants is checked by tests/core/test_protocol_fuzz.py. The codes of the table of
# HTTP-only codes never come as WebSocket events, and slow_listener is a close reason, never an event.
ERROR_CODES = DOC_ERRORS
CLOSE_CODES = DOC_CLOSES
_codes = doc_section("Error codes")
HTTP_ONLY = frozenset(re.findall(r"^\| `([a-z_]+)` \|", _codes[_codes.index("only sent by the HTTP endpoints"):],
                                 re.M))
EVENT_CODES = ERROR_CODES - HTTP_ONLY - {protocol.SLOW_LISTENER}

EVENT_KEYS = {
    "hello": {"room", "role", "protocol", "model", "finals", "replay"},
    "partial": {"utterance", "start", "committed", "unstable", "end"},
    "final": {"id", "utterance", "start", "end", "text", "language", "words"},
    "status": {"state", "speaker", "listeners", "audio_s", "lag_s", "queue", "model", "llm_tokens"},
    "notes": {"version", "source", "bullets", "added", "changed", "removed"},
    "summary": {"source", "finals", "markdown"},
    "error": {"code", "message"},
    "pong": {"id"},
}
ROOM_EVENTS = {"partial", "final", "status", "notes", "panel", "summary"}
ROOM_INFO_KEYS = {"room", "title", "private", "ask", "speaker_key", "viewer_key", "viewer_url", "speaker_url"}
ROOM_LIST_KEYS = {"room", "title", "private", "open", "ask", "finals", "listeners", "speaking", "audio_s"}
HEALTH_KEYS = {"status", "ready"}
HEALTH_DETAILS = {"version", "protocol", "model", "uptime_s", "rooms", "speakers", "max_speakers", "listeners", "queue",
                  "lag_s", "decodes", "decode_s", "decode_errors", "refused", "notes"}
EXPORT_TYPES = {"txt": "text/plain", "srt": "application/x-subrip", "vtt": "text/vtt", "json": "application/json",
                "md": "text/markdown"}
ASK_POLICIES = ("anyone", "viewers", "nobody")
MAX_QUESTION = 500
CLIENT_MAX_SIZE = 1 << 20  # a larger body is 413 (aiohttp's client_max_size)
STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}

# The per-client limits (docs/protocol.md "Rooms", "A room's content"): keys that opened nothing, over HTTP and
# WebSockets alike (10, then one per 6 s), questions and new summaries (--ask-per-minute, 6, after a burst of 3).
LIMITS = {"keys": (1 / 6, 10.0), "asks": (6 / 60, 3.0)}
# A WebSocket message is handled within this long of its sending: the horizon of the model's throttle predictions.
KEY_HORIZON_S = 2.0
# JSON nested this deep or deeper may exceed the server's parser's recursion limit (Python's 1000 frames, less the
# stack it runs on): 400 `bad_message`, or the answer to what it means; from SURELY_TOO_DEEP on, surely 400.
DEEP_LEVELS, SURELY_TOO_DEEP = 300, 1000


def nesting(text: str) -> int:
    """How deep JSON text nests (0 when it cannot reach DEEP_LEVELS: too few brackets to tell)."""
    if text.count("[") + text.count("{") < DEEP_LEVELS:
        return 0
    depth = deepest = 0
    in_string = escaped = False
    for c in text:
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth -= 1
    return deepest


@contextlib.contextmanager
def deep_stack(depth: int):
    """Room for the model's own parser to read what the server's may not (below SURELY_TOO_DEEP)."""
    old = sys.getrecursionlimit()
    if depth >= DEEP_LEVELS:
        sys.setrecursionlimit(max(old, depth + 3000))
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


# ---------------------------------------------------------------- rooms and connections


@dataclass
class RoomModel:
    name: str
    speaker_key: str | None
    viewer_key: str | None = None
    speaker: Peer | None = None  # the connection whose start the model accepted
    title: str = ""
    ask: str = "anyone"
    summary: bool | None = False  # whether it has one (None: unknown, a lecture the model did not follow)

    @property
    def private(self) -> bool:
        return self.viewer_key is not None

    def may_view(self, key: str | None) -> bool:
        return self.viewer_key is None or key in (self.viewer_key, self.speaker_key, ADMIN)

    def may_publish(self, key: str | None) -> str | None:
        if not key:
            return protocol.KEY_REQUIRED
        return None if key in (self.speaker_key, ADMIN) else protocol.BAD_KEY


class Peer:
    """One fuzzing WebSocket, with what the model expects the server to send on it next. `slot` names the client
    address its connections come from (`Fuzz.addresses`, forwarded by a proxy on loopback); `client` is the one of
    the current connection."""

    def __init__(self, name: str, role: str, slot: str = "url"):
        self.name, self.role, self.slot = name, role, slot
        self.client = ""
        self.key_ops: list[tuple[str, str, float]] = []  # (op, client, sent at): the refusal's effect on the bucket
        self.ws: Any = None
        self.room: RoomModel | None = None
        self.key: str | None = None
        self.started = False
        self.audio_s = 0.0
        self.deflate = False
        self.authed = True  # False: a private room without a header key, waiting for the first message
        self.expect_hello = False
        self.expected: deque[set[tuple[str, Any]]] = deque()  # per reply: the answers the protocol allows
        self.closing: int | None = None
        self.last_seq = -1
        self.last_room_seq = -1
        self.replay_until: int | None = None

    def expect_error(self, code: str) -> None:
        self.expected.append({("error", code)})

    def refuse(self, code: str, close: int, key_op: str | None = None) -> None:
        """The server refuses and closes; `key_op`: what the refusal did to the client's bucket of keys ("count":
        a key that opened nothing, a token taken if there was one; "refuse": a key tried while throttled)."""
        self.expect_error(code)
        self.closing = close
        if key_op is not None:
            self.key_ops.append((key_op, self.client, time.monotonic()))


# ---------------------------------------------------------------- per-client limits

EPS = 1e-3


class Bucket:
    """A token bucket of the server's (`rate` per second, `burst` at most) whose level the model knows within
    [lo, hi] at time `t`. The server looks at it at some moment of [t0, t1], the request's send and answer times:
    it may be empty then if lo(t0) < 1, and may hold a token if hi(t1) >= 1. Each answer narrows the bounds."""

    def __init__(self, rate: float, burst: float):
        self.rate, self.burst = rate, burst
        self.lo = self.hi = burst
        self.t = 0.0

    def lo_at(self, t: float) -> float:
        return min(self.burst, self.lo + max(0.0, t - self.t) * self.rate)

    def hi_at(self, t: float) -> float:
        return min(self.burst, self.hi + max(0.0, t - self.t) * self.rate)

    def may_refuse(self, t0: float) -> bool:
        return self.lo_at(t0) < 1 + EPS

    def may_pass(self, t1: float) -> bool:
        return self.hi_at(t1) >= 1 - EPS

    def verdict(self, t: float, horizon: float) -> bool | None:
        """Whether the client is throttled from t to t + horizon (True), holds a token from t on (False), or either
        (None)."""
        if self.lo_at(t) >= 1 + EPS:
            return False
        if self.hi_at(t + horizon) < 1 - EPS:
            return True
        return None

    def retry_after(self, t0: float, t1: float) -> tuple[int, int]:
        """The Retry-After a refusal may carry: the seconds until the next token, rounded up, at least 1."""
        def seconds(tokens: float, rounding: float) -> int:
            return max(1, math.ceil(max(0.0, 1 - tokens) / self.rate + rounding))
        return seconds(self.hi_at(t1), -EPS), seconds(self.lo_at(t0), EPS)

    def after(self, op: str, t0: float, t1: float) -> tuple[float, float]:
        """The bounds at t1 after the server did `op`: charged a token, refused (none there), let pass (one was
        there, none taken), or did not look ("none")."""
        slack = self.rate * (t1 - t0)
        if op == "none":
            return self.lo_at(t1), self.hi_at(t1)
        if op == "charge":
            return max(self.lo_at(t0), 1) - 1, min(self.burst, self.hi_at(t1) - 1 + slack)
        if op == "refuse":
            return self.lo_at(t1), min(self.hi_at(t1), 1 + slack)
        return max(self.lo_at(t1), 1), self.hi_at(t1)

    def apply(self, ops: set[str], t0: float, t1: float) -> None:
        bounds = [self.after(op, t0, t1) for op in ops]
        lo, hi = min(b[0] for b in bounds), max(b[1] for b in bounds)
        self.lo, self.hi, self.t = max(0.0, min(lo, hi)), max(lo, hi), t1


@dataclass(frozen=True)
class Branch:
    """One answer the document allows to an HTTP request."""

    status: int
    code: str | None = None  # the error code of its JSON error body; None: no error body
    raised: bool = False  # aiohttp's own answer (router 404/405, 413): plain text, no CORS headers
    body: str = ""  # what the body must be, for Fuzz.check_answer: "short", "details", "created", "list", ...
    ops: tuple[tuple[str, str, str], ...] = ()  # (bucket, client, "charge" | "refuse" | "pass"): what it implies
    apply: Callable[[Any], None] | None = field(default=None, compare=False)  # the model's state after it


class ProtocolModel:
    """What the protocol document says, as methods of the harness (`harness.Fuzz`, which has `fail()`, `totals`,
    `rooms`, `created` and `buckets`): the checks of everything that arrives, and the replies, close codes and
    HTTP answers the server owes."""

    # ------------------------------------------------------------ what arrives

    def check_event(self, peer: Peer | None, raw: Any) -> dict:
        """Every message from the server: a text frame with one JSON object of a documented type and fields, with
        `seq` rules kept (room events strictly increasing, replies repeating the latest; replays after hello)."""
        where = peer.name if peer else "observer"
        if not isinstance(raw, str):
            self.fail(f"{where}: the server sent a binary frame: {raw[:40]!r}")
        try:
            event = json.loads(raw)
        except ValueError:
            self.fail(f"{where}: the server sent invalid JSON: {raw[:200]!r}")
        kind = event.get("type") if isinstance(event, dict) else None
        if kind not in EVENT_KEYS:
            self.fail(f"{where}: unknown event {raw[:300]!r}")
        seq = event.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            self.fail(f"{where}: bad seq in {raw[:300]!r}")
        if not {"type", "seq"} | EVENT_KEYS[kind] <= set(event):
            self.fail(f"{where}: {kind} lacks fields: {raw[:300]!r}")
        if kind == "error":
            if set(event) != {"type", "seq", "code", "message"}:
                self.fail(f"{where}: error event with other keys than the documented four: {raw[:300]!r}")
            if event["code"] not in EVENT_CODES:
                self.fail(f"{where}: undocumented error code: {raw[:300]!r}")
            if not isinstance(event["message"], str) or not event["message"].strip() or "Traceback" in raw:
                self.fail(f"{where}: error without a sentence for humans: {raw[:300]!r}")
            self.totals.errors[event["code"]] += 1
        self.totals.events[kind] += 1
        if peer is not None:
            self.check_order(peer, event, raw)
        return event

    def check_order(self, peer: Peer, event: dict, raw: str) -> None:
        kind, seq = event["type"], event["seq"]
        if kind == "hello":
            peer.replay_until, peer.last_seq, peer.last_room_seq = seq, seq, -1
            return
        if peer.replay_until is not None and kind in ROOM_EVENTS and seq <= peer.replay_until:
            return  # history or resume replay, before live events
        peer.replay_until = None
        if kind in ROOM_EVENTS:
            if seq <= peer.last_seq:
                self.fail(f"{peer.name}: room event with seq {seq} after seq {peer.last_seq}: {raw[:300]!r}")
            peer.last_room_seq = seq
        elif seq < peer.last_seq:
            self.fail(f"{peer.name}: reply with seq {seq} after seq {peer.last_seq}: {raw[:300]!r}")
        peer.last_seq = max(peer.last_seq, seq)

    def match_reply(self, peer: Peer, event: dict) -> None:
        if not peer.expected:
            self.fail(f"{peer.name}: unexpected {event}")
        choices = peer.expected.popleft()
        got = event.get("code") if event["type"] == "error" else event.get("id")
        if not any(kind == event["type"] and got == want and type(got) is type(want) for kind, want in choices):
            self.fail(f"{peer.name}: expected {' or '.join(f'{k} {w!r}' for k, w in choices)}, got "
                      f"{json.dumps(event)[:300]}")

    # ------------------------------------------------------------ the model

    @staticmethod
    def first_auth(out: Out) -> Auth | None:
        """The `auth` a private room's first message is read as (None: none, key_required)."""
        try:
            cmd = parse_text(out.payload, 1024) if isinstance(out.payload, str) else None
        except ProtocolError:
            cmd = None
        return cmd if isinstance(cmd, Auth) else None

    def key_dependent(self, peer: Peer, out: Out) -> bool:
        """Whether the answer to `out` depends on the client's throttle for wrong keys: a key that would open a
        private room, or a `start` with a key that may publish (a wrong key is bad_key either way)."""
        if out.size >= WS_LIMIT:
            return False
        if not peer.authed:
            cmd = self.first_auth(out)
            return cmd is not None and peer.room.may_view(cmd.key)
        if peer.role != "speaker" or peer.started or not peer.key or isinstance(out.payload, bytes) or out.deep:
            return False
        try:
            cmd = parse_text(out.payload, MAX_MESSAGE)
        except ProtocolError:
            return False
        return isinstance(cmd, Start) and peer.room.may_publish(peer.key) is None

    def keys_throttled(self, client: str) -> bool | None:
        """Whether `client` is throttled for wrong keys from now until KEY_HORIZON_S from now (None: either)."""
        return self.bucket("keys", client).verdict(time.monotonic(), KEY_HORIZON_S)

    def apply_key_ops(self, peer: Peer) -> None:
        """The refusals on `peer` came: their effect on its client's bucket of keys."""
        t1 = time.monotonic()
        for op, client, t0 in peer.key_ops:
            bucket = self.bucket("keys", client)
            ops = {op} if op != "count" else {o for o, possible in (("charge", bucket.may_pass(t1)),
                                                                   ("refuse", bucket.may_refuse(t0))) if possible}
            bucket.apply(ops, t0, t1)
            self.totals.limited[f"keys-ws-{op}"] += 1  # "refuse": a right key refused while throttled
        peer.key_ops.clear()

    def predict(self, peer: Peer, out: Out, throttled: bool | None = None) -> None:
        """What docs/protocol.md says the server answers to `out` on `peer`; the model's state follows.
        `throttled`: whether the peer's client is throttled for wrong keys, where `key_dependent`."""
        if out.size >= WS_LIMIT:
            peer.closing = 1009
            return
        if not peer.authed:  # a private room's first message must be auth with a key that opens it
            peer.authed = True
            cmd = self.first_auth(out)
            if cmd is None:
                return peer.refuse(protocol.KEY_REQUIRED, 4401)
            if not peer.room.may_view(cmd.key):  # counted (a token taken, if the client has one)
                return peer.refuse(protocol.BAD_KEY, 4401, "count")
            if self.must_know(throttled, peer):  # the right key, refused while throttled
                return peer.refuse(protocol.BAD_KEY, 4401, "refuse")
            peer.expect_hello = True
            return
        if isinstance(out.payload, bytes):
            if peer.role == "listener":
                return peer.expect_error(protocol.NOT_A_SPEAKER)
            return self.audio(peer, len(out.payload))
        if out.deep and out.size <= MAX_MESSAGE:
            # Whether the parser's recursion limit is reached depends on the stack it runs on, so close to it
            # either answer is right: the message's meaning, or bad_json ("nesting too deep to parse").
            peer.expected.append({("error", protocol.BAD_JSON), out.deep})
            return
        try:
            cmd = parse_text(out.payload, MAX_MESSAGE)
        except ProtocolError as exc:
            return peer.expect_error(exc.code)
        if isinstance(cmd, Ping):
            peer.expected.append({("pong", roundtrip(cmd.id))})
        elif isinstance(cmd, Auth):
            if peer.role == "speaker":
                peer.key = cmd.key
        elif peer.role == "listener":
            peer.expect_error(protocol.NOT_A_SPEAKER)
        elif isinstance(cmd, Stop):
            if peer.started:
                peer.started, peer.room.speaker = False, None
        else:
            self.start(peer, cmd, throttled)

    def must_know(self, throttled: bool | None, peer: Peer) -> bool:
        if throttled is None:
            self.fail(f"{peer.name}: the model cannot tell whether {peer.client} is throttled (the harness did not "
                      f"wait until it could: key_determinate)")
        return throttled

    def start(self, peer: Peer, cmd: Start, throttled: bool | None) -> None:
        room = peer.room
        if peer.started:
            return peer.expect_error(protocol.ALREADY_STARTED)
        refusal = room.may_publish(peer.key)
        if refusal == protocol.BAD_KEY:  # counted; while throttled refused all the same
            return peer.refuse(refusal, 4401, "count")
        if refusal:
            return peer.refuse(refusal, 4401)
        if peer.key and self.must_know(throttled, peer):  # a key that may publish, while throttled
            return peer.refuse(protocol.BAD_KEY, 4401, "refuse")
        other = room.speaker
        if other is not None and other is not peer:
            if not cmd.takeover:
                return peer.refuse(protocol.SPEAKER_EXISTS, 4409)
            other.refuse(protocol.TAKEN_OVER, 4409)
            other.started = False
        room.speaker, peer.started = peer, True

    def audio(self, peer: Peer, n: int) -> None:
        if not peer.started:
            peer.expect_error(protocol.NOT_STARTED)
        elif n > MAX_FRAME:
            peer.expect_error(protocol.FRAME_TOO_LARGE)
        elif n % 2:
            peer.expect_error(protocol.BAD_AUDIO)
        else:
            peer.audio_s += n / 32000

    # ------------------------------------------------------------ URLs

    def room_model(self, name: str) -> RoomModel:
        return self.rooms.get(name) or self.created[name]

    def exists(self, name: str | None) -> bool:
        return name is not None and (name in self.rooms or name in self.created)

    def url_outcome(self, endpoint: str, name: Name, since: str | None, header: str, host: str = "default",
                    origin: str = "none", throttled: bool = False) -> tuple[str, int | None]:
        """The refusal (error code and close code) or "hello", in the order of docs/protocol.md: the Host (an HTTP
        421 before the handshake), the origin, the room name, the room, `since`, the key (a wrong one to a private
        room is counted; a right one is refused while `throttled`). A key in the handshake while the client is
        throttled is an HTTP 429 before all but the Host (B7: the harness checks that, `Fuzz.handshake`)."""
        if not host_answered(host):
            return "bad_host", 421
        if not ORIGINS[origin][1]:
            return "origin_not_allowed", 4403
        if name.name is None:
            return "bad_room", 4400
        try:
            check_room(name.name, MAX_ROOM)
        except ProtocolError:
            return "bad_room", 4400
        if not self.exists(name.name):
            return "no_such_room", 4404
        if endpoint == "listen" and since is not None:
            try:
                int(since)
            except ValueError:
                return "bad_message", 4400
        room = self.room_model(name.name)
        key = bearer(auth_header(header).get("Authorization"))
        if room.viewer_key is not None and key is not None and (throttled or not room.may_view(key)):
            return "bad_key", 4401
        return "hello", None

    # ------------------------------------------------------------ HTTP

    def bucket(self, kind: str, client: str) -> Bucket:
        return self.buckets.setdefault((kind, client), Bucket(*LIMITS[kind]))

    @staticmethod
    def key_of(req: Req) -> str | None:
        return bearer(auth_header(req.auth).get("Authorization"))

    def http_expected(self, req: Req, t0: float, t1: float) -> list[Branch]:
        """Every answer docs/protocol.md allows to `req`, sent at t0 and answered by t1: first what every request
        goes through (the Host, the Origin of a state-changing one, a presented key while its client is
        throttled: 429 before routing, whatever the key), then the endpoint's own answers."""
        self._window = (t0, t1)
        if not host_answered(req.host):
            return [Branch(421, protocol.BAD_HOST)]
        if req.method in STATE_CHANGING and not ORIGINS[req.origin][1]:
            return [Branch(403, protocol.ORIGIN_NOT_ALLOWED)]
        if self.key_of(req) is None:  # a request without a key never counts
            return self.routed(req)
        return self.gate("keys", req, Branch(429, protocol.RATE_LIMITED), lambda: self.routed(req),
                         "pass")

    def routed(self, req: Req) -> list[Branch]:
        if req.kind == "preflight":
            if ORIGINS[req.origin][2] and req.acrm:
                return [Branch(204)]
            return [Branch(405 if PREFLIGHT_PATHS[req.path] else 404, raised=True)]
        if req.kind == "page":
            return [Branch(200, body="page")]
        routing = []
        name = req.name
        if name is not None and (name.name is None or name.segment in ("", ".", "..") or name.name in (".", "..")
                                 or set(name.name) & set("{}/")):
            # A path that may be normalised, or not routed at all: aiohttp's `{room}` matches no empty segment
            # and no '{', '}' or (decoded) '/' (how a given one is routed is aiohttp's affair, not the document's).
            # Routed, it names no room.
            routing = [Branch(404, raised=True), Branch(405, raised=True)]
        if req.kind == "method":  # `…/ask` has a route for POST only; `…/export/x` and `…/summary/` have none
            return routing or [Branch(405 if req.path.endswith("/ask") else 404, raised=True)]
        return routing + getattr(self, f"http_{req.kind}")(req)

    @staticmethod
    def with_op(branch: Branch, op: tuple[str, str, str]) -> Branch:
        """`branch`, implying `op` too, unless it already says what happened to that bucket (a charge is a pass)."""
        if any(o[:2] == op[:2] for o in branch.ops):
            return branch
        return replace(branch, ops=(op, *branch.ops))

    def gate(self, kind: str, req: Req, refused: Branch, passed: Callable[[], list[Branch]], op: str) -> list[Branch]:
        """A per-client limit: refused when the client's bucket is empty, else the answers of `passed`, with what
        either implies for the bucket (`op` for passing: "charge" takes a token, "pass" only looked)."""
        client = self.http_addresses[req.client]
        bucket = self.bucket(kind, client)
        t0, t1 = self._window
        out = []
        if bucket.may_refuse(t0):
            out.append(self.with_op(refused, (kind, client, "refuse")))
        if bucket.may_pass(t1):
            out += [self.with_op(b, (kind, client, op)) for b in passed()]
        return out

    def wrong_key(self, req: Req, answer: Branch) -> Branch:
        """A presented key that opened nothing: counted (a token taken). The client had one: had it not, `guard`
        would have answered 429 before, so the endpoint's own 429 for the count cannot come."""
        return self.with_op(answer, ("keys", self.http_addresses[req.client], "charge"))

    def admin_only(self, req: Req, then: Callable[[], list[Branch]]) -> list[Branch]:
        """POST /v1/rooms, DELETE, /metrics: the admin key goes on; no key is 401 key_required (not counted);
        another key is a wrong one, counted (401 bad_key)."""
        key = self.key_of(req)
        if key is None:
            return [Branch(401, protocol.KEY_REQUIRED)]
        if key == ADMIN:
            return then()
        return [self.wrong_key(req, Branch(401, protocol.BAD_KEY))]

    def with_body(self, req: Req, then: Callable[[dict], list[Branch]]) -> list[Branch]:
        """The body as the endpoints read it: 415 unless its media type is application/json, 413 over 1 MiB, 400
        unless it decodes (with the Content-Type's charset) to a JSON object of valid Unicode; else the answers
        of `then(body)`. Nested DEEP_LEVELS deep or more, 400 is right too (the parser's recursion limit)."""
        if req.content_type not in JSON_TYPES:
            return [Branch(415, protocol.BAD_MESSAGE)]
        body = req.body or b""
        if len(body) > CLIENT_MAX_SIZE:
            return [Branch(413, raised=True)]
        bad = Branch(400, protocol.BAD_MESSAGE)
        try:
            text = body.decode(JSON_TYPES[req.content_type] or "utf-8")
        except (LookupError, UnicodeError):
            return [bad]
        depth = nesting(text)
        if depth >= SURELY_TOO_DEEP:
            return [bad]
        try:
            with deep_stack(depth):
                obj = json.loads(text)
                json.dumps(obj, ensure_ascii=False).encode("utf-8")
        except (ValueError, UnicodeError, RecursionError):
            return [bad]
        meaning = then(obj) if isinstance(obj, dict) else [bad]
        return meaning + [bad] if depth >= DEEP_LEVELS else meaning

    def viewable(self, req: Req) -> RoomModel | Branch:
        """The room if the request may see it, else its 404: a private room without a key that opens it is no room
        (the key that does not open it counted)."""
        name = req.name.name
        missing = Branch(404, protocol.NO_SUCH_ROOM)
        if not self.exists(name):
            return missing
        room = self.room_model(name)
        key = self.key_of(req)
        if room.may_view(key):
            return room
        return self.wrong_key(req, missing) if key else missing

    # the kinds of request, in the order their handlers check things

    def http_create(self, req: Req) -> list[Branch]:
        return self.admin_only(req, lambda: self.with_body(req, lambda body: self.create_answer(req, body)))

    def create_answer(self, req: Req, body: dict) -> list[Branch]:
        title, private = body.get("title"), body.get("private", False)
        name = body.get("room") or slug(title if isinstance(title, str) else "")
        if not (isinstance(title, str) and 0 < len(title.strip()) <= 200 and isinstance(private, bool)
                and isinstance(name, str)):
            return [Branch(400, protocol.BAD_MESSAGE)]
        ask = body.get("ask", "anyone")
        if ask not in ASK_POLICIES:
            return [Branch(400, protocol.BAD_MESSAGE)]
        try:
            check_room(name, MAX_ROOM)
        except ProtocolError:
            return [Branch(400, protocol.BAD_ROOM)]
        if self.exists(name):
            return [Branch(409, protocol.BAD_ROOM)]

        def made(data: dict) -> None:
            if (data["room"], data["title"], data["private"], data["ask"]) != (name, title.strip(), private, ask):
                self.fail(f"{req!r}: created {data}, expected room {name!r}, title {title.strip()!r}, private "
                          f"{private}, ask {ask!r}")
            self.created[name] = RoomModel(name, data["speaker_key"], data["viewer_key"], title=title.strip(),
                                           ask=ask)
        return [Branch(201, body="created", apply=made)]

    def http_delete(self, req: Req) -> list[Branch]:
        name = req.name.name

        def deleted(_: Any) -> None:
            self.created.pop(name, None)
        # The rooms the fuzzer made have no connection during the HTTP fuzzing: none is in use (409).
        return self.admin_only(req, lambda: [Branch(200, body="deleted", apply=deleted)] if self.exists(name)
                               else [Branch(404, protocol.NO_SUCH_ROOM)])

    def http_list(self, req: Req) -> list[Branch]:
        key = self.key_of(req)
        if key == ADMIN:
            return [Branch(200, body="list-all")]
        public = Branch(200, body="list-public")
        return [self.wrong_key(req, public) if key else public]

    def http_patch(self, req: Req) -> list[Branch]:
        key = self.key_of(req)
        name = req.name.name
        room = self.room_model(name) if self.exists(name) else None
        if room is None or key not in (ADMIN, room.speaker_key):
            missing = Branch(404, protocol.NO_SUCH_ROOM)
            counted = key is not None and key != ADMIN  # the admin key naming a missing room is a typo
            return [self.wrong_key(req, missing) if counted else missing]

        def answer(body: dict) -> list[Branch]:
            ask = body.get("ask", room.ask)
            if ask not in ASK_POLICIES:
                return [Branch(400, protocol.BAD_MESSAGE)]

            def changed(_: Any) -> None:
                room.ask = ask
            return [Branch(200, body=f"room-ask:{ask}", apply=changed)]
        return self.with_body(req, answer)

    def http_transcript(self, req: Req) -> list[Branch]:
        room = self.viewable(req)
        return [room if isinstance(room, Branch) else Branch(200, body="transcript")]

    def http_export(self, req: Req) -> list[Branch]:
        room = self.viewable(req)
        if isinstance(room, Branch):
            return [room]
        if ("txt" if req.format is None else req.format) not in EXPORT_TYPES:
            return [Branch(400, protocol.BAD_MESSAGE)]
        return [Branch(200, body="export")]

    def http_summary(self, req: Req) -> list[Branch]:
        room = self.viewable(req)
        if isinstance(room, Branch):
            return [room]
        if req.method == "GET":
            made = [Branch(200, body="summary")]
            none = [Branch(404, protocol.NO_SUMMARY)]
            return made if room.summary else none if room.summary is False else made + none
        key = self.key_of(req)
        if key not in (room.speaker_key, ADMIN):  # the body is not read: no 415
            if not key:
                return [Branch(401, protocol.KEY_REQUIRED)]
            return [self.wrong_key(req, Branch(401, protocol.BAD_KEY))]  # a key that may not publish

        def made_one(_: Any) -> None:
            room.summary = True
        made = Branch(200, body="summary", apply=made_one)
        if key == ADMIN:  # the admin is not limited
            return [made]
        return self.gate("asks", req, Branch(429, protocol.RATE_LIMITED), lambda: [made], "charge")

    def http_ask(self, req: Req) -> list[Branch]:
        room = self.viewable(req)
        if isinstance(room, Branch):
            return [room]
        key = self.key_of(req)
        holds_key = key is not None and key in (room.viewer_key, room.speaker_key, ADMIN)
        if room.ask == "nobody":
            return [Branch(403, protocol.NOT_ALLOWED)]
        if room.ask == "viewers" and not holds_key:  # a key that may not ask here is counted
            refused = Branch(403, protocol.NOT_ALLOWED)
            return [self.wrong_key(req, refused) if key else refused]

        def answer(body: dict) -> list[Branch]:
            question = body.get("question")
            if not isinstance(question, str) or not 0 < len(question.strip()) <= MAX_QUESTION:
                return [Branch(400, protocol.BAD_MESSAGE)]
            answered = Branch(200, body="answer")
            if key == ADMIN:  # the admin is not limited
                return [answered]
            return self.gate("asks", req, Branch(429, protocol.RATE_LIMITED), lambda: [answered], "charge")
        return self.with_body(req, answer)

    def http_misc(self, req: Req) -> list[Branch]:
        if req.path == "/v1":
            return [Branch(404, raised=True)]
        if req.path.startswith("/v1/rooms"):
            return self.http_list(req)
        if req.path == "/metrics":
            return self.admin_only(req, lambda: [Branch(200, body="metrics")])
        # /healthz: the details for the admin key, {status, ready} otherwise; another key is counted as for /metrics.
        key = self.key_of(req)
        if key == ADMIN:
            return [Branch(200, body="details")]
        short = Branch(200, body="short")
        return [self.wrong_key(req, short) if key else short]

    def settle(self, branches: list[Branch], t0: float, t1: float) -> None:
        """Narrow the buckets by the answer that came (`branches`: those it matched; a bucket that one of them
        did not look at may be as it was)."""
        ops: dict[tuple[str, str], set[str]] = {}
        for b in branches:
            for op in b.ops:
                ops.setdefault(op[:2], set()).add(op[2])
        for (kind, client), which in ops.items():
            if any(all(o[:2] != (kind, client) for o in b.ops) for b in branches):
                which.add("none")
            self.bucket(kind, client).apply(which, t0, t1)

    def viewer_url_ok(self, data: dict) -> bool:
        """Room links on the public URL; a private room's viewer key only in the fragment (never sent)."""
        base = f"{PUBLIC_URL}/?room={data['room']}"
        return data["viewer_url"] == (base + (f"#key={data['viewer_key']}" if data["viewer_key"] else "")) and \
            data["speaker_url"] == f"{PUBLIC_URL}/speak?room={data['room']}"
