"""Property-based tests of the wire protocol's parsing, in-process (fast): whatever a client sends, `parse_text`
returns a command or raises `ProtocolError` with a documented code, and `check_audio` likewise for binary frames.

The documented codes are read from docs/protocol.md itself, and cross-checked against realtime/core/protocol.py's
constants. tests/e2e/test_fuzz.py fuzzes the same messages against a real server.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from realtime.core import protocol
from realtime.core.protocol import Auth, Ping, ProtocolError, Start, Stop, check_audio, parse_text
from tests.protocol_doc import CODE_CLOSES, CODE_ERRORS, DOC, DOC_CLOSES, DOC_ERRORS

MAX_BYTES = 65536


def examples(n: int) -> settings:
    return settings(max_examples=n, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# What a text message can be refused with by parse_text (the rest need a connection's state or the server's).
PARSE_ERRORS = {protocol.BAD_JSON, protocol.BAD_MESSAGE, protocol.UNKNOWN_TYPE, protocol.MESSAGE_TOO_LARGE}


def test_error_and_close_codes_are_documented():
    assert len(CODE_ERRORS) >= 20, sorted(CODE_ERRORS)
    assert CODE_ERRORS - DOC_ERRORS == set(), "codes in realtime/core/protocol.py missing from docs/protocol.md"
    assert DOC_ERRORS - CODE_ERRORS == set(), "codes in docs/protocol.md that realtime/core/protocol.py does not define"
    assert CODE_CLOSES == DOC_CLOSES == {1000, 1001, 1007, 1009, 1011, 1013, 4400, 4401, 4403, 4404, 4408, 4409, 4410,
                                         4413}
    for code in CODE_ERRORS:  # and each one is explained somewhere besides its table row
        assert DOC.count(f"`{code}`") >= 2, code


# ---------------------------------------------------------------- strategies

LONE_SURROGATES = ["\ud800", "\udbff", "\udc00", "\udfff"]
chars = st.one_of(st.characters(exclude_categories=()), st.sampled_from(LONE_SURROGATES + ["\x00", "\ufeff", '"']))
texts = st.text(chars, max_size=30)
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-2 ** 80, 2 ** 80), st.floats(), texts)
values = st.recursive(scalars, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(texts, kids, max_size=4),
                      max_leaves=10)
small_values = st.recursive(scalars, lambda kids: st.lists(kids, max_size=2) | st.dictionaries(texts, kids, max_size=2),
                            max_leaves=3)
types = st.one_of(st.sampled_from(["start", "stop", "ping", "auth", "START", "pong", "", "ping "]), texts, small_values)
fields = st.sampled_from(["type", "id", "key", "language", "task", "prompt", "takeover", "sample_rate", "encoding"])
objects = st.one_of(
    st.dictionaries(st.one_of(fields, texts), small_values, max_size=6),
    st.fixed_dictionaries({"type": types}, optional={f: small_values for f in (
        "id", "key", "language", "task", "prompt", "takeover", "sample_rate", "encoding")}),
    st.fixed_dictionaries({"type": st.just("start")}, optional={
        "language": st.one_of(st.sampled_from(["en", "EN-us", "zh_TW", "auto", "", "xx", "en-", "-en"]), texts),
        "task": st.sampled_from(["transcribe", "translate", "Translate", ""]),
        "prompt": st.one_of(texts, st.integers(1995, 2005).map(lambda n: " " + "x" * n)),
        "takeover": st.one_of(st.booleans(), st.sampled_from([0, 1, "true", None])),
        "sample_rate": st.sampled_from([16000, 16000.0, 8000, "16000", True, None]),
        "encoding": st.sampled_from(["s16le", "S16LE", "f32le", None])}),
)


def dump(value, ascii_only: bool, indent: int | None) -> str:
    return json.dumps(value, ensure_ascii=ascii_only, indent=indent)


def has_lone_surrogate(value) -> bool:
    """Anywhere in a JSON value, keys included: such a message is bad_message, whatever else it says."""
    if isinstance(value, str):
        return any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, dict):
        return any(has_lone_surrogate(k) or has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_lone_surrogate(v) for v in value)
    return False


def check(raw: str, max_bytes: int = MAX_BYTES):
    """parse_text's contract: a command, or a ProtocolError with a documented code that parsing can produce."""
    try:
        cmd = parse_text(raw, max_bytes)
    except ProtocolError as exc:
        assert exc.code in PARSE_ERRORS and exc.code in DOC_ERRORS, exc.code
        assert isinstance(exc.message, str) and exc.message, exc
        return exc
    assert isinstance(cmd, Start | Stop | Ping | Auth), cmd
    return cmd


# ---------------------------------------------------------------- properties


@examples(2000)
@given(st.text(chars, max_size=200))
def test_parse_text_arbitrary_text(raw):
    check(raw)


