"""Wire protocol v1: the code twin of docs/protocol.md.

Sans-I/O: parses what a client sends into typed commands (or a `ProtocolError` with a documented code) and turns
typed events into JSON text. Sockets live in realtime/server; nothing here imports them.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from realtime import PROTOCOL_VERSION

SAMPLE_RATE = 16000  # Hz: the one sample rate of the wire protocol, the VAD and the decoder
BYTES_PER_SAMPLE = 2  # s16le mono
BYTES_PER_SECOND = SAMPLE_RATE * BYTES_PER_SAMPLE

# Error codes sent in {"type": "error", "code": ...}. Keep in sync with docs/protocol.md.
BAD_JSON = "bad_json"
UNKNOWN_TYPE = "unknown_type"
BAD_MESSAGE = "bad_message"
MESSAGE_TOO_LARGE = "message_too_large"
BAD_AUDIO = "bad_audio"
FRAME_TOO_LARGE = "frame_too_large"
NOT_STARTED = "not_started"
ALREADY_STARTED = "already_started"
NOT_A_SPEAKER = "not_a_speaker"
BAD_ROOM = "bad_room"
SPEAKER_EXISTS = "speaker_exists"
SERVER_FULL = "server_full"
SLOW_LISTENER = "slow_listener"
INTERNAL = "internal"
ORIGIN_NOT_ALLOWED = "origin_not_allowed"
KEY_REQUIRED = "key_required"
BAD_KEY = "bad_key"
NO_SUCH_ROOM = "no_such_room"
ROOM_FULL = "room_full"
TOO_MANY_ROOMS = "too_many_rooms"
TAKEN_OVER = "taken_over"
IDLE_TIMEOUT = "idle_timeout"
LECTURE_TOO_LONG = "lecture_too_long"
SHUTTING_DOWN = "shutting_down"
TOO_MANY_CONNECTIONS = "too_many_connections"
START_TIMEOUT = "start_timeout"
# HTTP only
NO_SUMMARY = "no_summary"
NOT_ALLOWED = "not_allowed"
RATE_LIMITED = "rate_limited"
BAD_HOST = "bad_host"
BUSY = "busy"
TOO_MANY_LANGUAGES = "too_many_languages"
TRANSLATION_UNAVAILABLE = "translation_unavailable"

# WebSocket close codes. 1xxx are RFC 6455; 4xxx are ours.
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_INTERNAL = 1011
CLOSE_TRY_AGAIN = 1013  # server_full, room_full, too_many_rooms, too_many_connections
CLOSE_BAD_ROOM = 4400
CLOSE_KEY = 4401  # key_required, bad_key
CLOSE_ORIGIN = 4403  # origin_not_allowed
CLOSE_NO_SUCH_ROOM = 4404
CLOSE_SLOW_LISTENER = 4408
CLOSE_SPEAKER_EXISTS = 4409  # speaker_exists, taken_over
CLOSE_IDLE = 4410  # idle_timeout, start_timeout
CLOSE_TOO_LONG = 4413  # lecture_too_long
# Errors after which the server closes a speaker's connection, with the close code.
CLOSING: dict[str, int] = {SERVER_FULL: CLOSE_TRY_AGAIN, SPEAKER_EXISTS: CLOSE_SPEAKER_EXISTS, KEY_REQUIRED: CLOSE_KEY,
                           BAD_KEY: CLOSE_KEY, LECTURE_TOO_LONG: CLOSE_TOO_LONG}
# Close codes after which a client must not reconnect: it would be refused the same way until the room name, the
# key or the server's configuration changes (docs/protocol.md, Close codes). static/protocol.js and the widget's own
# copy in static/widget.js repeat it, and tests/core/test_static.py checks that they agree.
PERMANENT_CLOSES: frozenset[int] = frozenset({CLOSE_BAD_ROOM, CLOSE_KEY, CLOSE_ORIGIN, CLOSE_NO_SUCH_ROOM,
                                              CLOSE_TOO_LONG})
MAX_KEY_CHARS = 200

# The languages Whisper knows (faster_whisper.tokenizer._LANGUAGE_CODES); an unknown one would fail every decode.
LANGUAGES = frozenset("""
af am ar as az ba be bg bn bo br bs ca cs cy da de el en es et eu fa fi fo fr gl gu ha haw he hi hr ht hu hy id is it
ja jw ka kk km kn ko la lb ln lo lt lv mg mi mk ml mn mr ms mt my ne nl nn no oc pa pl ps pt ro ru sa sd si sk sl sn
so sq sr su sv sw ta te tg th tk tl tr tt uk ur uz vi yi yo zh yue
""".split())
ROOM_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
TASKS = ("transcribe", "translate")
MAX_PROMPT_CHARS = 2000


class ProtocolError(Exception):
    """A client mistake with a documented code; the connection normally stays open."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def check_room(name: str, max_len: int) -> str:
    if not name or len(name) > max_len:
        raise ProtocolError(BAD_ROOM, f"room name must be 1-{max_len} characters")
    if not ROOM_RE.fullmatch(name):
        raise ProtocolError(BAD_ROOM, "room name may use letters, digits, '.', '_' and '-' and must start with a "
                                      "letter or digit")
    return name


