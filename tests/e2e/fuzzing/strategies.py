"""Hypothesis strategies for tests/e2e/test_fuzz.py, and the message and frame builders they need: control
messages, binary frames, room names and `?since=` for the WebSocket URLs, HTTP requests with bodies and their
Content-Type, formats, `Authorization`, `Host`, `Origin` and forwarded client addresses (each labelled with what
docs/protocol.md says of it), pages and CORS preflights; also the server limits they aim at and the fuzzed rooms
and keys."""

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

from realtime.core import protocol

MAX_MESSAGE = 65536  # the server's defaults: --max-message-bytes
MAX_FRAME = 32000  # --max-frame-bytes
WS_LIMIT = 4 * max(MAX_MESSAGE, MAX_FRAME)  # aiohttp closes with 1009 at this size or more
ADMIN = "ak_fuzz_" + uuid.uuid4().hex
MAX_ROOM = 64

# The rooms the fuzzer works in (made through the admin API at the start; keys filled in then).
SPEAK, AUDIO, LISTEN, PRIVATE, CLIP = "fuzz-speak", "fuzz-audio", "fuzz-listen", "fuzz-private", "fuzz-clip"
KEYS: dict[str, str] = {"admin": ADMIN, "junk": "sk_" + "0" * 32}  # the room keys are added by the harness
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

# "exhaust": before the batch, the harness sends wrong keys from the category's client address until it is
# throttled (Fuzz.exhaust), so that keys sent on WebSockets meet the throttle.
EXHAUST = st.sampled_from([False] * 7 + [True])
SPEAKER_EXAMPLE = st.fixed_dictionaries({
    "exhaust": EXHAUST,
    "reopen": weighted((3, st.none()), (1, st.tuples(st.sampled_from([0, 1]), SPEAKER_VARIANT))),
    "batch": st.lists(st.tuples(st.sampled_from([0, 0, 1]), TEXT_MESSAGE), min_size=1, max_size=8)})
LISTENER_EXAMPLE = st.fixed_dictionaries({
    "exhaust": EXHAUST,
    "reopen": weighted((4, st.none()), (1, LISTENER_VARIANT)),
    "batch": st.lists(weighted((9, TEXT_MESSAGE), (1, FRAME)), min_size=1, max_size=8)})
