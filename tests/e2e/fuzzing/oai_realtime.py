"""Hypothesis strategies for the OpenAI Realtime section of tests/e2e/test_fuzz.py (`GET /v1/realtime`): how a
connection is opened (intent, room, key, subprotocol, Origin) and what it then sends (valid and broken
`session.update` in the GA and the beta shape, appends with good, odd, bad and huge audio, commits, clears, unknown
types, text that is not JSON or not UTF-8, binary frames), each message labelled with the answer docs/protocol.md
("OpenAI Realtime transcription") prescribes. The driver that sends them and checks the answers is in
tests/e2e/test_fuzz.py.

The labels are written from the documentation and the server's validation order (realtime/core/oai_realtime.py),
not computed by it: a broken update patches one field of an otherwise valid session, so the code it must get is
known."""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import strategies as st

from tests.e2e.fuzzing.strategies import ALLOWED_ORIGIN, MAX_FRAME, MAX_MESSAGE, SPEECH, WS_LIMIT, weighted

MAX_EVENT = max(MAX_MESSAGE, 2 * MAX_FRAME + 4096)  # characters of one client event (docs: 68096)
LOGPROBS = "item.input_audio_transcription.logprobs"
# The server bugs this section found, all fixed (the first column of BROKEN names the entries that found them):
#   R1, R2 a beta `input_audio_format` or a GA `format.type` that is an object or a list, R4 an event whose `type`
#   is one: a TypeError, `internal` and 1011; R5 an `event_id` spelled as a lone surrogate, echoed into an error
#   that could not be sent; R3 errors raised after parsing (a refused session value, an empty commit) without the
#   client's event_id.

# The documented `error.code`s of this endpoint (docs/protocol.md "Realtime errors"); `internal` is never expected.
CLIENT_CODES = frozenset({"invalid_json", "missing_required_parameter", "invalid_value", "invalid_type",
                          "unsupported", "message_too_large", "input_audio_buffer_commit_empty"})
CONNECT_CODES = frozenset({"unsupported", "missing_required_parameter", "bad_room", "no_such_room", "key_required",
                           "bad_key"})
# The errors that end a session, and the close that must follow each.
ENDING = {"speaker_exists": 4409, "server_full": 1013, "lecture_too_long": 4413, "taken_over": 4409,
          "idle_timeout": 4410}
SERVER_EVENTS = frozenset({
    "session.created", "session.updated", "transcription_session.updated", "input_audio_buffer.speech_started",
    "input_audio_buffer.speech_stopped", "input_audio_buffer.committed", "input_audio_buffer.cleared",
    "conversation.item.input_audio_transcription.delta", "conversation.item.input_audio_transcription.completed",
    "conversation.item.input_audio_transcription.failed", "error"})
# The server events that answer one client event (the others come from the audio, at any time).
REPLIES = frozenset({"error", "session.updated", "transcription_session.updated", "input_audio_buffer.cleared"})
ABSENT = object()  # a field left out


# ---------------------------------------------------------------- the connection


@dataclass(frozen=True)
class Conn:
    intent: Any  # a query value, or ABSENT
    room: str  # "own", "absent", "empty", "unknown", or a name that is no room name ("bad:<name>")
    key: str  # "own", "admin", "wrong", "none", "basic", "empty", "subprotocol", "header-wins"
    realtime_protocol: bool  # offer the `realtime` subprotocol as browsers do
    origin: str | None  # None, "allowed", "evil"
    extra: tuple[tuple[str, str], ...] = ()  # other query parameters (ignored)

    def refusal(self) -> tuple[str, int, bool] | None:
        """The refusal the documentation prescribes (code, close code, native shape), or None when accepted."""
        if self.intent != "transcription":
            return "unsupported", 4400, False
        if self.room in ("absent", "empty"):
            return "missing_required_parameter", 4400, False
        if self.room.startswith("bad:"):
            return "bad_room", 4400, False
        if self.room == "unknown":
            return "no_such_room", 4404, False
        if self.origin == "evil":
            return "origin_not_allowed", 4403, True
        if self.key in ("none", "basic", "empty"):
            return "key_required", 4401, False
        if self.key in ("wrong", "header-wins"):
            return "bad_key", 4401, False
        return None