# ---------------------------------------------------------------- inbound


@dataclass(frozen=True)
class Start:
    language: str | None = None  # None = detect
    task: str = "transcribe"
    prompt: str = ""
    takeover: bool = False  # replace the room's current speaker (needs the speaker key where the room has one)


@dataclass(frozen=True)
class Auth:
    """A room key, sent as the first message by browsers (they cannot set an Authorization header on a
    WebSocket, and a key in the URL would end up in proxy logs)."""

    key: str = field(repr=False)


@dataclass(frozen=True)
class Stop:
    pass


@dataclass(frozen=True)
class Ping:
    id: Any = None


Command = Start | Stop | Ping | Auth


def parse_text(raw: str, max_bytes: int) -> Command:
    """Parse one JSON control message from a client."""
    if len(raw) > max_bytes or len(raw.encode("utf-8", "surrogatepass")) > max_bytes:
        raise ProtocolError(MESSAGE_TOO_LARGE, f"control messages are limited to {max_bytes} bytes")
    try:
        msg = json.loads(raw)
    except (ValueError, RecursionError):
        raise ProtocolError(BAD_JSON, "message is not valid JSON") from None
    if not isinstance(msg, dict):
        raise ProtocolError(BAD_JSON, "message must be a JSON object")
    if "\\u" in raw and not encodable(msg):
        # JSON escapes can spell lone surrogates ("\ud800"): no valid text, and nothing downstream can encode them
        raise ProtocolError(BAD_MESSAGE, "strings must be valid Unicode (a \\u escape spelled a lone surrogate)")
    kind = msg.get("type")
    if kind == "start":
        return _parse_start(msg)
    if kind == "stop":
        return Stop()
    if kind == "ping":
        ident = msg.get("id")
        if ident is not None and (isinstance(ident, bool) or not isinstance(ident, (str, int, float))
                                  or isinstance(ident, float) and not math.isfinite(ident)):
            raise ProtocolError(BAD_MESSAGE, "ping id must be a string or a number")
        return Ping(ident)
    if kind == "auth":
        key = msg.get("key")
        if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY_CHARS:
            raise ProtocolError(BAD_MESSAGE, f"auth needs a 'key' string of 1-{MAX_KEY_CHARS} characters")
        return Auth(key)
    if not isinstance(kind, str):
        raise ProtocolError(BAD_MESSAGE, "message needs a string 'type'")
    raise ProtocolError(UNKNOWN_TYPE, f"unknown message type {kind[:40]!r}")


def encodable(msg: dict[str, Any]) -> bool:
    try:
        return is_unicode(json.dumps(msg, ensure_ascii=False))
    except (RecursionError, ValueError):
        return False


