"""The OpenAI Realtime transcription session without sockets or models: client events, both session shapes, error
shapes, items and deltas (append-only, joined == completed), and the audio codecs and resampler it needs."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from realtime.core.audio import ALAW_TABLE, ULAW_TABLE, Resampler, alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from realtime.core.oai_realtime import (
    Append,
    Clear,
    Commit,
    Config,
    OaiError,
    Update,
    Vad,
    apply_update,
    error_event,
    parse_event,
    session_object,
)
from realtime.core.oai_turns import Transcription, TurnSegmenter
from realtime.core.protocol import Final, Partial, Word
from realtime.core.vad import Segmenter, SpeechEnd, SpeechStart


def parse(msg: dict) -> tuple:
    return parse_event(json.dumps(msg), 1 << 20)


# ---------------------------------------------------------------- client events


def test_events_parse_to_commands() -> None:
    audio = b"\x01\x02\x03\x04"
    cmd, eid = parse({"type": "input_audio_buffer.append", "audio": base64.b64encode(audio).decode(),
                      "event_id": "e1"})
    assert cmd == Append(audio) and eid == "e1"
    assert parse({"type": "input_audio_buffer.commit"})[0] == Commit()
    assert parse({"type": "input_audio_buffer.clear"})[0] == Clear()
    assert parse({"type": "session.update", "session": {"type": "transcription"}})[0] == Update(
        {"type": "transcription"}, False)
    assert parse({"type": "transcription_session.update", "session": {}})[0].legacy


@pytest.mark.parametrize("raw,code,param", [
    ("not json", "invalid_json", None),
    ("[1]", "invalid_json", None),
    ('{"type": 3}', "missing_required_parameter", "type"),
    ('{"type": "nope", "event_id": "x"}', "invalid_value", "type"),
    ('{"type": "response.create"}', "unsupported", "type"),
    ('{"type": "conversation.item.create"}', "unsupported", "type"),
    ('{"type": "input_audio_buffer.append"}', "missing_required_parameter", "audio"),
    ('{"type": "input_audio_buffer.append", "audio": "%%%"}', "invalid_value", "audio"),
    ('{"type": "session.update"}', "missing_required_parameter", "session"),
    ('{"type": "input_audio_buffer.commit", "x": "\\ud800"}', "invalid_value", None),
    ('{"type": []}', "missing_required_parameter", "type"),  # R4: a TypeError once (unhashable in a set lookup)
    ('{"type": {"a": 1}}', "missing_required_parameter", "type"),
])
def test_bad_events_raise_documented_errors(raw: str, code: str, param: str | None) -> None:
    with pytest.raises(OaiError) as info:
        parse_event(raw, 1 << 20)
    assert (info.value.code, info.value.param) == (code, param)
    event = error_event(info.value, "event_1")
    assert set(event) == {"type", "event_id", "error"} and event["type"] == "error"
    assert set(event["error"]) == {"type", "code", "message", "param", "event_id"}
    assert event["error"]["type"] == "invalid_request_error" and event["error"]["message"]


def test_error_carries_the_client_event_id() -> None:
    with pytest.raises(OaiError) as info:
        parse_event('{"type": "response.create", "event_id": "client-7"}', 1000)
    assert error_event(info.value, "event_2")["error"]["event_id"] == "client-7"


def test_an_event_id_that_cannot_be_sent_back_is_not_echoed() -> None:
    """R5: a lone surrogate spelled in the event_id went into the error, which then could not be encoded."""
    with pytest.raises(OaiError) as info:
        parse_event('{"type": "input_audio_buffer.commit", "event_id": "\\ud83d"}', 1000)
    assert info.value.event_id is None
    json.dumps(error_event(info.value, "event_3"), ensure_ascii=False).encode()


def test_too_large_is_refused() -> None:
    with pytest.raises(OaiError) as info:
        parse_event(" " * 2000, 1000)
    assert info.value.code == "message_too_large"


# ---------------------------------------------------------------- the session config, both shapes


def test_ga_update_sets_format_language_prompt_vad_logprobs() -> None:
    session = {"type": "transcription", "include": ["item.input_audio_transcription.logprobs"],
               "audio": {"input": {"format": {"type": "audio/pcmu"},
                                   "transcription": {"model": "gpt-4o-transcribe", "language": "de-DE",
                                                     "prompt": " Physik "},
                                   "turn_detection": {"type": "server_vad", "threshold": 0.7,
                                                      "prefix_padding_ms": 200, "silence_duration_ms": 800},
                                   "noise_reduction": None}}}
    config = apply_update(Config(), session, legacy=False)
    assert config == Config("audio/pcmu", "gpt-4o-transcribe", "de", "Physik", Vad(0.7, 200, 800), True)
    echoed = session_object(config, "sess_1")
    assert echoed["type"] == "transcription" and echoed["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert echoed["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 800
    assert echoed["include"] == ["item.input_audio_transcription.logprobs"]
    # Only what is present changes; null turn detection turns it off.
    off = apply_update(config, {"type": "transcription", "audio": {"input": {"turn_detection": None}}}, False)
    assert off.turn_detection is None and off.language == "de" and off.format == "audio/pcmu"


def test_legacy_update_shape() -> None:
    session = {"input_audio_format": "g711_alaw", "input_audio_transcription": {"model": "whisper-1",
                                                                                "language": "en"},
               "turn_detection": None, "input_audio_noise_reduction": None}
    config = apply_update(Config(), session, legacy=True)
    assert (config.format, config.language, config.turn_detection) == ("audio/pcma", "en", None)
    echoed = session_object(config, "sess_1", legacy=True)
    assert echoed["input_audio_format"] == "g711_alaw" and echoed["turn_detection"] is None


@pytest.mark.parametrize("session,param", [
    ({"type": "realtime"}, "session.type"),
    ({"type": "transcription", "instructions": "x"}, "session.instructions"),
    ({"type": "transcription", "audio": {"output": {}}}, "session.audio.output"),
    ({"type": "transcription", "audio": {"input": {"noise_reduction": {"type": "near_field"}}}},
     "session.audio.input.noise_reduction"),
    ({"type": "transcription", "audio": {"input": {"turn_detection": {"type": "semantic_vad"}}}},
     "session.audio.input.turn_detection.type"),
    ({"type": "transcription", "audio": {"input": {"turn_detection": {"create_response": True}}}},
     "session.audio.input.turn_detection.create_response"),
    ({"type": "transcription", "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}},
     "session.audio.input.format.rate"),
    ({"type": "transcription", "audio": {"input": {"transcription": {"language": "xx"}}}},
     "session.audio.input.transcription.language"),
    ({"type": "transcription", "audio": {"input": {"turn_detection": {"threshold": 2}}}},
     "session.audio.input.turn_detection.threshold"),
    ({"type": "transcription", "include": ["other"]}, "session.include"),
    ({"input_audio_format": "opus"}, "session.input_audio_format"),
    ({"input_audio_format": {"type": "audio/pcm"}}, "session.input_audio_format"),  # R1: once a TypeError
    ({"input_audio_format": ["pcm16"]}, "session.input_audio_format"),
    ({"type": "transcription", "audio": {"input": {"format": {"type": ["audio/pcm"]}}}},  # R2
     "session.audio.input.format.type"),
    ({"type": "transcription", "audio": {"input": {"format": {"type": {"a": 1}}}}},
     "session.audio.input.format.type"),
])
def test_unsupported_or_bad_settings_name_their_param(session: dict, param: str) -> None:
    with pytest.raises(OaiError) as info:
        apply_update(Config(), session, legacy="type" not in session)
    assert info.value.param == param, info.value.message


# ---------------------------------------------------------------- items, deltas, completed


def words(text: str, start: float) -> list[Word]:
    return [Word(w, start + i * 0.3, start + i * 0.3 + 0.25, 0.9) for i, w in enumerate(text.split())]


def final(utt: int, text: str, start: float) -> Final:
    return Final(0, utt, start, start + 1, text, "en", words(text, start))


def joined(events: list[dict], item: str) -> str:
    return "".join(e["delta"] for e in events if e["type"].endswith(".delta") and e["item_id"] == item)


def completed(events: list[dict], item: str) -> str:
    done = [e for e in events if e["type"].endswith(".completed") and e["item_id"] == item]
    assert len(done) == 1, done
    return done[0]["transcript"]


def test_committed_words_stream_as_deltas_and_join_to_the_final() -> None:
    t = Transcription("x")
    ev = t.turn_start(1.0)
    item = ev[0]["item_id"]
    assert ev[0]["type"] == "input_audio_buffer.speech_started" and ev[0]["audio_start_ms"] == 1000
    ev += t.partial(Partial(0, 1.0, "", "hello wor"))  # unstable words are not sent
    assert joined(ev, item) == ""
    ev += t.partial(Partial(0, 1.0, "Hello", "world"))
    ev += t.partial(Partial(0, 1.0, "Hello world,", "how"))
    assert [e["delta"] for e in ev if "delta" in e] == ["Hello", " world"]  # its comma waits for the next word
    ev += t.turn_end(3.0)
    kinds = [e["type"] for e in ev[-2:]]
    assert kinds == ["input_audio_buffer.speech_stopped", "input_audio_buffer.committed"]
    assert ev[-1]["previous_item_id"] is None
    ev += t.final(final(0, "Hello world, how are you?", 1.1))
    assert joined(ev, item) == completed(ev, item) == "Hello world, how are you?"
    assert ev[-1]["usage"] == {"type": "duration", "seconds": 2.0}
    assert [e["delta"] for e in ev if "delta" in e][-1] == ", how are you?"
    ids = {e["event_id"] for e in ev}
    assert len(ids) == len(ev)


def test_a_stale_sentence_end_is_dropped_and_the_final_may_differ_in_punctuation() -> None:
    """Committed words keep the punctuation of the hypothesis they were committed from ("lag behind." before the
    sentence went on); the final, with other case or punctuation, still extends the deltas."""
    t = Transcription("x")
    item = t.turn_start(0.0)[0]["item_id"]
    ev = t.partial(Partial(0, 0.0, "Styles could lag behind.", ""))
    ev += t.partial(Partial(0, 0.0, "Styles could lag behind. by 25", ""))
    ev += t.turn_end(3.0)
    ev += t.final(final(0, "styles could lag behind by 25 to 30 years.", 0.1))
    assert joined(ev, item) == completed(ev, item) == "Styles could lag behind by 25 to 30 years."


def test_a_final_that_does_not_extend_keeps_the_deltas_and_closes_the_sentence() -> None:
    t = Transcription("x")
    item = t.turn_start(0.0)[0]["item_id"]
    ev = t.partial(Partial(0, 0.0, "the U.S. economy grew", ""))
    ev += t.turn_end(3.0)
    ev += t.final(final(0, "The US economy grows.", 0.1))
    assert joined(ev, item) == completed(ev, item) == "the U.S. economy grew."


def test_a_final_that_differs_in_a_word_still_brings_the_rest_of_the_utterance() -> None:
    """The beam-5 final reads one committed word differently: its words after the shared ones are appended, not
    lost (the streamed words stand as they were sent)."""
    t = Transcription("x")
    item = t.turn_start(0.0)[0]["item_id"]
    ev = t.partial(Partial(0, 0.0, "styles in the vest could lag", "behind"))
    ev += t.turn_end(3.0)
    ev += t.final(final(0, "Styles in the West could lag behind by 25 to 30 years.", 0.1))
    assert joined(ev, item) == completed(ev, item) == "styles in the vest could lag behind by 25 to 30 years."
    t = Transcription("y")
    item = t.turn_start(0.0)[0]["item_id"]
    ev = t.partial(Partial(0, 0.0, "one two three", ""))
    ev += t.turn_end(3.0)
    ev += t.final(final(0, "Completely different words here.", 0.1))  # shares nothing: nothing appended
    assert completed(ev, item) == "one two three."


def test_unspaced_scripts_extend_character_by_character() -> None:
    t = Transcription("x")
    item = t.turn_start(0.0)[0]["item_id"]
    ev = t.partial(Partial(0, 0.0, "大家好，", ""))
    ev += t.partial(Partial(0, 0.0, "大家好，今天我们讲", ""))
    ev += t.turn_end(3.0)
    ev += t.final(final(0, "大家好，今天我们讲热力学。", 0.1))
    assert [e["delta"] for e in ev if "delta" in e] == ["大家好", "，今天我们讲", "热力学。"]
    assert joined(ev, item) == completed(ev, item)


def test_cut_turn_joins_its_finals_and_items_chain() -> None:
    t = Transcription("x")
    first = t.turn_start(0.0)[0]["item_id"]
    ev = t.partial(Partial(0, 0.0, "one two", ""))
    ev += t.final(final(0, "one two three", 0.1))  # a forced cut: the turn goes on
    assert not [e for e in ev if e["type"].endswith("completed")]
    ev += t.partial(Partial(1, 4.0, "four", "five"))
    ev += t.turn_end(6.0)
    second = t.turn_start(7.0)[0]["item_id"]
    ev += t.final(final(1, "four five.", 4.2))
    assert joined(ev, first) == completed(ev, first) == "one two three four five."
    ev = t.turn_end(8.0)
    assert ev[-1]["previous_item_id"] == first and ev[-1]["item_id"] == second


def test_turn_without_final_completes_once_nothing_is_owed() -> None:
    t = Transcription("x")
    item = t.turn_start(0.0)[0]["item_id"]
    t.turn_end(0.5)
    assert t.settle(owed=1) == []  # its final decode is still queued
    ev = t.settle(owed=0)
    assert completed(ev, item) == "" and t.turns == []


def test_older_turns_complete_in_order_before_a_later_final() -> None:
    t = Transcription("x")
    a = t.turn_start(0.0)[0]["item_id"]
    t.turn_end(0.5)
    b = t.turn_start(1.0)[0]["item_id"]
    t.turn_end(2.0)
    ev = t.final(final(1, "later words", 1.1))
    assert [e["item_id"] for e in ev if e["type"].endswith("completed")] == [a, b]


def test_clear_drops_an_uncommitted_turn() -> None:
    t = Transcription("x")
    t.turn_start(0.0)
    assert t.turn_cleared(0.4) == [] and t.turns == []
    ev = t.turn_start(1.0)
    ev += t.turn_end(2.0)
    assert ev[-1]["previous_item_id"] is None


def test_logprobs_are_word_level() -> None:
    t = Transcription("x", logprobs=True)
    item = t.turn_start(0.0)[0]["item_id"]
    t.turn_end(1.0)
    ev = t.final(final(0, "hi there", 0.0))
    done = [e for e in ev if e["type"].endswith("completed")][0]
    assert [p["token"] for p in done["logprobs"]] == ["hi", " there"]
    assert all(p["logprob"] == pytest.approx(np.log(0.9), abs=1e-3) for p in done["logprobs"])
    assert completed(ev, item) == "hi there"


@pytest.mark.parametrize("seed", range(20))
def test_deltas_are_append_only_and_join_to_completed(seed: int) -> None:
    """Random partial/final sequences of LocalAgreement's shape (committed grows; cuts; finals extend)."""
    rng = np.random.default_rng(seed)
    t = Transcription("r")
    ev: list[dict] = []
    items = []
    for turn in range(3):
        items.append(t.turn_start(turn * 10.0)[0]["item_id"])
        cuts = int(rng.integers(1, 3))
        for cut in range(cuts):
            utt = turn * 10 + cut
            vocab = [f"w{int(x)}" for x in rng.integers(0, 50, 8)]
            n = 0
            for _ in range(int(rng.integers(0, 5))):
                n = min(len(vocab), n + int(rng.integers(0, 3)))
                ev += t.partial(Partial(utt, turn * 10.0 + cut, " ".join(vocab[:n]), "x y"))
            if cut < cuts - 1:
                ev += t.final(final(utt, " ".join(vocab[:max(n, 1)]), turn * 10.0 + cut))
            else:
                ev += t.turn_end(turn * 10.0 + 5)
                ev += t.final(final(utt, " ".join(vocab), turn * 10.0 + cut))
                break
    ev += t.settle(0)
    for item in items:
        assert joined(ev, item) == completed(ev, item)


