"""Hypothesis strategies for tests/e2e/test_fuzz.py, and the message and frame builders they need: control
messages, binary frames, room names and `?since=` for the WebSocket URLs, HTTP requests with bodies, formats and
`Authorization` headers; also the server limits they aim at and the fuzzed rooms and keys."""

from __future__ import annotations

import dataclasses
import json
import random
import urllib.parse
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import strategies as st

from realtime import protocol

MAX_MESSAGE = 65536  # the server's defaults: --max-message-bytes
MAX_FRAME = 32000  # --max-frame-bytes
WS_LIMIT = 4 * max(MAX_MESSAGE, MAX_FRAME)  # aiohttp closes with 1009 at this size or more
ADMIN = "ak_fuzz_" + uuid.uuid4().hex
MAX_ROOM = 64

# The rooms the fuzzer works in (made through the admin API at the start; keys filled in then).
SPEAK, AUDIO, LISTEN, PRIVATE, CLIP = "fuzz-speak", "fuzz-audio", "fuzz-listen", "fuzz-private", "fuzz-clip"
KEYS: dict[str, str] = {"admin": ADMIN, "junk": "sk_" + "0" * 32}
SPEECH: list[bytes] = []  # the English test clips as one s16le buffer (set by the fixture)


# ---------------------------------------------------------------- strategies: WebSocket messages


@dataclass(frozen=True)
class Out:
    """One fuzzed WebSocket message: what it is (for the totals), its payload, in how many fragments it goes."""

    kind: str
    payload: str | bytes
    fragments: int = 1
    tamed: str = ""  # the known bug it was steered away from
    deep: tuple[str, Any] | None = None  # nested deeper than the parser may go: its meaning otherwise

    @property
    def size(self) -> int:
        return len(self.payload) if isinstance(self.payload, bytes) else len(self.payload.encode("utf-8"))

    def parts(self) -> str | bytes | list:
        n = self.fragments
        if n <= 1 or len(self.payload) < n:
            return self.payload
        step = -(-len(self.payload) // n)
        return [self.payload[i:i + step] for i in range(0, len(self.payload), step)]

    def __repr__(self) -> str:
        shown = self.payload if len(self.payload) <= 160 else self.payload[:120]
        more = "" if len(self.payload) <= 160 else f"...({self.size} bytes)"
        frag = f" in {self.fragments} fragments" if self.fragments > 1 else ""
        return f"<{self.kind}{frag} {shown!r}{more}>"


def weighted(*pairs: tuple[int, st.SearchStrategy]) -> st.SearchStrategy:
    return st.sampled_from([s for w, s in pairs for _ in range(w)]).flatmap(lambda s: s)


LONE = ["\ud800", "\udbff", "\udc00", "\udfff"]
SPECIAL = ["", " ", "\x00", "\t\n", "\u2028", "\ufeff", "\U0001f600", "é", "İ", "ﬀ", "null", "true", "start", "stop",
           "ping", "auth", "<script>", "' OR 1=1 --", "%00", "../..", "\\", '"', "{}", "[]", "\ud83d\ude00"]


def has_surrogate(value: Any) -> bool:
    return isinstance(value, str) and any(0xD800 <= ord(c) <= 0xDFFF for c in value)


def texts(max_size: int = 30, surrogates: bool = True) -> st.SearchStrategy[str]:
    """Any text; with `surrogates`, lone surrogates are common (hypothesis's own alphabets make them rare), and
    JSON carries them as escapes."""
    specials = [s for s in SPECIAL if surrogates or not has_surrogate(s)]
    if not surrogates:
        return st.one_of(st.text(st.characters(exclude_categories=("Cs",)), max_size=max_size),
                         st.sampled_from(specials))
    chunk = st.one_of(st.text(st.characters(exclude_categories=()), max_size=8), st.sampled_from(LONE + specials))
    return st.lists(chunk, max_size=4).map(lambda parts: "".join(parts)[:max_size])


SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-2 ** 80, 2 ** 80), st.floats(), texts())
VALUES = st.recursive(SCALARS, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(texts(8), kids, max_size=3),
                      max_leaves=5)