@examples(1000)
@given(values, st.booleans(), st.sampled_from([None, 0, 2]))
def test_parse_text_arbitrary_json(value, ascii_only, indent):
    check(dump(value, ascii_only, indent))


@examples(1000)
@given(objects, st.booleans())
def test_parse_text_control_messages(msg, ascii_only):
    """Independent of the implementation, from the protocol document's tables."""
    raw = dump(msg, True if has_lone_surrogate(msg) else ascii_only, None)  # surrogates travel as escapes
    result = check(raw)
    kind = msg.get("type")
    if has_lone_surrogate(msg):
        assert isinstance(result, ProtocolError) and result.code == protocol.BAD_MESSAGE, result
    elif kind not in ("start", "stop", "ping", "auth"):
        assert isinstance(result, ProtocolError)
        assert result.code == (protocol.UNKNOWN_TYPE if isinstance(kind, str) else protocol.BAD_MESSAGE)
    elif kind == "stop":
        assert result == Stop()
    elif kind == "ping":
        ident = msg.get("id")
        ok = ident is None or (isinstance(ident, str | int) and not isinstance(ident, bool)) or (
            isinstance(ident, float) and abs(ident) != float("inf") and ident == ident)
        assert result == Ping(json.loads(json.dumps(ident))) if ok else result.code == protocol.BAD_MESSAGE
    elif kind == "auth":
        key = msg.get("key")
        ok = isinstance(key, str) and 1 <= len(json.loads(json.dumps(key))) <= protocol.MAX_KEY_CHARS
        assert isinstance(result, Auth) if ok else result.code == protocol.BAD_MESSAGE
    else:
        assert isinstance(result, Start) or result.code == protocol.BAD_MESSAGE
        if isinstance(result, Start):
            assert result.task in ("transcribe", "translate") and isinstance(result.takeover, bool)
            assert result.language is None or result.language in protocol.LANGUAGES
            assert len(result.prompt) <= protocol.MAX_PROMPT_CHARS and result.prompt == result.prompt.strip()
            assert msg.get("sample_rate", 16000) == 16000 and msg.get("encoding", "s16le") == "s16le"


@examples(500)
@given(st.integers(1, 2000), st.sampled_from(["x", "é", "€", "😀"]), st.integers(-3, 3))
def test_parse_text_size_limit(max_bytes, filler, delta):
    """message_too_large exactly when the UTF-8 size is over the limit."""
    prefix, suffix = '{"type":"ping","id":"', '"}'
    room = max(0, max_bytes + delta - len(prefix) - len(suffix))
    raw = prefix + filler * (room // len(filler.encode())) + suffix
    result = check(raw, max_bytes)
    too_large = len(raw.encode()) > max_bytes
    assert (isinstance(result, ProtocolError) and result.code == protocol.MESSAGE_TOO_LARGE) == too_large, raw


@examples(300)
@given(st.integers(0, 50_000), st.sampled_from(["[", "{\"a\":", "[{\"b\":"]), st.sampled_from(["ping", "raw"]))
def test_parse_text_deep_nesting(depth, opener, where):
    closer = "".join({"[": "]", "{": "}"}[c] for c in opener if c in "[{")[::-1]
    nested = opener * depth + "0" + closer * depth
    raw = nested if where == "raw" else '{"type":"ping","id":' + nested + "}"
    check(raw, 1 << 20)


@examples(2000)
@given(st.binary(max_size=300), st.integers(0, 400))
def test_check_audio_arbitrary_bytes(frame, max_bytes):
    try:
        check_audio(frame, max_bytes)
    except ProtocolError as exc:
        expected = protocol.FRAME_TOO_LARGE if len(frame) > max_bytes else protocol.BAD_AUDIO
        assert exc.code == expected and exc.code in DOC_ERRORS, (len(frame), max_bytes, exc.code)
        if exc.code == protocol.BAD_AUDIO:
            assert len(frame) % 2
        return
    assert len(frame) <= max_bytes and len(frame) % 2 == 0


@settings(max_examples=300, deadline=None, database=None)
@given(st.integers(0, 200_000), st.integers(1, 100_000))
def test_check_audio_lengths(length, max_bytes):
    """The same for large frames (content does not matter, only the length)."""
    try:
        check_audio(bytes(length), max_bytes)
        assert length <= max_bytes and length % 2 == 0
    except ProtocolError as exc:
        assert exc.code == (protocol.FRAME_TOO_LARGE if length > max_bytes else protocol.BAD_AUDIO)


# ---------------------------------------------------------------- known bugs (flip to passing tests once fixed)


@pytest.mark.parametrize("language", [[], {}, ["en"], {"en": 1}], ids=["list", "dict", "list-en", "dict-en"])
def test_start_language_of_unhashable_type(language):
    result = check(json.dumps({"type": "start", "language": language}))
    assert isinstance(result, ProtocolError) and result.code == protocol.BAD_MESSAGE