BINARY_EXAMPLE = st.fixed_dictionaries({
    "exhaust": EXHAUST,
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


FUZZ_ROOMS = (SPEAK, AUDIO, LISTEN, PRIVATE, CLIP)
NAMES = weighted(
    (6, st.sampled_from([SPEAK, AUDIO, LISTEN, PRIVATE]).map(encode_name)),
    (4, st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,70}", fullmatch=True).map(encode_name)),
    (3, texts(40, surrogates=False).map(encode_name)),
    (1, st.binary(max_size=12).map(encode_bytes)),
    (1, st.sampled_from(["a" * 64, "a" * 65, "a" * 200, "x" * 1000, ".", "..", "a/b", "%", "%41", "-a", "a b", "Ä",
                         "fuzz-speak/", "fuzz-speak?x=1", "FUZZ-SPEAK", "fuzz-speak%00"]).map(encode_name)))
# Room names for the HTTP API's room endpoints: mostly the fuzz rooms, so that requests get past the 404.
ROOM_NAMES = weighted((3, st.sampled_from(FUZZ_ROOMS).map(encode_name)), (2, NAMES))
SINCE = st.one_of(st.none(), st.none(), st.integers(-10, 10 ** 20).map(str), texts(12, surrogates=False),
                  st.sampled_from(["", " 5 ", "1_000", "1.5", "1e3", "0x10", "٣", "+7", "-0", "9" * 5000, "5#x"]))
AUTH_HEADERS = st.sampled_from(["none", "none", "admin", "private-vk", "speak-sk", "junk", "bearer-junk", "empty",
                                "lower-admin", "basic", "bearer-only"])
# The keys of the fuzz rooms a request may carry: KEYS names them once setup has made the rooms.
ROOM_AUTH = st.sampled_from(["none", "none", "admin", "admin", "speak-sk", "audio-sk", "private-sk", "private-vk",
                             "junk", "lower-admin", "bearer-only"])

# ---------------------------------------------------------------- strategies: Host, Origin and client address

PUBLIC_URL = "http://fuzz.example"  # the fuzz server's --public-url
ALLOWED_ORIGIN = "https://widget.example.edu"  # ... and its --allowed-origins

# `Host` headers, with whether docs/protocol.md ("Host names") says a server with --public-url answers them: the
# loopback names (`localhost`, `127.*`, `[::1]`, any port) and the public URL's host; anything else is 421
# `bad_host`. `{port}` is the server's port; "default" is the Host the client sets itself (127.0.0.1:{port}).
# Names whose verdict the document leaves open (a trailing dot, `127.1`, user info, a port that is not a number,
# an IPv4-mapped ::1) are not drawn. Garbage hosts ("garbage:<text>") are drawn from characters that cannot
# spell a loopback name or the public host.
HOSTS: dict[str, tuple[str | None, bool]] = {
    "default": (None, True),
    "ip": ("127.0.0.1:{port}", True),
    "ip-no-port": ("127.0.0.1", True),
    "loopback-other": ("127.45.6.7:{port}", True),
    "localhost": ("localhost:{port}", True),
    "localhost-case": ("LocalHost:{port}", True),
    "v6-loopback": ("[::1]:{port}", True),
    "public": ("fuzz.example", True),
    "public-case-port": ("FUZZ.example:80", True),
    "public-other-port": ("fuzz.example:8443", True),
    "foreign": ("evil.example", False),
    "foreign-port": ("evil.example:{port}", False),
    "public-suffix": ("fuzz.example.evil.example", False),
    "public-prefix": ("evil-fuzz.example", False),
    "localhost-suffix": ("localhost.evil.example:{port}", False),
    "lan-ip": ("192.168.1.20:{port}", False),
    "any-ip": ("0.0.0.0:{port}", False),
    "v6-other": ("[::2]:{port}", False),
    "ten": ("10.0.0.1", False),
    "v6-unclosed": ("[::1", False),
    "empty": ("", False),
}
GARBAGE_HOST = st.text(alphabet="0123456789!$&'()*+,;=~-_%^|`<> ", min_size=1, max_size=20)
HOST = weighted((18, st.just("default")), (9, st.sampled_from(sorted(set(HOSTS) - {"default"}))),
                (1, GARBAGE_HOST.map(lambda t: "garbage:" + t)))


def host_header(label: str, port: int) -> str | None:
    """The `Host` value a label stands for (None: the client's own)."""
    if label.startswith("garbage:"):
        return label[len("garbage:"):]
    template = HOSTS[label][0]
    return None if template is None else template.replace("{port}", str(port))


def host_answered(label: str) -> bool:
    return not label.startswith("garbage:") and HOSTS[label][1]


# `Origin` headers: (value, allowed, cross-origin). Allowed (docs/protocol.md "Origins"): none, the server's own
# (the host and port of the request's `Host`, any scheme), or one in --allowed-origins (compared as an origin:
# scheme, host and port, case-insensitively, default port dropped). Cross-origin: allowed and not our own, i.e.
# HTTP answers carry Access-Control-Allow-Origin and preflights are answered. `{host}` is the Host value sent.
ORIGINS: dict[str, tuple[str | None, bool, bool]] = {
    "none": (None, True, False),
    "own": ("http://{host}", True, False),
    "own-https": ("https://{host}", True, False),
    "allowed": (ALLOWED_ORIGIN, True, True),
    "allowed-case": ("HTTPS://Widget.Example.EDU:443", True, True),
    "allowed-http": ("http://widget.example.edu", False, False),
    "allowed-port": ("https://widget.example.edu:8443", False, False),
    "allowed-suffix": ("https://widget.example.edu.evil.example", False, False),
    "allowed-userinfo": ("https://widget.example.edu@evil.example", False, False),
    "other-port": ("http://127.0.0.1:1", False, False),
    "foreign": ("https://evil.example", False, False),
    "null": ("null", False, False),
    "garbage": ("not an origin", False, False),
    "star": ("*", False, False),
    "no-host": ("https://", False, False),
    "script": ("javascript:alert(1)", False, False),
}
ORIGIN = weighted((16, st.just("none")), (4, st.just("own")), (1, st.just("own-https")), (3, st.just("allowed")),
                  (1, st.just("allowed-case")), (5, st.sampled_from(sorted(k for k, v in ORIGINS.items() if not v[1]))))
PREFLIGHT_ORIGIN = weighted((6, st.sampled_from(["allowed", "allowed-case"])), (3, st.sampled_from(sorted(ORIGINS))))


def origin_header(label: str, host: str) -> str | None:
    template = ORIGINS[label][0]
    return None if template is None else template.replace("{host}", host)


# Who the server takes a request to be from (per-client limits): the fuzzer's own address, or, as the server
# trusts a proxy on loopback, the address in its X-Forwarded-For or X-Real-IP header (label: (header, how its value
# is made from the address, the first address)). "admin-desk" only ever sends the admin key. The proxied ones move
# to a new address once theirs has been throttled for a while (`Fuzz.http_addresses`): any key from a throttled
# address is refused, which would leave most of the HTTP fuzzing at 429.
CLIENTS: dict[str, tuple[str | None, str, str]] = {
    "local": (None, "", "127.0.0.1"),
    "proxy-a": ("X-Forwarded-For", "{}", "203.0.113.7"),
    "proxy-b": ("X-Real-IP", "{}", "198.51.100.23"),
    "admin-desk": ("X-Forwarded-For", "10.9.8.7, {}", "192.0.2.10"),
}


def client_headers(label: str, address: str) -> dict[str, str]:
    header, value, _ = CLIENTS[label]
    return {} if header is None else {header: value.format(address)}


CLIENT = st.sampled_from(["local"] * 3 + ["proxy-a"] * 2 + ["proxy-b"] * 2)
ADMIN_CLIENT = st.sampled_from([None, None, "admin-desk"])

URL_PROBE = st.tuples(st.sampled_from(["speak", "listen", "listen"]), NAMES, SINCE, AUTH_HEADERS,
                      st.sampled_from([False] * 4 + [True]), HOST, ORIGIN, EXHAUST)


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
    host: str = "default"  # a label of HOSTS, or "garbage:<value>"
    origin: str = "none"  # a label of ORIGINS
    client: str = "local"  # a label of CLIENTS
    acrm: str | None = None  # Access-Control-Request-Method (preflights)

    def __repr__(self) -> str:
        body = "" if self.body is None else f" body={self.body[:200]!r}" + (
            f"...({len(self.body)} bytes)" if len(self.body) > 200 else "")
        extra = "".join(f" {k}={v!r}" for k, v in (("host", self.host), ("origin", self.origin),
                                                     ("client", self.client), ("acrm", self.acrm))
                        if v not in ("default", "none", "local", None))
        return f"<{self.method} {self.path[:200]} auth={self.auth} ct={self.content_type!r}{extra}{body}>"


# Content-Type values whose media type is application/json (case-insensitive, parameters allowed), with the charset
# the body is then decoded with (None: UTF-8); any other value is 415. Random values never contain "json".
JSON_TYPES: dict[str, str | None] = {
    "application/json": None, "application/json; charset=utf-8": "utf-8", "application/json; charset=UTF-8": "UTF-8",
    "APPLICATION/JSON": None, "Application/Json; charset=UTF-8": "UTF-8", "application/json ; charset=utf-8": "utf-8",
    "application/json;charset=utf-8": "utf-8", "application/json;;": None, "application/json; charset=": None,
    'application/json; charset="utf-8"': "utf-8", "application/json; charset=latin-1": "latin-1",
    "application/json; charset=utf-16": "utf-16", "application/json; charset=bogus": "bogus",
    "application/json; charset=rot13": "rot13", "application/json; charset=utf-8; x=y": "utf-8",
}
OTHER_TYPES = ["text/plain", "text/plain; charset=utf-8", "multipart/form-data", "application/x-www-form-urlencoded",
               "*/*", "", "application/jsonx", "application/json-patch+json", "application/vnd.api+json", "text/json",
               "application/x-json", "application/json,text/plain", "application/json (comment)",
               "application/octet-stream"]
CONTENT_TYPES = weighted(
    (10, st.just("application/json")), (6, st.sampled_from(list(JSON_TYPES))), (2, st.none()),
    (4, st.sampled_from(OTHER_TYPES)),
    (1, st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40).filter(
        lambda t: "json" not in t.lower())))
ASK_VALUES = st.one_of(st.sampled_from(["anyone", "viewers", "nobody"] * 3 + ["Anyone", "", "everyone", "none"]),
                       VALUES)
POLICY = st.sampled_from(["anyone", "viewers", "nobody"])
ROOM_NAME = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,70}", fullmatch=True)
GOOD_CREATE = st.fixed_dictionaries({"title": st.one_of(st.sampled_from(["Physics 101", "Bio 2 (Dr. Müller)"]),
                                                        NICE_TEXT)},
                                    optional={"room": st.one_of(ROOM_NAME, st.sampled_from(FUZZ_ROOMS)),
                                              "private": st.booleans(), "ask": POLICY})