BAD_ROOMS = ["-lead", "a b", "x" * 65, "ünï", ".dot", "a/b", "a\u0000", "%2e%2e", "semi;colon", "tab\tbed"]
CONNS = st.builds(
    Conn,
    intent=weighted((14, st.just("transcription")),
                    (1, st.sampled_from([ABSENT, "", "conversation", "Transcription", "transcription "]))),
    room=weighted((14, st.just("own")), (1, st.sampled_from(["absent", "empty", "unknown"])),
                  (1, st.sampled_from([f"bad:{r}" for r in BAD_ROOMS]))),
    key=weighted((8, st.just("own")), (2, st.just("admin")), (2, st.just("subprotocol")),
                 (2, st.sampled_from(["wrong", "none", "basic", "empty", "header-wins"]))),
    realtime_protocol=st.booleans(),
    origin=weighted((12, st.none()), (1, st.just("allowed")), (1, st.just("evil"))),
    extra=st.lists(st.tuples(st.sampled_from(["model", "x", "room_", "intent_", "Intent"]),
                             st.sampled_from(["gpt-4o-transcribe", "", "1", "%"])), max_size=2).map(tuple),
)


# ---------------------------------------------------------------- client events


@dataclass(frozen=True)
class Msg:
    """One message of a drawn sequence and the answer it must get: one of `replies` (an `error` with a code of
    `codes`), none (`replies` empty: an append), or a close with `closes`. `kind` "sync" and "rival" are steps of
    the driver."""

    kind: str
    payload: str | bytes = b""
    text: bool = True
    replies: frozenset[str] = frozenset()
    codes: frozenset[str] = frozenset()
    optional: bool = False
    event_id: str | None = None
    closes: int | None = None
    audio: bool = False

    def __repr__(self) -> str:
        shown = self.payload if len(self.payload) <= 200 else self.payload[:160]
        more = "" if len(self.payload) <= 200 else f"...({len(self.payload)} chars)"
        return f"<{self.kind} {shown!r}{more}>"


EVENT_IDS = st.sampled_from([ABSENT] * 3 + ["evt-1", "", "x" * 200, "x" * 201, 7, None, ["e"], "é\u2028"])


def echo(event_id: Any) -> str | None:
    return event_id if isinstance(event_id, str) and len(event_id) <= 200 else None


def event(kind: str, body: dict[str, Any], event_id: Any, replies: set[str], codes: set[str] = frozenset(),
          **kw: Any) -> Msg:
    msg = dict(body)
    if event_id is not ABSENT:
        msg["event_id"] = event_id
    msg = {k: v for k, v in msg.items() if v is not ABSENT}
    text = json.dumps(msg, ensure_ascii=False)
    if len(text) > MAX_EVENT:  # refused before the JSON is read: no event_id can be repeated
        return Msg(kind + "/too-large", text, replies=frozenset({"error"}), codes=frozenset({"message_too_large"}))
    return Msg(kind, text, replies=frozenset(replies), codes=frozenset(codes), event_id=echo(event_id), **kw)


LANG_OK = st.sampled_from(["en", "de-DE", "EN", "fr_FR", "", None, "yue"])
VAD_OK = st.fixed_dictionaries({}, optional={
    "type": st.just("server_vad"), "threshold": st.floats(0, 1), "prefix_padding_ms": st.integers(0, 2000),
    "silence_duration_ms": st.integers(30, 10000), "create_response": st.sampled_from([None, False]),
    "eagerness": st.none(), "ignored": st.integers()})
TRANSCRIPTION_OK = st.fixed_dictionaries({}, optional={
    "model": st.sampled_from(["whisper-1", "gpt-4o-transcribe", None, "", "m" * 100]), "language": LANG_OK,
    "prompt": st.one_of(st.text(max_size=60), st.sampled_from([None, "   ", "x" * 2000, "a\u0000b", 0])),
    "keywords": st.none(), "ignored": st.text(max_size=5)})
GA_FORMATS = [{"type": "audio/pcm", "rate": 24000}, {"type": "audio/pcm"}, {"type": "audio/pcmu"},
              {"type": "audio/pcma"}, {}, {"type": "audio/pcmu", "rate": 8000}]


@st.composite
def ga_session(draw: Any) -> dict[str, Any]:
    """A valid GA session (every field optional)."""
    audio_in = draw(st.fixed_dictionaries({}, optional={
        "format": st.sampled_from(GA_FORMATS), "transcription": TRANSCRIPTION_OK,
        "turn_detection": st.one_of(st.none(), VAD_OK), "noise_reduction": st.none()}))
    session = draw(st.fixed_dictionaries({}, optional={
        "type": st.just("transcription"), "include": st.sampled_from([None, [], [LOGPROBS]]),
        "id": st.just("sess_x"), "object": st.just("realtime.transcription_session"), "expires_at": st.integers()}))
    if audio_in or draw(st.booleans()):
        session["audio"] = {"input": audio_in}
    return session