NICE_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)


def sized_string(lo: int, hi: int) -> st.SearchStrategy[str]:
    return st.builds(lambda n, c, pad: pad + c * n + pad, st.integers(lo, hi), st.sampled_from(["x", "é", "😀", " "]),
                     st.sampled_from(["", " ", "\n\t"]))


def key_of(name: str) -> str:
    return KEYS[name]


KEY_VALUES = st.one_of(st.sampled_from(["speak-sk", "admin", "private-vk", "junk"]).map(key_of),
                       texts(40), sized_string(198, 202), VALUES)
GOOD_LANGUAGES = ["en", "EN", "en-US", "en_GB", "de", "zh", "yue", "haw", "auto", "", None]
ODD_LANGUAGES = ["english", "xx", "e", "en-", "-en", "_", "auto ", "AUTO", "zz-ZZ", "en-US-x-private", " en", "\x00"]

VALID_START = st.fixed_dictionaries(
    {"type": st.just("start"), "language": st.sampled_from(["en", "EN", "en-US", "auto", None, ""])},
    optional={"task": st.sampled_from(protocol.TASKS), "prompt": NICE_TEXT, "takeover": st.booleans(),
              "sample_rate": st.just(16000), "encoding": st.just("s16le")})
ODD_START = st.fixed_dictionaries({"type": st.just("start")}, optional={
    "language": st.one_of(st.sampled_from(GOOD_LANGUAGES + ODD_LANGUAGES), texts(), VALUES),
    "task": st.one_of(st.sampled_from(["transcribe", "translate", "Translate", "", None]), VALUES),
    "prompt": st.one_of(texts(60), sized_string(1990, 2010), VALUES),
    "takeover": st.one_of(st.booleans(), VALUES),
    "sample_rate": st.one_of(st.sampled_from([16000, 16000.0, 8000, 44100, "16000", True, None, -1, 1e309]), VALUES),
    "encoding": st.one_of(st.sampled_from(["s16le", "S16LE", "f32le", "pcm", None, ""]), VALUES),
    "extra": VALUES})
STOP = st.fixed_dictionaries({"type": st.just("stop")}, optional={"id": VALUES, "force": VALUES})
PING = st.fixed_dictionaries({"type": st.just("ping")}, optional={"id": st.one_of(
    st.integers(), st.floats(), texts(), VALUES, sized_string(100, 3000),
    st.sampled_from([0, -0.0, 1e308, 2 ** 63, 2 ** 200, True, False, None, "", [], {}]))})
AUTH = st.fixed_dictionaries({"type": st.just("auth")}, optional={"key": KEY_VALUES})
UNKNOWN = st.fixed_dictionaries({"type": st.one_of(st.sampled_from(
    ["START", "Start", " start", "pong", "hello", "error", "status", "subscribe", "", "stop ", "ping\x00"]), texts())},
    optional={"id": VALUES, "language": VALUES})
UNTYPED = st.one_of(st.dictionaries(texts(8), VALUES, max_size=4).filter(lambda d: "type" not in d),
                    st.fixed_dictionaries({"type": VALUES.filter(lambda v: not isinstance(v, str))},
                                          optional={"id": VALUES}))
STYLES = ("compact", "spaced", "indent", "ascii", "type-last", "padded", "bom")
TRICKY = [
    "", " ", "{", "}", "[", "]", "nul", "NaN", "Infinity", "-Infinity", "1e400", '"type"', "true", "\x00", "{}", "[]",
    '\ufeff{"type":"ping"}', "{'type': 'ping'}", '{"type":"ping",}', '{"type":"ping"} {"type":"ping"}',
    '{"type":"stop","type":"ping","id":1}', '{"type":"ping","id":' + "9" * 5000 + "}", '{"type":"ping","id":1e400}',
    '{"type":"ping","id":-Infinity}', '{"type":"ping","id":NaN}', '{"type":"\\u0070ing","id":"esc"}',
    '{"type":"ping","id":"\\ud83d\\ude00"}', '{"type":"ping","id":"\\u0000"}', '{"type":"ping","id":"\\x41"}',
    '{"type":"ping"}\x00', '{"type":"ping","id":01}', '{"type":"ping","id":.5}', '{"type":"ping","id":1.}',
    '{"type":"auth","key":"\\udc80"}', '{"type":"start","language":"\\ud800"}', '{"type":"\\udfff"}',
    '{"type": "start", "language": "en", "prompt": "\\u0000"}', '{"type":"ping","id":"' + "\\\\" * 100 + '"}',
]