ODD_CREATE = st.fixed_dictionaries({}, optional={
    "title": st.one_of(texts(50), sized_string(198, 202), VALUES, st.sampled_from(["Physics 101", "  x  "])),
    "room": st.one_of(ROOM_NAME, texts(20), VALUES,
                      st.sampled_from(list(FUZZ_ROOMS) + ["fuzz-made", "FUZZ-SPEAK", "a" * 64, "a" * 65])),
    "private": st.one_of(st.booleans(), VALUES),
    "ask": ASK_VALUES})
CREATE_BODY = weighted((3, GOOD_CREATE), (2, ODD_CREATE))
ASK_BODY = weighted(
    (3, st.fixed_dictionaries({"question": st.one_of(st.sampled_from(["what is a cell?", "when is the exam?"]),
                                                     NICE_TEXT)})),
    (2, st.fixed_dictionaries({}, optional={
        "question": st.one_of(texts(100), sized_string(495, 505), st.sampled_from(["   ", "\n", "what is a cell?"]),
                              VALUES), "extra": VALUES})))
PATCH_BODY = weighted((3, st.fixed_dictionaries({"ask": POLICY})),
                      (2, st.fixed_dictionaries({}, optional={"ask": ASK_VALUES, "title": VALUES})))

def nested_body(depth: int, shape: str) -> bytes:
    """JSON nested `depth` levels deep (deeper than the server's parser recurses: 400 `bad_message`)."""
    inner = {"list": "[" * depth + "]" * depth, "dict": '{"a":' * depth + "0" + "}" * depth}
    return {"list": inner["list"], "dict": inner["dict"], "question": '{"question":' + inner["list"] + "}",
            "title": '{"title":"x","private":' + inner["dict"] + "}", "ask": '{"ask":' + inner["list"] + "}"}[
        shape].encode()


