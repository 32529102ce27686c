"""Wire protocol v1: parsing client messages, checking audio frames and room names, encoding events."""

from __future__ import annotations

import json

import pytest

from realtime import PROTOCOL_VERSION
from realtime.core.protocol import (
    BAD_AUDIO,
    BAD_JSON,
    BAD_MESSAGE,
    BAD_ROOM,
    FRAME_TOO_LARGE,
    MAX_PROMPT_CHARS,
    MESSAGE_TOO_LARGE,
    UNKNOWN_TYPE,
    Error,
    Final,
    Hello,
    Partial,
    Ping,
    ProtocolError,
    Start,
    Stop,
    Word,
    check_audio,
    check_room,
    encode,
    parse_text,
)

LIMIT = 65536


def parse(msg: object) -> object:
    return parse_text(json.dumps(msg), LIMIT)


def error_code(raw: str, max_bytes: int = LIMIT) -> str:
    with pytest.raises(ProtocolError) as exc:
        parse_text(raw, max_bytes)
    assert exc.value.message
    return exc.value.code


def test_start_with_defaults() -> None:
    assert parse({"type": "start"}) == Start(language=None, task="transcribe", prompt="")


def test_start_with_all_fields() -> None:
    msg = {"type": "start", "language": "de", "task": "translate", "prompt": "  Fourier series. ",
           "sample_rate": 16000, "encoding": "s16le"}
    assert parse(msg) == Start(language="de", task="translate", prompt="Fourier series.")


@pytest.mark.parametrize("language", ["auto", "", None])
def test_start_auto_language_means_detect(language: str | None) -> None:
    assert parse({"type": "start", "language": language}) == Start()


def test_start_accepts_region_suffix_and_null_prompt() -> None:
    assert parse({"type": "start", "language": "zh-Hant", "prompt": None}) == Start(language="zh")
    assert parse({"type": "start", "language": "en-US"}) == Start(language="en")
    assert parse({"type": "start", "language": "EN"}) == Start(language="en")


def test_ping_id_must_be_a_finite_string_or_number() -> None:
    for bad in ('true', 'NaN', 'Infinity', '[1]'):
        with pytest.raises(ProtocolError) as err:
            parse_text('{"type": "ping", "id": ' + bad + '}', 65536)
        assert err.value.code == BAD_MESSAGE


def test_stop_and_ping() -> None:
    assert parse({"type": "stop"}) == Stop()
    assert parse({"type": "ping"}) == Ping(None)
    assert parse({"type": "ping", "id": 7}) == Ping(7)
    assert parse({"type": "ping", "id": "abc"}) == Ping("abc")


@pytest.mark.parametrize("raw", ["{", "not json", "", '{"type": "start",}', "[" * 100000])
def test_invalid_json(raw: str) -> None:
    assert error_code(raw, max_bytes=200000) == BAD_JSON


@pytest.mark.parametrize("raw", ["[1, 2]", '"start"', "42", "null"])
def test_json_that_is_not_an_object(raw: str) -> None:
    assert error_code(raw) == BAD_JSON


def test_unknown_type() -> None:
    assert error_code('{"type": "dance"}') == UNKNOWN_TYPE


@pytest.mark.parametrize("raw", ["{}", '{"kind": "start"}', '{"type": 3}', '{"type": null}'])
def test_missing_or_non_string_type(raw: str) -> None:
    assert error_code(raw) == BAD_MESSAGE


@pytest.mark.parametrize(
    "fields",
    [
        {"language": "english"},
        {"language": "xx"},
        {"language": "klingon"},
        {"language": 5},
        {"task": "summarize"},
        {"task": None},
        {"prompt": "x" * (MAX_PROMPT_CHARS + 1)},
        {"prompt": 12},
        {"sample_rate": 44100},
        {"sample_rate": "16000"},
        {"encoding": "f32le"},
    ],
)
def test_bad_start_fields(fields: dict[str, object]) -> None:
    assert error_code(json.dumps({"type": "start", **fields})) == BAD_MESSAGE


def test_prompt_at_the_limit_is_accepted() -> None:
    assert parse({"type": "start", "prompt": "x" * MAX_PROMPT_CHARS}) == Start(prompt="x" * MAX_PROMPT_CHARS)


@pytest.mark.parametrize("ident", [[1], {"a": 1}])
def test_bad_ping_id(ident: object) -> None:
    assert error_code(json.dumps({"type": "ping", "id": ident})) == BAD_MESSAGE


def test_message_too_large() -> None:
    raw = json.dumps({"type": "ping", "id": "x" * 100})
    assert error_code(raw, max_bytes=len(raw) - 1) == MESSAGE_TOO_LARGE
    assert parse_text(raw, len(raw)) == Ping("x" * 100)


def test_message_size_counts_utf8_bytes() -> None:
    raw = json.dumps({"type": "ping", "id": "é" * 50}, ensure_ascii=False)
    assert len(raw) < 80 < len(raw.encode())
    assert error_code(raw, max_bytes=80) == MESSAGE_TOO_LARGE


def test_check_audio_accepts_whole_samples() -> None:
    check_audio(b"\0" * 32000, 32000)
    check_audio(b"", 32000)


def test_check_audio_odd_length() -> None:
    with pytest.raises(ProtocolError) as exc:
        check_audio(b"\0" * 101, 32000)
    assert exc.value.code == BAD_AUDIO


def test_check_audio_too_large() -> None:
    with pytest.raises(ProtocolError) as exc:
        check_audio(b"\0" * 32002, 32000)
    assert exc.value.code == FRAME_TOO_LARGE


@pytest.mark.parametrize("name", ["lecture-1", "A", "cs101.fall_2024", "x" * 64])
def test_check_room_accepts(name: str) -> None:
    assert check_room(name, 64) == name


@pytest.mark.parametrize("name", ["", "x" * 65, "-lead", ".hidden", "with space", "a/b", "é", "\nroom"])
def test_check_room_rejects(name: str) -> None:
    with pytest.raises(ProtocolError) as exc:
        check_room(name, 64)
    assert exc.value.code == BAD_ROOM


def test_check_room_rejects_trailing_newline() -> None:
    with pytest.raises(ProtocolError):
        check_room("room\n", 64)


def test_encode_partial() -> None:
    data = json.loads(encode(Partial(3, 1.5, "the quick", "brown", 2.0), seq=11))
    assert data == {"type": "partial", "seq": 11, "utterance": 3, "start": 1.5, "committed": "the quick",
                    "unstable": "brown", "end": 2.0}


def test_encode_final_with_words_and_unicode() -> None:
    final = Final(4, 2, 0.5, 1.0, "Grüße", "de", [Word("Grüße", 0.5, 1.0, 0.9)])
    raw = encode(final, seq=1)
    assert "Grüße" in raw  # not \u-escaped
    data = json.loads(raw)
    assert data["type"] == "final" and data["seq"] == 1 and data["id"] == 4
    assert data["words"] == [{"w": "Grüße", "start": 0.5, "end": 1.0, "p": 0.9}]


def test_encode_hello_and_error() -> None:
    hello = json.loads(encode(Hello("r1", "listener"), seq=0))
    assert hello["type"] == "hello" and hello["seq"] == 0 and hello["protocol"] == PROTOCOL_VERSION
    error = json.loads(encode(Error(BAD_ROOM, "nope"), seq=5))
    assert error == {"type": "error", "seq": 5, "code": BAD_ROOM, "message": "nope"}