def roundtrip(value: Any) -> Any:
    """A value as it comes back through JSON (a float stays a float, -0.0 == 0.0)."""
    return json.loads(json.dumps(value))


def dump(obj: Any, style: str) -> str:
    if style == "type-last" and isinstance(obj, dict) and "type" in obj:
        obj = {**{k: v for k, v in obj.items() if k != "type"}, "type": obj["type"]}
    kw: dict[str, Any] = {"ensure_ascii": style == "ascii"}
    if style == "compact":
        kw["separators"] = (",", ":")
    elif style == "indent":
        kw["indent"] = 2
    text = json.dumps(obj, **kw)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates cannot go in a text frame: send them as JSON escapes
        text = json.dumps(obj, **{**kw, "ensure_ascii": True})
    if style == "padded":
        text = " \n\t" + text + "\r\n "
    elif style == "bom":
        text = "\ufeff" + text
    return text


def json_message(kind: str, objects: st.SearchStrategy) -> st.SearchStrategy[Out]:
    def build(obj: Any, style: str, fragments: int) -> Out:
        return Out(kind, dump(obj, style), fragments, "")
    return st.builds(build, objects, st.sampled_from(STYLES), st.sampled_from([1] * 12 + [2, 3, 7]))


def nested(depth: int, where: str) -> Out:
    """JSON nested `depth` levels deep; from 300 levels on, with its meaning had the parser no recursion limit."""
    inner = {"list": "[" * depth + "]" * depth, "dict": '{"a":' * depth + "0" + "}" * depth,
             "mixed": '[{"b":' * depth + "1" + "}]" * depth}
    if where.startswith("ping-"):
        text, meaning = '{"type":"ping","id":' + inner[where[5:]] + "}", ("error", protocol.BAD_MESSAGE)
    elif where.startswith("field-"):
        text, meaning = '{"type":"ping","id":"deep","x":' + inner[where[6:]] + "}", ("pong", "deep")
    else:
        text = inner[where]
        meaning = ("error", protocol.BAD_MESSAGE if where == "dict" else protocol.BAD_JSON)
    return Out("deep-json", text, deep=meaning if depth >= 300 else None)


DEEP = st.builds(nested,
                 st.one_of(st.integers(1, 1200), st.sampled_from([999, 1000, 1001, 5000, 20000, 32767, 40000])),
                 st.sampled_from(["list", "dict", "mixed", "ping-list", "ping-dict", "field-list", "field-mixed"]))

SIZE_TARGETS = st.one_of(st.integers(MAX_MESSAGE - 8, MAX_MESSAGE + 8), st.sampled_from(
    [1024, 1025, 70000, 100000, 200000, WS_LIMIT - 1, WS_LIMIT, WS_LIMIT + 1, 300000]))
SIZE_BASES = {"ping-id": ('{"type":"ping","id":"', '"}'),
              "prompt": ('{"type":"start","language":"en","prompt":"', '"}'),
              "field": ('{"type":"ping","id":"sized","pad":"', '"}'), "key": ('{"type":"auth","key":"', '"}'),
              "raw": ("", "")}