# ---------------------------------------------------------------- the turn segmenter


def test_manual_turns_end_at_commit_and_clear_discards() -> None:
    seen: list[tuple] = []
    seg = TurnSegmenter(None, lambda s, t, c: seen.append((s, round(t, 3), c)))
    pcm = np.zeros(1600, "<i2").tobytes()
    out = seg.feed(pcm) + seg.feed(pcm)
    assert isinstance(out[0], SpeechStart) and seg.in_speech and seg.open_s == pytest.approx(0.2)
    seg.end_turn()
    out = seg.feed(b"")
    assert isinstance(out[0], SpeechEnd) and not out[0].discarded and not seg.in_speech
    seg.feed(pcm)
    seg.end_turn(discard=True)
    assert seg.feed(b"")[0].discarded
    assert seen == [(True, 0.0, False), (False, 0.2, False), (True, 0.2, False), (False, 0.3, True)]


def test_vad_turns_shift_by_offset() -> None:
    loud = (np.sin(np.arange(480) / 3) * 8000).astype("<i2").tobytes()
    quiet = np.zeros(480, "<i2").tobytes()
    seen: list[tuple] = []
    vad = Segmenter(lambda f: np.frombuffer(f, "<i2").std() > 100, frame_ms=30, hangover_ms=90)
    seg = TurnSegmenter(vad, lambda s, t, c: seen.append((s, round(t, 2))), offset_s=10.0)
    for _ in range(20):
        seg.feed(loud)
    for _ in range(5):
        seg.feed(quiet)
    assert seen[0][0] and seen[0][1] >= 10.0 and seen[1] == (False, 10.6)


