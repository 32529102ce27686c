"""The OpenAI Realtime translation session's sans-I/O half: configuration, client events, and the two append-only
transcripts (realtime.core.oai_translation), checked against the installed SDK's own types."""

from __future__ import annotations

import base64
import itertools
import json

import pytest
from openai.types.realtime import (
    RealtimeTranslationInputTranscriptDeltaEvent,
    RealtimeTranslationOutputTranscriptDeltaEvent,
    RealtimeTranslationSession,
)

from realtime.core.oai_realtime import OaiError
from realtime.core.oai_translation import (
    TAppend,
    TClose,
    TConfig,
    TranslationText,
    TUpdate,
    apply_update,
    parse_event,
    session_object,
)
from realtime.core.protocol import Final, Translation


def text() -> TranslationText:
    counter = itertools.count(1)
    return TranslationText(lambda: f"event_{next(counter)}", t0=10.0)


def delta(item: str, words: str) -> dict:
    return {"type": "conversation.item.input_audio_transcription.delta", "item_id": item, "delta": words}


def final(n: int, words: str, end: float) -> Final:
    return Final(n, n, end - 1.0, end, words)


def test_the_session_object_is_the_sdks_and_updates_change_only_what_openai_allows():
    config = apply_update(TConfig(), {"audio": {"output": {"language": "zh-CN"},
                                                "input": {"transcription": {"model": "whisper-1"},
                                                          "noise_reduction": {"type": "far_field"}}}})
    assert (config.language, config.transcription, config.noise_reduction) == ("zh", "whisper-1",
                                                                               {"type": "far_field", "strength": 1.0})
    parsed = RealtimeTranslationSession.model_validate(session_object(config, "sess_1", 1_900_000_000))
    assert parsed.audio.output.language == "zh" and parsed.audio.input.transcription.model == "whisper-1"
    off = apply_update(config, {"audio": {"input": {"transcription": None, "noise_reduction": None}}})
    assert off.transcription is None and off.noise_reduction is None and off.language == "zh"
    for bad, param in (({"model": "other"}, "session.model"), ({"type": "transcription"}, "session.type"),
                       ({"audio": {"output": {"language": "klingon"}}}, "session.audio.output.language"),
                       ({"audio": {"output": {"language": 7}}}, "session.audio.output.language"),
                       ({"audio": {"input": {"transcription": {}}}}, "session.audio.input.transcription.model"),
                       ({"audio": {"input": {"noise_reduction": {"type": "x"}}}},
                        "session.audio.input.noise_reduction.type"),
                       ({"audio": {"input": {"noise_reduction": {"type": "near_field", "strength": 2}}}},
                        "session.audio.input.noise_reduction.strength"),
                       ({"audio": []}, "session.audio")):
        with pytest.raises(OaiError) as err:
            apply_update(config, bad)
        assert err.value.param == param, bad


def test_client_events():
    audio = base64.b64encode(b"\x01\x00" * 10).decode()
    assert parse_event(json.dumps({"type": "session.input_audio_buffer.append", "audio": audio}), 10_000) == (
        TAppend(b"\x01\x00" * 10), None)
    assert parse_event('{"type": "session.close", "event_id": "c1"}', 10_000) == (TClose(), "c1")
    assert parse_event('{"type": "session.update", "session": {}}', 10_000) == (TUpdate({}), None)
    for raw, code in (('{"type": "session.update"}', "missing_required_parameter"),
                      ('{"type": "input_audio_buffer.append", "audio": ""}', "invalid_value"),
                      ('{"type": "session.input_audio_buffer.append", "audio": "@@"}', "invalid_value"),
                      ("[1]", "invalid_json"), ("{", "invalid_json"), ('{"type": 3}', "missing_required_parameter")):
        with pytest.raises(OaiError) as err:
            parse_event(raw, 10_000)
        assert err.value.code == code, raw
    with pytest.raises(OaiError, match="limited"):
        parse_event(" " * 101, 100)


def test_input_deltas_run_the_items_together_only_once_transcription_is_on():
    t = text()
    assert t.items([delta("item_1", "Good")], 0.4) == []  # no audio.input.transcription yet: nothing said
    t.configure(TConfig(transcription="whisper-1"))
    out = t.items([{"type": "input_audio_buffer.speech_started"}, delta("item_1", " morning."),
                   delta("item_2", "Today"), delta("item_2", " we")], 1.3)
    assert [e["delta"] for e in out] == [" morning.", " Today", " we"]
    assert t.input_sent == "Good morning. Today we"
    assert all(e["elapsed_ms"] == 1200 for e in out)
    RealtimeTranslationInputTranscriptDeltaEvent.model_validate(out[0])
    t.items([delta("item_3", "，然后")], 2.0)
    t.items([delta("item_4", "我们")], 2.0)
    assert t.input_sent.endswith("we，然后我们")  # no space before closing punctuation, none between CJK


def test_output_deltas_come_in_the_finals_order_and_a_failed_line_is_left_out():
    t = text()
    t.final(final(1, "ignored: no language yet", 11.0))
    t.configure(TConfig(language="de"))
    for n, end in ((1, 12.0), (2, 14.5), (3, 17.3)):
        t.final(final(n, f"line {n}", end))
    assert t.owed == 3
    assert t.translation(Translation(2, "de", "Zeile 2")) == []  # waits for line 1
    assert t.translation(Translation(1, "zh", "第一行")) == []  # another viewer's language
    out = t.translation(Translation(1, "de", "Zeile 1"))
    assert [(e["delta"], e["elapsed_ms"]) for e in out] == [("Zeile 1", 2000), (" Zeile 2", 4400)]
    RealtimeTranslationOutputTranscriptDeltaEvent.model_validate(out[1])
    failed = t.translation(Translation(3, "de", "", "failed", "no_budget"))
    assert failed[0]["type"] == "error" and "no_budget" in failed[0]["error"]["message"]
    assert t.output_sent == "Zeile 1 Zeile 2" and t.owed == 0
    assert t.translation(Translation(1, "de", "Zeile 1")) == []  # a replayed line is not sent twice
    t.final(final(4, "line 4", 20.0))
    t.configure(TConfig(language="fr"))  # lines owed in German are not waited for in French
    assert t.owed == 0 and t.translation(Translation(4, "de", "Zeile 4")) == []