def sized_message(target: int, filler: str, base: str) -> Out:
    """A message of exactly `target` bytes of UTF-8 (multi-byte fillers topped up with ASCII)."""
    prefix, suffix = SIZE_BASES[base]
    room = max(0, target - len(prefix.encode()) - len(suffix.encode()))
    fill = filler * (room // len(filler.encode()))
    fill += "x" * (room - len(fill.encode()))
    return Out(f"sized-{base}", prefix + fill + suffix)


SIZED = st.builds(sized_message, SIZE_TARGETS, st.sampled_from(["x", "é", "€", "😀", " "]), st.sampled_from(
    list(SIZE_BASES)))
INVALID = st.one_of(st.builds(lambda t: Out("invalid-json", t), st.one_of(texts(80, surrogates=False),
                                                                          st.sampled_from(TRICKY))),
                    st.builds(lambda o, cut: Out("truncated-json", dump(o, "compact")[:cut]),
                              st.one_of(VALID_START, PING, AUTH), st.integers(0, 40)))

TEXT_MESSAGE = weighted(
    (14, json_message("start", VALID_START)), (16, json_message("odd-start", ODD_START)),
    (10, json_message("stop", STOP)), (14, json_message("ping", PING)), (7, json_message("auth", AUTH)),
    (6, json_message("unknown-type", UNKNOWN)), (5, json_message("untyped", UNTYPED)),
    (5, json_message("non-object", VALUES.filter(lambda v: not isinstance(v, dict)))),
    (10, INVALID), (4, DEEP), (4, SIZED))


def frame(length: int, content: str, salt: int) -> Out:
    if content == "zeros":
        data = bytes(length)
    elif content == "random":
        data = random.Random(salt).randbytes(length)
    elif content == "speech" and SPEECH:  # a slice of the test clips: the stream gets something to decode
        start = salt * 2 % len(SPEECH[0])
        data = (SPEECH[0][start:] + SPEECH[0])[:length]
    elif content == "tone":
        t = np.arange(length // 2 + 1) / 16000
        data = (np.sin(2 * np.pi * (100 + salt % 2000) * t) * (salt % 20000)).astype("<i2").tobytes()[:length]
    else:
        data = (bytes([salt % 256, (salt >> 8) % 256, 0, 255]) * (length // 4 + 1))[:length]
    return Out(f"frame-{content}", data)


FRAME_LENGTHS = weighted(
    (15, st.integers(0, 16)), (30, st.integers(17, 4000)), (10, st.sampled_from([3199, 3200, 3201, 6400, 9600])),
    (15, st.integers(MAX_FRAME - 10, MAX_FRAME + 10)), (12, st.integers(MAX_FRAME + 11, 70000)),
    (5, st.integers(WS_LIMIT - 3, WS_LIMIT + 3)), (3, st.integers(300_000, 1_200_000)))
FRAME = st.builds(lambda n, c, s, f: dataclasses.replace(frame(n, c, s), fragments=f), FRAME_LENGTHS,
                  st.sampled_from(["zeros", "zeros", "random", "tone", "pattern", "speech"]), st.integers(0, 2 ** 32),
                  st.sampled_from([1] * 12 + [2, 5]))

SPEAKER_VARIANT = st.tuples(st.sampled_from(["speak-sk"] * 6 + ["admin", "none", "none", "junk", "junk", "private-vk"]),
                            st.sampled_from([False] * 7 + [True] * 3))
LISTENER_VARIANT = st.tuples(
    st.sampled_from(["public"] * 5 + ["private-header", "private-auth", "private-none", "private-junk"]),
    st.sampled_from(["none", "none", "junk", "private-vk", "speak-sk"]), st.sampled_from([False] * 7 + [True] * 3))

SPEAKER_EXAMPLE = st.fixed_dictionaries({
    "reopen": weighted((3, st.none()), (1, st.tuples(st.sampled_from([0, 1]), SPEAKER_VARIANT))),
    "batch": st.lists(st.tuples(st.sampled_from([0, 0, 1]), TEXT_MESSAGE), min_size=1, max_size=8)})
LISTENER_EXAMPLE = st.fixed_dictionaries({
    "reopen": weighted((4, st.none()), (1, LISTENER_VARIANT)),
    "batch": st.lists(weighted((9, TEXT_MESSAGE), (1, FRAME)), min_size=1, max_size=8)})
BINARY_EXAMPLE = st.fixed_dictionaries({
    "reopen": weighted((3, st.none()), (1, st.booleans())),  # True: reopen with permessage-deflate
    "batch": st.lists(weighted((55, st.tuples(st.just(0), FRAME)), (15, st.tuples(st.just(1), FRAME)),
                               (12, st.tuples(st.just(0), json_message("start", VALID_START))),
                               (8, st.tuples(st.just(0), json_message("stop", STOP))),
                               (10, st.tuples(st.sampled_from([0, 1]), TEXT_MESSAGE))), min_size=1, max_size=8)})

# ---------------------------------------------------------------- strategies: URLs and HTTP


@dataclass(frozen=True)
class Name:
    """A room name as it goes in a URL path (`segment`, percent-encoded) and as the server decodes it (`name`;
    None when it is not valid UTF-8, so its decoding is not predictable)."""

    segment: str
    name: str | None


def encode_name(name: str) -> Name:
    return Name(urllib.parse.quote(name, safe=""), name)


def encode_bytes(raw: bytes) -> Name:
    try:
        return Name("".join(f"%{b:02X}" for b in raw), raw.decode("utf-8"))
    except UnicodeDecodeError:
        return Name("".join(f"%{b:02X}" for b in raw), None)


NAMES = weighted(
    (6, st.sampled_from([SPEAK, AUDIO, LISTEN, PRIVATE]).map(encode_name)),
    (4, st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,70}", fullmatch=True).map(encode_name)),
    (3, texts(40, surrogates=False).map(encode_name)),
    (1, st.binary(max_size=12).map(encode_bytes)),
    (1, st.sampled_from(["a" * 64, "a" * 65, "a" * 200, "x" * 1000, ".", "..", "a/b", "%", "%41", "-a", "a b", "Ä",
                         "fuzz-speak/", "fuzz-speak?x=1", "FUZZ-SPEAK", "fuzz-speak%00"]).map(encode_name)))
SINCE = st.one_of(st.none(), st.none(), st.integers(-10, 10 ** 20).map(str), texts(12, surrogates=False),
                  st.sampled_from(["", " 5 ", "1_000", "1.5", "1e3", "0x10", "٣", "+7", "-0", "9" * 5000, "5#x"]))
AUTH_HEADERS = st.sampled_from(["none", "none", "admin", "private-vk", "speak-sk", "junk", "bearer-junk", "empty",
                                "lower-admin", "basic", "bearer-only"])
URL_PROBE = st.tuples(st.sampled_from(["speak", "listen", "listen"]), NAMES, SINCE, AUTH_HEADERS,
                      st.sampled_from([False] * 4 + [True]))


ODD_HEADERS = {"none": None, "bearer-junk": "Bearer ¿?", "empty": "", "lower-admin": f"bearer   {ADMIN}  ",
               "basic": "Basic dXNlcjpwYXNz", "bearer-only": "Bearer"}


def auth_header(kind: str) -> dict[str, str]:
    """An Authorization header: a key of KEYS as `Bearer <key>`, or one of ODD_HEADERS."""
    value = ODD_HEADERS[kind] if kind in ODD_HEADERS else f"Bearer {KEYS[kind]}"
    return {} if value is None else {"Authorization": value.encode("utf-8").decode("latin-1")}


@dataclass(frozen=True)
class Req:
    kind: str
    method: str
    path: str  # percent-encoded
    auth: str
    name: Name | None = None
    body: bytes | None = None
    content_type: str | None = None
    format: str | None = None
    tamed: str = ""

    def __repr__(self) -> str:
        body = "" if self.body is None else f" body={self.body[:200]!r}" + (
            f"...({len(self.body)} bytes)" if len(self.body) > 200 else "")
        return f"<{self.method} {self.path[:200]} auth={self.auth} ct={self.content_type!r}{body}>"


CONTENT_TYPES = st.one_of(st.sampled_from([
    None, None, "application/json", "application/json; charset=utf-8", "application/json; charset=UTF-8",
    "application/json; charset=latin-1", "application/json; charset=utf-16", "text/plain", "multipart/form-data",
    "application/x-www-form-urlencoded", "application/json; charset=", "application/json;;", "*/*",
    "application/json; charset=bogus", "application/json; charset=rot13"]),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40))
CREATE_BODY = st.fixed_dictionaries({}, optional={
    "title": st.one_of(texts(50), sized_string(198, 202), VALUES),
    "room": st.one_of(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,70}", fullmatch=True), texts(20), VALUES),
    "private": st.one_of(st.booleans(), VALUES)})
ASK_BODY = st.fixed_dictionaries({}, optional={
    "question": st.one_of(texts(100), sized_string(995, 1005), st.sampled_from(["   ", "\n", "what is a cell?"]),
                          VALUES), "extra": VALUES})


def body_of(objects: st.SearchStrategy) -> st.SearchStrategy[bytes]:
    return weighted(
        (6, objects.map(lambda o: dump(o, "ascii").encode())),
        (2, VALUES.map(lambda o: dump(o, "compact").encode("utf-8", "surrogatepass"))),
        (2, st.one_of(st.binary(max_size=200), texts(100, surrogates=False).map(str.encode),
                      st.sampled_from([b"", b"{", b"null", b"\xff\xfe{}", b'{"title": "x"}' + b"\x00"]))),
        (1, st.integers(1 << 20, (1 << 20) + 4096).map(lambda n: b'{"title":"' + b"x" * n + b'"}')))


def build_req(kind: str, method: str, name: Name | None, auth: str, body: bytes | None = None,
              content_type: str | None = None, fmt: str | None = None, suffix: str = "") -> Req:
    path = "/v1/rooms" + (f"/{name.segment}" if name is not None else "") + suffix
    if fmt is not None:
        path += "?format=" + urllib.parse.quote(fmt, safe="")
    return Req(kind, method, path, auth, name, body, content_type, fmt)


FORMATS = st.one_of(st.none(), st.sampled_from(["txt", "srt", "vtt", "json", "md", "TXT", "pdf", "", "txt ",
                                                "json\x00", "md/../txt"]), texts(10, surrogates=False))
HTTP_REQUEST = weighted(
    (25, st.builds(lambda a, b, ct: build_req("create", "POST", None, a, b, ct), st.sampled_from(
        ["admin"] * 6 + ["none", "junk", "private-vk", "lower-admin"]), body_of(CREATE_BODY), CONTENT_TYPES)),
    (20, st.builds(lambda n, a, b, ct: build_req("ask", "POST", n, a, b, ct, suffix="/ask"), NAMES, AUTH_HEADERS,
                   body_of(ASK_BODY), CONTENT_TYPES)),
    (10, st.builds(lambda n, a, m, b: build_req("summary", m, n, a, b if m == "POST" else None, suffix="/summary"),
                   NAMES, AUTH_HEADERS, st.sampled_from(["GET", "POST"]), st.none() | st.binary(max_size=50))),
    (15, st.builds(lambda n, a, f: build_req("export", "GET", n, a, fmt=f, suffix="/export"), NAMES, AUTH_HEADERS,
                   FORMATS)),
    (8, st.builds(lambda n, a: build_req("transcript", "GET", n, a, suffix="/transcript"), NAMES, AUTH_HEADERS)),
    (7, st.builds(lambda n, a: build_req("delete", "DELETE", n, a),
                  NAMES.filter(lambda n: n.name not in (SPEAK, AUDIO, LISTEN, PRIVATE, CLIP)),
                  st.sampled_from(["admin"] * 4 + ["junk", "none"]))),
    (5, st.builds(lambda a: build_req("list", "GET", None, a), AUTH_HEADERS)),
    (5, st.builds(lambda n, m, s: build_req("method", m, n, "admin", suffix=s), NAMES,
                  st.sampled_from(["PUT", "PATCH", "GET"]), st.sampled_from(["/ask", "/export/x", "/summary/"]))),
    (5, st.builds(lambda p: Req("misc", "GET", p, "none"), st.one_of(
        st.sampled_from(["/healthz", "/metrics", "/healthz?ready=1", "/v1/rooms?x=%FF", "/v1"]),
        texts(10, surrogates=False).map(lambda t: "/healthz?ready=" + urllib.parse.quote(t, safe=""))))))