def is_unicode(text: str) -> bool:
    """Whether `text` is encodable, i.e. holds no lone surrogate."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _parse_start(msg: dict[str, Any]) -> Start:
    language = msg.get("language")
    if language is not None and not isinstance(language, str):
        raise ProtocolError(BAD_MESSAGE, "language must be a string such as 'en', or 'auto'")
    if language in ("", "auto"):
        language = None
    if isinstance(language, str):
        language = language.lower().split("-")[0].split("_")[0]  # "en-US" -> "en"
    if language is not None and language not in LANGUAGES:
        raise ProtocolError(BAD_MESSAGE, "language must be 'auto' or a code Whisper knows, such as 'en' or 'de'")
    task = msg.get("task", "transcribe")
    if task not in TASKS:
        raise ProtocolError(BAD_MESSAGE, "task must be 'transcribe' or 'translate'")
    prompt = msg.get("prompt", "")
    if prompt is None:
        prompt = ""
    if not isinstance(prompt, str) or len(prompt) > MAX_PROMPT_CHARS:
        raise ProtocolError(BAD_MESSAGE, f"prompt must be a string of at most {MAX_PROMPT_CHARS} characters")
    rate = msg.get("sample_rate", SAMPLE_RATE)
    if rate != SAMPLE_RATE:
        raise ProtocolError(BAD_MESSAGE, f"audio must be {SAMPLE_RATE} Hz mono s16le (resample on the client)")
    encoding = msg.get("encoding", "s16le")
    if encoding != "s16le":
        raise ProtocolError(BAD_MESSAGE, "encoding must be 's16le'")
    takeover = msg.get("takeover", False)
    if not isinstance(takeover, bool):
        raise ProtocolError(BAD_MESSAGE, "takeover must be true or false")
    return Start(language=language, task=task, prompt=prompt.strip(), takeover=takeover)


def check_audio(frame: bytes, max_bytes: int) -> None:
    """Binary frames: PCM s16le, 16 kHz, mono, whole samples, at most `max_bytes`."""
    if len(frame) > max_bytes:
        raise ProtocolError(FRAME_TOO_LARGE, f"audio frames are limited to {max_bytes} bytes "
                                             f"({max_bytes / BYTES_PER_SAMPLE / SAMPLE_RATE:g} s)")
    if len(frame) % BYTES_PER_SAMPLE:
        raise ProtocolError(BAD_AUDIO, "audio frame length must be a whole number of 16-bit samples")


# ---------------------------------------------------------------- outbound

UNNUMBERED = -1  # the id of a final the room has not numbered yet


@dataclass(frozen=True)
class Event:
    """A server event. `seq` is assigned by the room when the event is published."""

    type: ClassVar[str] = "event"

    def to_dict(self, seq: int) -> dict[str, Any]:
        return {"type": self.type, "seq": seq, **asdict(self)}


@dataclass(frozen=True)
class Word:
    w: str
    start: float
    end: float
    p: float


@dataclass(frozen=True)
class Partial(Event):
    type: ClassVar[str] = "partial"
    utterance: int
    start: float
    committed: str
    unstable: str
    end: float = 0.0  # audio time covered by this hypothesis


@dataclass(frozen=True)
class Final(Event):
    """A committed sentence. Its `id` is the room's to give (ids continue across the room's streams), so the lecture
    state machine makes finals `UNNUMBERED` and `Room.publish` numbers them."""

    type: ClassVar[str] = "final"
    id: int
    utterance: int
    start: float
    end: float
    text: str
    language: str | None = None
    words: list[Word] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Final:
        """A final as it was sent and stored (`to_dict`), typed again."""
        return cls(data["id"], data.get("utterance", 0), data["start"], data["end"], data.get("text", ""),
                   data.get("language"),
                   [Word(w["w"], w["start"], w["end"], w.get("p", 0.0)) for w in data.get("words") or []])


@dataclass(frozen=True)
class Status(Event):
    type: ClassVar[str] = "status"
    state: str  # live | stopped
    speaker: bool = False
    listeners: int = 0
    audio_s: float = 0.0
    lag_s: float = 0.0
    queue: int = 0
    model: str = ""
    llm_tokens: int = 0  # LLM tokens this room has spent on notes, summary and answers
    notes_rejected: int = 0  # LLM notes answers rejected for this room (reasons: realtime_notes_rejected_total)


@dataclass(frozen=True)
class Notes(Event):
    """The lecture's bullet notes at `version`: the full list plus what changed since the previous version."""

    type: ClassVar[str] = "notes"
    version: int
    source: str  # "extractive" (offline ranking) or "llm"
    bullets: list[dict[str, Any]]  # {id, text (Markdown), refs: [final ids], parent: id or null}
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Panel(Event):
    """A study panel beside the captions at `version` (`realtime.notes.panels`: terms, tasks or outline): the full
    list of items plus what changed since the panel's previous version."""

    type: ClassVar[str] = "panel"
    panel: str  # terms | tasks | outline
    version: int
    source: str  # "extractive" (offline) or "llm"
    items: list[dict[str, Any]]  # {id, refs: [final ids], start, ...}; the fields of each panel in docs/protocol.md
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Summary(Event):
    """The end-of-lecture summary, sent after `stop` (and when one is asked for over HTTP)."""

    type: ClassVar[str] = "summary"
    source: str  # "extractive" or "llm"
    finals: int  # how many finals it covers
    markdown: str


@dataclass(frozen=True)
class Translation(Event):
    """A final in one caption language, sent to the listeners who asked for that language. `state` "failed" (an
    LLM error, a spent budget: `reason`) means the original stands untranslated: captions never wait for it."""

    type: ClassVar[str] = "translation"
    final: int  # the final's id
    lang: str
    text: str
    state: str = "done"  # done | failed
    reason: str = ""  # for failed: llm_error, no_budget, invalid_answer


@dataclass(frozen=True)
class Hello(Event):
    type: ClassVar[str] = "hello"
    room: str
    role: str
    protocol: int = PROTOCOL_VERSION
    model: str = ""
    finals: int = 0
    replay: str = "history"  # what follows: history (a fresh join), exact or durable (a resume; see Room.replay)
    translate: str | None = None  # the caption language this connection gets `translation` events in


@dataclass(frozen=True)
class Error(Event):
    type: ClassVar[str] = "error"
    code: str
    message: str


@dataclass(frozen=True)
class Pong(Event):
    type: ClassVar[str] = "pong"
    id: Any = None


def dumps(data: dict[str, Any]) -> str:
    """The one JSON encoding of events, on the wire and in the store: compact, UTF-8 as is."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def encode(event: Event, seq: int) -> str:
    return dumps(event.to_dict(seq))