LEGACY_OK = st.fixed_dictionaries({}, optional={
    "input_audio_format": st.sampled_from(["pcm16", "g711_ulaw", "g711_alaw"]),
    "input_audio_transcription": TRANSCRIPTION_OK, "turn_detection": st.one_of(st.none(), VAD_OK),
    "input_audio_noise_reduction": st.none(), "include": st.sampled_from([[], [LOGPROBS]]),
    "modalities": st.just(["text"]), "client_secret": st.just({"value": "ek_x"})})

NUMBERS_OUT = {"threshold": [-0.01, 1.01, "0.5", True, math.nan, math.inf, 1e300, [0.5]],
               "prefix_padding_ms": [-1, 2001, "300", 1e9, -0.5],
               "silence_duration_ms": [29, 10001, -5, "500", False, {}]}
# A broken update: (bug tag, GA or beta, path from `session` (() = the session itself), values, code). The value
# replaces what a valid session holds there, so that the code is the one that field gets.
IN = ("audio", "input")
BROKEN: list[tuple[str, bool, tuple[str, ...], list[Any], str]] = [
    ("", False, (), [5, "x", [], True, None], "invalid_type"),
    ("", False, ("type",), ["realtime", "conversation", "", None, 5], "unsupported"),
    ("", False, ("voice",), ["alloy"], "unsupported"),
    ("", False, ("instructions",), ["be brief", None], "unsupported"),
    ("", False, ("x" * 300,), [1], "unsupported"),
    ("", False, ("audio", "output"), [{"voice": "alloy"}, None], "unsupported"),
    ("", False, ("audio",), [5, "x", [], True], "invalid_type"),
    ("", False, IN, [5, "x", [1], True], "invalid_type"),
    ("", False, (*IN, "speed"), [1.0], "unsupported"),
    ("", False, (*IN, "format"), [5, "audio/pcm", [], True, None], "invalid_value"),
    ("", False, (*IN, "format", "type"), ["audio/wav", "pcm16", "", 5, None, True], "invalid_value"),
    ("R2", False, (*IN, "format", "type"), [["audio/pcm"], {"a": 1}], "invalid_value"),
    ("", False, (*IN, "format"), [{"type": "audio/pcm", "rate": 16000}, {"rate": 8000}, {"rate": "24000"},
                                  {"type": "audio/pcmu", "rate": 24000}, {"rate": None}, {"rate": True},
                                  {"rate": 24000.5}], "invalid_value"),
    ("", False, (*IN, "transcription"), [5, "whisper-1", [1], True, []], "invalid_type"),
    ("", False, (*IN, "transcription", "language"), [5, ["en"], {"en": 1}, True, 1.5], "invalid_type"),
    ("", False, (*IN, "transcription", "language"), ["xx", "english", "zz-ZZ", "auto", "e n", "\u0000"],
     "invalid_value"),
    ("", False, (*IN, "transcription", "prompt"), ["a" * 2001, "é" * 2001, "  " * 1001, 5, True, ["a"], {"a": 1}],
     "invalid_value"),
    ("", False, (*IN, "transcription", "model"), ["m" * 101, 5, True, ["whisper-1"]], "invalid_value"),
    ("", False, (*IN, "transcription", "keywords"), [["a"], "x", 1], "unsupported"),
    ("", False, (*IN, "transcription", "delay"), [0.5], "unsupported"),
    ("", False, (*IN, "turn_detection"), [5, "server_vad", [], True], "invalid_type"),
    ("", False, (*IN, "turn_detection", "type"), ["semantic_vad"], "unsupported"),
    ("", False, (*IN, "turn_detection", "type"), ["none", "", 5, "SERVER_VAD", None, ["server_vad"]],
     "invalid_value"),
    ("", False, (*IN, "turn_detection", "create_response"), [True, 1, "yes"], "unsupported"),
    ("", False, (*IN, "turn_detection", "idle_timeout_ms"), [5000], "unsupported"),
    *[("", False, (*IN, "turn_detection", k), v, "invalid_value") for k, v in NUMBERS_OUT.items()],
    ("", False, (*IN, "noise_reduction"), [{"type": "near_field"}, "near_field", 1, [], False], "unsupported"),
    ("", False, ("include",), ["x", ["x"], [LOGPROBS, "y"], 5, {"a": 1}, True], "invalid_value"),
    ("", True, (), [5, [], "x"], "invalid_type"),
    ("", True, ("type",), ["transcription"], "unsupported"),
    ("", True, ("audio",), [{}], "unsupported"),
    ("", True, ("input_audio_format",), ["pcm", "audio/pcm", "", 5, "PCM16", True], "invalid_value"),
    ("R1", True, ("input_audio_format",), [{"type": "audio/pcm"}, ["pcm16"]], "invalid_value"),
    ("", True, ("input_audio_transcription",), [5, "x", True, []], "invalid_type"),
    ("", True, ("input_audio_transcription", "language"), ["xx", "english"], "invalid_value"),
    ("", True, ("input_audio_transcription", "language"), [5, []], "invalid_type"),
    ("", True, ("turn_detection", "type"), ["semantic_vad"], "unsupported"),
    ("", True, ("turn_detection", "threshold"), [2, -1], "invalid_value"),
    ("", True, ("input_audio_noise_reduction",), [{"type": "far_field"}], "unsupported"),
]