def padded_body(size: int) -> bytes:
    """A JSON object of exactly `size` bytes (around --client_max_size, 1 MiB: more is 413)."""
    head = b'{"question":"what?","title":"x","pad":"'
    return head + b"x" * (size - len(head) - 2) + b'"}'


def body_of(objects: st.SearchStrategy) -> st.SearchStrategy[bytes]:
    return weighted(
        (6, objects.map(lambda o: dump(o, "ascii").encode())),
        (2, objects.map(lambda o: dump(o, "compact").encode("utf-8", "surrogatepass"))),
        (2, VALUES.map(lambda o: dump(o, "compact").encode("utf-8", "surrogatepass"))),
        (2, st.one_of(st.binary(max_size=200), texts(100, surrogates=False).map(str.encode),
                      st.sampled_from([b"", b"{", b"null", b"\xff\xfe{}", b'{"title": "x"}' + b"\x00",
                                       b'\xef\xbb\xbf{"title": "x"}', b'{"title": "x"} {}']))),
        (1, st.builds(nested_body, st.one_of(st.integers(1, 3000), st.sampled_from([999, 1000, 5000, 100000])),
                      st.sampled_from(["list", "dict", "question", "title", "ask"]))),
        (1, st.one_of(st.integers((1 << 20) - 2, (1 << 20) + 2), st.integers((1 << 20) + 3, (1 << 20) + 4096)).map(
            padded_body)))


def build_req(kind: str, method: str, name: Name | None, auth: str, body: bytes | None = None,
              content_type: str | None = None, fmt: str | None = None, suffix: str = "") -> Req:
    path = "/v1/rooms" + (f"/{name.segment}" if name is not None else "") + suffix
    if fmt is not None:
        path += "?format=" + urllib.parse.quote(fmt, safe="")
    return Req(kind, method, path, auth, name, body, content_type, fmt)


def with_headers(requests: st.SearchStrategy[Req], origin: st.SearchStrategy[str] = ORIGIN) -> st.SearchStrategy[Req]:
    """The Host, Origin and client-address dimensions, drawn for every kind of request."""
    def build(r: Req, h: str, o: str, c: str, desk: str | None) -> Req:
        return dataclasses.replace(r, host=h, origin=o, client=desk if desk and r.auth in ("admin", "lower-admin")
                                   else c)
    return st.builds(build, requests, HOST, origin, CLIENT, ADMIN_CLIENT)