# ---------------------------------------------------------------- codecs and resampling


def test_g711_tables_match_the_standard() -> None:
    # ITU-T G.711 values: μ-law 0x00 = -32124, 0x80 = +32124, 0xFF/0x7F = 0; A-law 0xD5 = +8, 0x55 = -8,
    # 0xAA = +32256, 0x2A = -32256.
    assert (ULAW_TABLE[0x00], ULAW_TABLE[0x80], ULAW_TABLE[0xFF], ULAW_TABLE[0x7F]) == (-32124, 32124, 0, 0)
    assert (ALAW_TABLE[0xD5], ALAW_TABLE[0x55], ALAW_TABLE[0xAA], ALAW_TABLE[0x2A]) == (8, -8, 32256, -32256)
    assert len(set(ALAW_TABLE.tolist())) == 256 and len(set(ULAW_TABLE.tolist())) == 255


def test_g711_round_trip() -> None:
    codes = np.arange(256, dtype=np.uint8).tobytes()
    assert alaw_encode(alaw_decode(codes)) == codes
    back = ulaw_encode(ulaw_decode(codes))
    assert ulaw_decode(back).tolist() == ulaw_decode(codes).tolist()  # ±0 share a value
    x = (np.sin(np.arange(800) / 7) * 20000).astype(np.int16)
    for enc, dec in ((ulaw_encode, ulaw_decode), (alaw_encode, alaw_decode)):
        y = dec(enc(x)).astype(float)
        snr = 10 * np.log10((x.astype(float) ** 2).sum() / ((y - x) ** 2).sum())
        assert snr > 30  # G.711 gives about 38 dB on a loud tone


def tone(freq: float, rate: int, seconds: float = 1.0, amp: float = 10000) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)).astype(np.int16)


@pytest.mark.parametrize("rate_in", [24000, 8000])
def test_resampler_keeps_frequency_and_level(rate_in: int) -> None:
    x = tone(1000, rate_in)
    r = Resampler(rate_in, 16000)
    y = np.concatenate([r(x[i:i + 313]) for i in range(0, len(x), 313)])  # packets of odd sizes
    assert abs(len(y) - 16000) <= 1
    assert np.array_equal(y, Resampler(rate_in, 16000)(x)[:len(y)])  # independent of the packet cuts
    mid = y[800:15000].astype(float)
    spectrum = np.abs(np.fft.rfft(mid * np.hanning(len(mid))))
    assert np.argmax(spectrum) * 16000 / len(mid) == pytest.approx(1000, abs=2)
    assert mid.std() * np.sqrt(2) == pytest.approx(10000, rel=0.01)


def test_resampler_removes_what_16k_cannot_hold() -> None:
    y = Resampler(24000, 16000)(tone(10000, 24000))  # above the 8 kHz Nyquist of the output: must not alias
    assert y[800:].astype(float).std() < 100  # under -40 dB of the 10000 input