def put(session: Any, path: tuple[str, ...], value: Any) -> Any:
    """`session` with `value` at `path` (objects made on the way where the valid session had none)."""
    if not path:
        return value
    out = dict(session) if isinstance(session, dict) else {}
    out[path[0]] = put(out.get(path[0]), path[1:], value)
    return out


@st.composite
def update(draw: Any) -> Msg:
    """A session.update or transcription_session.update: valid, broken in one field, or junk."""
    event_id, choice = draw(EVENT_IDS), draw(st.integers(0, 9))
    if choice < 4:
        legacy = choice == 3
        session = draw(LEGACY_OK if legacy else ga_session())
        kind = "transcription_session" if legacy else "session"
        return event(f"{kind}.update/ok", {"type": f"{kind}.update", "session": session}, event_id,
                     {f"{kind}.updated"})
    if choice == 4:  # no session at all: refused while parsing
        kind = draw(st.sampled_from(["session", "transcription_session"]))
        return event(f"{kind}.update/no-session", {"type": f"{kind}.update"}, event_id, {"error"},
                     {"missing_required_parameter"})
    if choice == 5:  # anything JSON as the session: refused (unknown keys, wrong types) or, rarely, accepted
        legacy = draw(st.booleans())
        keys = st.text(max_size=8)
        junk = draw(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                                 lambda c: st.lists(c, max_size=3) | st.dictionaries(keys, c, max_size=3),
                                 max_leaves=6))
        kind = "transcription_session" if legacy else "session"
        return event(f"{kind}.update/junk", {"type": f"{kind}.update", "session": junk}, event_id,
                     {"error", f"{kind}.updated"}, {"invalid_type", "invalid_value", "unsupported"})
    _, legacy, path, values, code = draw(st.sampled_from(BROKEN))
    value = draw(st.sampled_from(values))
    base = draw(LEGACY_OK if legacy else ga_session())
    session = put(base, path, value)
    kind = "transcription_session" if legacy else "session"
    return event(f"{kind}.update/{'.'.join(path)[:40] or 'session'}", {"type": f"{kind}.update",
                                                                      "session": session},
                 event_id, {"error"}, {code})