# OPTIONS requests: the paths, and whether the router has a route there (405 Method Not Allowed) or not (404).
PREFLIGHT_PATHS = {"/v1/rooms": True, f"/v1/rooms/{LISTEN}/ask": True, f"/v1/rooms/{PRIVATE}": True,
                   f"/v1/rooms/{SPEAK}/summary": True, f"/v1/rooms/{LISTEN}/export": True, "/healthz": True,
                   "/": True, "/nowhere": False, "/v1/rooms/a/b/c": False}
PAGE_PATHS = ["/", "/speak", "/static/widget.js"]

FORMATS = st.one_of(st.none(), st.sampled_from(["txt", "srt", "vtt", "json", "md", "TXT", "pdf", "", "txt ",
                                                "json\x00", "md/../txt"]), texts(10, surrogates=False))
HTTP_REQUEST = with_headers(weighted(
    (18, st.builds(lambda a, b, ct: build_req("create", "POST", None, a, b, ct), st.sampled_from(
        ["admin"] * 6 + ["none", "junk", "private-vk", "lower-admin", "speak-sk"]), body_of(CREATE_BODY),
        CONTENT_TYPES)),
    (16, st.builds(lambda n, a, b, ct: build_req("ask", "POST", n, a, b, ct, suffix="/ask"), ROOM_NAMES, ROOM_AUTH,
                   body_of(ASK_BODY), CONTENT_TYPES)),
    (10, st.builds(lambda n, a, m, b, ct: build_req("summary", m, n, a, b if m == "POST" else None,
                                                    ct if m == "POST" else None, suffix="/summary"),
                   ROOM_NAMES, ROOM_AUTH, st.sampled_from(["GET", "POST"]), st.none() | st.binary(max_size=50),
                   st.none() | CONTENT_TYPES)),
    (10, st.builds(lambda n, a, b, ct: build_req("patch", "PATCH", n, a, b, ct), ROOM_NAMES, ROOM_AUTH,
                   body_of(PATCH_BODY), CONTENT_TYPES)),
    (10, st.builds(lambda n, a, f: build_req("export", "GET", n, a, fmt=f, suffix="/export"), ROOM_NAMES, AUTH_HEADERS,
                   FORMATS)),
    (6, st.builds(lambda n, a: build_req("transcript", "GET", n, a, suffix="/transcript"), ROOM_NAMES, ROOM_AUTH)),
    (6, st.builds(lambda n, a: build_req("delete", "DELETE", n, a),
                  NAMES.filter(lambda n: n.name not in FUZZ_ROOMS),
                  st.sampled_from(["admin"] * 4 + ["junk", "none", "speak-sk"]))),
    (5, st.builds(lambda a: build_req("list", "GET", None, a), AUTH_HEADERS)),
    (3, st.builds(lambda n, m, s: build_req("method", m, n, "admin", suffix=s), NAMES,
                  st.sampled_from(["PUT", "PATCH", "GET"]), st.sampled_from(["/ask", "/export/x", "/summary/"]))),
    (6, st.builds(lambda p, a: Req("misc", "GET", p, a), st.one_of(
        st.sampled_from(["/healthz", "/metrics", "/healthz?ready=1", "/v1/rooms?x=%FF", "/v1"]),
        texts(10, surrogates=False).map(lambda t: "/healthz?ready=" + urllib.parse.quote(t, safe=""))),
        st.sampled_from(["none", "none", "admin", "admin", "junk", "lower-admin", "bearer-junk", "speak-sk"]))),
    (4, st.builds(lambda p, n, q: Req("page", "GET", p + (f"?room={n.segment}" if q and p != PAGE_PATHS[2] else ""),
                                      "none"),
                  st.sampled_from(PAGE_PATHS), NAMES, st.booleans()))))
PREFLIGHT = with_headers(st.builds(lambda p, m: Req("preflight", "OPTIONS", p, "none", acrm=m),
                                   st.sampled_from(sorted(PREFLIGHT_PATHS)),
                                   st.sampled_from(["POST", "POST", "PATCH", "DELETE", "GET", None])),
                         PREFLIGHT_ORIGIN)
HTTP_EXAMPLE = weighted((12, HTTP_REQUEST), (1, PREFLIGHT))
