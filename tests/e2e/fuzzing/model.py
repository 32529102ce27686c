"""The model of docs/protocol.md that tests/e2e/test_fuzz.py checks the server against: the documented error codes,
close codes and event fields, the state of the fuzzed rooms and connections, and what the server must answer to each
fuzzed message, URL and HTTP request (`ProtocolModel`, mixed into `harness.Fuzz`)."""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass
from typing import Any

from realtime import protocol
from realtime.access import bearer
from realtime.protocol import Auth, Ping, ProtocolError, Start, Stop, check_room, parse_text
from tests.e2e.fuzzing.strategies import (
    ADMIN,
    MAX_FRAME,
    MAX_MESSAGE,
    MAX_ROOM,
    WS_LIMIT,
    Name,
    Out,
    Req,
    auth_header,
    roundtrip,
)
from tests.protocol_doc import CODE_ERRORS, DOC_CLOSES

# ---------------------------------------------------------------- what the protocol document promises

# The error codes are realtime/protocol.py's constants, the close codes the table of docs/protocol.md; that the two
# agree is checked by tests/core/test_protocol_fuzz.py.
ERROR_CODES = CODE_ERRORS
CLOSE_CODES = DOC_CLOSES
EVENT_CODES = ERROR_CODES - {protocol.SLOW_LISTENER}  # slow_listener is a close reason, never an event

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
ROOM_EVENTS = {"partial", "final", "status", "notes", "summary"}
ROOM_INFO_KEYS = {"room", "title", "private", "speaker_key", "viewer_key", "viewer_url", "speaker_url"}


# ---------------------------------------------------------------- rooms and connections


@dataclass
class RoomModel:
    name: str
    speaker_key: str | None
    viewer_key: str | None = None
    speaker: Peer | None = None  # the connection whose start the model accepted

    def may_view(self, key: str | None) -> bool:
        return self.viewer_key is None or key in (self.viewer_key, self.speaker_key, ADMIN)

    def may_publish(self, key: str | None) -> str | None:
        if not key:
            return protocol.KEY_REQUIRED
        return None if key in (self.speaker_key, ADMIN) else protocol.BAD_KEY


class Peer:
    """One fuzzing WebSocket, with what the model expects the server to send on it next."""

    def __init__(self, name: str, role: str):
        self.name, self.role = name, role
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

    def refuse(self, code: str, close: int) -> None:
        self.expect_error(code)
        self.closing = close


class ProtocolModel:
    """What the protocol document says, as methods of the harness (`harness.Fuzz`, which has `fail()`, `totals`,
    `rooms` and `created`): the checks of everything that arrives, and the replies, close codes and HTTP statuses
    the server owes."""

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

    def predict(self, peer: Peer, out: Out) -> None:
        """What docs/protocol.md says the server answers to `out` on `peer`; the model's state follows."""
        if out.size >= WS_LIMIT:
            peer.closing = 1009
            return
        if not peer.authed:  # a private room's first message must be auth with a key that opens it
            peer.authed = True
            try:
                cmd = parse_text(out.payload, 1024) if isinstance(out.payload, str) else None
            except ProtocolError:
                cmd = None
            if not isinstance(cmd, Auth):
                return peer.refuse(protocol.KEY_REQUIRED, 4401)
            if not peer.room.may_view(cmd.key):
                return peer.refuse(protocol.BAD_KEY, 4401)
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
            self.start(peer, cmd)

    def start(self, peer: Peer, cmd: Start) -> None:
        room = peer.room
        if peer.started:
            return peer.expect_error(protocol.ALREADY_STARTED)
        refusal = room.may_publish(peer.key)
        if refusal:
            return peer.refuse(refusal, 4401)
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

    def url_outcome(self, endpoint: str, name: Name, since: str | None, header: str) -> tuple[str, int | None]:
        if name.name is None:
            return "bad_room", 4400
        try:
            check_room(name.name, MAX_ROOM)
        except ProtocolError:
            return "bad_room", 4400
        if name.name not in self.rooms and name.name not in self.created:
            return "no_such_room", 4404
        if endpoint == "listen" and since is not None:
            try:
                int(since)
            except ValueError:
                return "bad_message", 4400
        room = self.room_model(name.name)
        key = bearer(auth_header(header).get("Authorization"))
        if room.viewer_key is not None and key is not None and not room.may_view(key):
            return "bad_key", 4401
        return "hello", None

    # ------------------------------------------------------------ HTTP

    def http_expected(self, req: Req) -> set[int]:
        if req.kind == "method":
            return {404, 405}
        name = req.name
        if name is not None and (name.name is None or name.segment in ("", ".", "..") or name.name in (".", "..")
                                 or set(name.name) & set("{}/")):
            # A path that may be normalised, or not routed at all: aiohttp's `{room}` matches no empty segment
            # and no '{', '}' or (decoded) '/'.
            return self.expected_status(req) | {404, 405}
        return self.expected_status(req)

    def expected_status(self, req: Req) -> set[int]:
        admin = bearer(auth_header(req.auth).get("Authorization")) == ADMIN
        if req.kind in ("misc", "list"):
            return {200, 404} if req.path == "/v1" else {200}
        if req.kind == "create":
            return {201, 400, 409, 413, 429} if admin else {401}
        name = req.name.name
        exists = name in self.rooms or name in self.created
        if req.kind == "delete":
            if not admin:
                return {401}
            return {200, 409} if exists else {404}
        if name is None:
            return {400, 401, 404}
        if not exists:
            return {404}
        key = bearer(auth_header(req.auth).get("Authorization"))
        if not self.room_model(name).may_view(key):
            return {401}
        if req.kind == "export":
            return {200} if ("txt" if req.format is None else req.format) in ("txt", "srt", "vtt", "json", "md") \
                else {400}
        if req.kind == "ask":
            return {200, 400, 413}
        return {200}