def audio_bytes(content: str, n: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    if content == "speech" and SPEECH and SPEECH[0]:
        start = (seed * 4096) % max(2, len(SPEECH[0]) - n) & ~1
        return SPEECH[0][start:start + n].ljust(n, b"\0")
    if content == "noise":
        return rng.integers(-300, 300, n // 2 + 1, dtype=np.int16).astype("<i2").tobytes()[:n]
    if content == "sine":
        return (np.sin(np.arange(n // 2 + 1) / 4) * 6000).astype("<i2").tobytes()[:n]
    return bytes(n)


@st.composite
def append(draw: Any) -> Msg:
    event_id, choice = draw(EVENT_IDS), draw(st.integers(0, 9))
    body: dict[str, Any] = {"type": "input_audio_buffer.append"}
    if choice < 6:  # good audio, an odd byte count now and then, now and then a huge one
        n = draw(st.one_of(st.integers(0, 4800), st.sampled_from([1, 3, 4799]), st.integers(49_000, 60_000)
                           if choice == 5 else st.integers(0, 9600)))
        # Mostly silence: every turn the VAD hears costs a decode of a 30 s window, at the stop at the latest.
        pcm = audio_bytes(draw(st.sampled_from(["zeros"] * 5 + ["noise", "sine", "speech"])), n,
                          draw(st.integers(0, 1000)))
        body["audio"] = base64.b64encode(pcm).decode()
        return event("append/ok" if n < 49_000 else "append/huge", body, event_id, set(), audio=True)
    if choice < 8:
        body["audio"] = draw(st.sampled_from(["abc", "!!!!", "YQ", "====", "YWJj\n", "é", "YW Jj", "-_-_",
                                              base64.b64encode(b"ok").decode() + "="]))
        return event("append/bad-base64", body, event_id, {"error"}, {"invalid_value"})
    body["audio"] = draw(st.sampled_from([ABSENT, None, 5, ["AAAA"], {"data": "AAAA"}, True]))
    return event("append/no-audio", body, event_id, {"error"}, {"missing_required_parameter"})


@st.composite
def other(draw: Any) -> Msg:
    """Commits, clears, unknown and unsupported types, text that is not a JSON object, binary and oversized frames."""
    event_id, choice = draw(EVENT_IDS), draw(st.integers(0, 13))
    if choice < 3:
        return event("commit", {"type": "input_audio_buffer.commit"}, event_id, {"error"},
                     {"input_audio_buffer_commit_empty"}, optional=True)
    if choice < 5:
        return event("clear", {"type": "input_audio_buffer.clear"}, event_id, {"input_audio_buffer.cleared"})
    if choice == 5:
        kind = draw(st.sampled_from(["response.create", "conversation.item.create", "output_audio_buffer.clear",
                                     "response.cancel"]))
        return event(f"unsupported/{kind}", {"type": kind}, event_id, {"error"}, {"unsupported"})
    if choice == 6:
        kind = draw(st.one_of(st.text(max_size=30), st.sampled_from(["session.updated", "SESSION.UPDATE", "ping",
                                                                      "start", "x" * 5000])))
        if kind in ("session.update", "transcription_session.update", "input_audio_buffer.append",
                    "input_audio_buffer.commit", "input_audio_buffer.clear", "response.create", "response.cancel",
                    "conversation.item.create", "conversation.item.retrieve", "conversation.item.truncate",
                    "conversation.item.delete", "output_audio_buffer.clear"):
            kind = "nope"
        return event("unknown-type", {"type": kind}, event_id, {"error"}, {"invalid_value"})
    if choice == 7:
        kind = draw(st.sampled_from([ABSENT, None, 5, True, [], {"a": 1}]))
        return event("no-type", {"type": kind}, event_id, {"error"}, {"missing_required_parameter"})
    if choice == 8:
        raw = draw(st.sampled_from(["", "{", "not json", "[1, 2]", "1", "null", '"session.update"', "{'a': 1}",
                                    "[" * 60_000, '{"type": "session.update", "session": ' + "[" * 50_000]))
        return Msg("not-an-object", raw, replies=frozenset({"error"}), codes=frozenset({"invalid_json"}))
    if choice == 9:  # a \u escape spelling a lone surrogate
        where = draw(st.sampled_from(["prompt", "type", "key", "event_id"]))
        raw = {"prompt": '{"type": "session.update", "session": {"audio": {"input": {"transcription": '
                         '{"prompt": "\\ud800"}}}}}',
               "type": '{"type": "\\udfff"}', "event_id": '{"type": "input_audio_buffer.commit", "event_id": '
                                                         '"\\ud83d"}',
               "key": '{"type": "session.update", "session": {"\\udc00": 1}}'}[where]
        return Msg(f"surrogate/{where}", raw, replies=frozenset({"error"}), codes=frozenset({"invalid_value"}))
    if choice == 10:
        data = draw(st.one_of(st.binary(max_size=300), st.just(bytes(3200))))
        return Msg("binary", data, text=False, replies=frozenset({"error"}), codes=frozenset({"invalid_value"}))
    if choice == 11:  # over the event limit, under aiohttp's: refused, the connection stays
        size = draw(st.integers(MAX_EVENT + 1, 200_000))
        raw = json.dumps({"type": "session.update", "session": {"x": "y" * size}})
        return Msg("too-large", raw, replies=frozenset({"error"}), codes=frozenset({"message_too_large"}))
    if choice == 12:  # beyond aiohttp's limit: closed with 1009 (the edge itself is F7-F9's, not drawn)
        return Msg("oversized", draw(st.sampled_from([bytes(WS_LIMIT + 40_000), "x" * (WS_LIMIT + 40_000)])),
                   text=draw(st.booleans()), closes=1009)
    return Msg("not-utf8", b'{"type": "input_audio_buffer.commit", "x": "\xff"}', closes=1007)


MESSAGE = weighted((2, update()), (2, append()), (1, other()))


@dataclass(frozen=True)
class Sequence:
    conn: Conn
    messages: tuple[Msg, ...]


SEQUENCES = st.builds(
    Sequence, conn=CONNS,
    messages=st.lists(weighted((30, MESSAGE), (1, st.just(Msg("sync"))), (1, st.just(Msg("rival")))),
                      min_size=1, max_size=10).map(tuple))
ORIGINS = {"allowed": ALLOWED_ORIGIN, "evil": "https://evil.example"}
