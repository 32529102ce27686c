"""LectureStream driven by hand: synthetic PCM in, decode requests out, hand-made hypotheses in, caption events out."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from realtime.core.agreement import HypWord
from realtime.core.hallucination import Segment
from realtime.core.lecture import DecodeRequest, LectureStream, StreamConfig
from realtime.core.protocol import Event, Final, Partial, Start
from realtime.core.vad import Segmenter

RATE = 16000


def voiced(seconds: float) -> bytes:
    """A zero-mean square wave (a constant would be an offset, which the stream's DC blocker removes)."""
    n = round(seconds * RATE)
    return np.where(np.arange(n) % 2, 1000, -1000).astype("<i2").tobytes()


def silence(seconds: float) -> bytes:
    return bytes(round(seconds * RATE) * 2)


def make_stream(t0: float = 0.0, prompt: str = "", **config: float) -> LectureStream:
    """30 ms frames, 300 ms pre-roll, 300 ms hangover, 180 ms minimum speech; voiced = any non-zero sample."""
    seg = Segmenter(lambda frame: any(frame), frame_ms=30, preroll_ms=300, hangover_ms=300, min_speech_ms=180)
    config.setdefault("prompt_chars", 200)
    return LectureStream(seg, Start(language="en", prompt=prompt), StreamConfig(**config), t0=t0)


def result(text: str, start: float = 0.0, step: float = 0.2) -> list[Segment]:
    """One segment of back-to-back words; times are relative to the request's offset."""
    return [Segment([HypWord(w, start + i * step, start + (i + 1) * step) for i, w in enumerate(text.split())])]


def request(stream: LectureStream, kind: str) -> DecodeRequest:
    req = stream.next_request()
    assert req is not None and req.kind == kind, req
    return req


def partials(events: list[Event]) -> list[tuple[str, str]]:
    return [(e.committed, e.unstable) for e in events if isinstance(e, Partial)]


def finals(events: list[Event]) -> list[Final]:
    return [e for e in events if isinstance(e, Final)]


def test_partial_requests_wait_for_partial_interval_of_new_audio() -> None:
    s = make_stream(partial_interval_s=0.25)
    s.feed(voiced(0.24))  # onset after 90 ms, no pre-roll before it: 0.24 s buffered
    assert s.next_request() is None
    s.feed(voiced(0.03))
    req = request(s, "partial")
    assert (req.utterance, req.offset, len(req.audio)) == (0, 0.0, round(0.27 * RATE))
    assert req.language == "en" and req.task == "transcribe" and req.speech_end is None
    assert s.next_request() is None  # already asked for the newest audio
    s.feed(voiced(0.24))
    assert s.next_request() is None
    s.feed(voiced(0.03))
    assert len(request(s, "partial").audio) == round(0.54 * RATE)


def test_committed_text_grows_by_agreement_and_partials_split_it() -> None:
    s = make_stream()
    s.feed(voiced(0.3))
    ev = s.on_result(request(s, "partial"), result("the quick brown"))
    assert ev == [Partial(0, 0.0, "", "the quick brown", 0.3)]
    s.feed(voiced(0.3))
    assert partials(s.on_result(request(s, "partial"), result("the quick brown fox"))) == [
        ("the quick brown", "fox")]
    s.feed(voiced(0.3))
    assert partials(s.on_result(request(s, "partial"), result("the quick brown fox jumps"))) == [
        ("the quick brown fox", "jumps")]
    s.feed(voiced(0.3))
    assert partials(s.on_result(request(s, "partial"), result("the quick brown fox jumps"))) == [
        ("the quick brown fox jumps", "")]
    # An unchanged display is not sent again.
    s.feed(voiced(0.3))
    assert s.on_result(request(s, "partial"), result("the quick brown fox jumps")) == []
    assert s.partials == 5 and s.finals == 0


def test_ended_utterance_is_finalized_before_the_next_utterance_gets_partials() -> None:
    s = make_stream()
    s.feed(voiced(0.6))
    s.on_result(request(s, "partial"), result("the quick brown"))
    s.feed(voiced(0.3))
    s.on_result(request(s, "partial"), result("the quick brown fox"))
    s.feed(silence(0.3) + voiced(0.6))  # hangover ends utterance 0; utterance 1 has 0.6 s + pre-roll
    assert s.pending_finals == 1
    final_req = request(s, "final")
    assert final_req.utterance == 0
    assert final_req.speech_end == pytest.approx(0.9)
    ev = s.on_result(final_req, result("The quick brown fox jumps."), "en")
    [final] = finals(ev)
    # Final = committed words (as committed) + the final decode beyond them.
    assert final.text == "the quick brown fox jumps."
    assert (final.utterance, final.start, final.end, final.language) == (0, 0.0, 1.0, "en")
    assert [w.w for w in final.words] == ["the", "quick", "brown", "fox", "jumps."]
    assert s.finals == 1
    next_req = request(s, "partial")
    assert next_req.utterance == 1
    assert next_req.prompt == "the quick brown fox jumps."  # recent finals become the prompt


def test_final_language_is_detected_language_for_auto_streams() -> None:
    seg = Segmenter(lambda frame: any(frame), frame_ms=30)
    s = LectureStream(seg, Start(language=None))
    s.feed(voiced(0.6))
    s.stop()
    [final] = finals(s.on_result(request(s, "final"), result("Guten Tag"), "de"))
    assert final.language == "de"
    assert s.language == "de"  # later requests decode in the detected language
    s2 = LectureStream(Segmenter(lambda frame: any(frame), frame_ms=30), Start(language=None))
    s2.feed(voiced(0.6))
    assert request(s2, "partial").language is None


def test_final_keeps_stream_language_when_decoder_reports_none() -> None:
    s = make_stream()  # language "en"
    s.feed(voiced(0.6))
    s.on_result(request(s, "partial"), result("the quick"))
    s.feed(voiced(0.3))
    s.on_result(request(s, "partial"), result("the quick brown"))
    s.stop()
    # A failed final decode is applied as ([], None): the committed words are still finalized.
    [final] = finals(s.on_result(request(s, "final"), [], None))
    assert final.text == "the quick"
    assert final.language == "en"


def test_prompt_combines_start_prompt_and_recent_finals() -> None:
    s = make_stream(prompt="Fourier series.")
    s.feed(voiced(0.3))
    assert request(s, "partial").prompt == "Fourier series."
    s.feed(silence(0.3) + voiced(0.3))
    s.on_result(request(s, "final"), result("Let us begin."))
    assert request(s, "partial").prompt == "Fourier series. Let us begin."


def test_stop_flushes_an_open_utterance_to_a_final() -> None:
    s = make_stream()
    fed = voiced(0.6) + voiced(0.01)  # ends mid-frame
    s.feed(fed)
    assert not s.idle
    s.stop()
    assert s.wants_final() and not s.wants_partial()
    req = request(s, "final")
    assert len(req.audio) * 2 >= len(fed)  # nothing lost, the last partial frame padded
    [final] = finals(s.on_result(req, result("end of lecture")))
    assert final.text == "end of lecture"
    assert s.idle and s.next_request() is None


def test_stale_results_are_ignored() -> None:
    s = make_stream()
    s.feed(voiced(0.6))
    stale = request(s, "partial")
    s.feed(silence(0.3) + voiced(0.6))  # utterance 0 ended meanwhile; utterance 1 is open
    assert s.on_result(stale, result("old words here")) == []
    final_req = request(s, "final")
    wrong = dataclasses.replace(final_req, utterance=7)
    assert s.on_result(wrong, result("wrong")) == []
    assert s.pending_finals == 1
    assert finals(s.on_result(final_req, result("first utterance")))[0].text == "first utterance"
    assert s.on_result(final_req, result("first utterance")) == []  # a repeated final is ignored too
    req = request(s, "partial")
    assert req.utterance == 1
    # The stale hypothesis did not leak into utterance 1: its first hypothesis still commits nothing.
    assert partials(s.on_result(req, result("second one"))) == [("", "second one")]


def test_discarded_utterance_emits_no_final() -> None:
    s = make_stream()
    s.feed(voiced(0.12) + silence(0.6))  # 4 voiced frames < 6 needed
    assert s.pending_finals == 0
    assert s.next_request() is None
    assert s.idle and s.finals == 0


def test_discarded_utterance_clears_a_shown_partial() -> None:
    s = make_stream()
    s.feed(silence(0.3) + voiced(0.09))  # onset with a full 0.3 s pre-roll
    s.on_result(request(s, "partial"), result("hmm"))
    ev = s.feed(voiced(0.03) + silence(0.3))
    assert ev == [Partial(0, pytest.approx(0.09), "", "", pytest.approx(0.42))]
    assert s.next_request() is None and s.finals == 0


def test_long_utterance_is_cut_at_the_last_committed_word() -> None:
    s = make_stream(max_utterance_s=1.0)
    words = "alpha beta gamma delta epsilon"
    s.feed(voiced(0.3))
    s.on_result(request(s, "partial"), result("alpha"))
    s.feed(voiced(0.3))
    s.on_result(request(s, "partial"), result("alpha beta gamma"))
    s.feed(voiced(0.3))
    s.on_result(request(s, "partial"), result("alpha beta gamma delta"))
    s.feed(voiced(0.3))  # 1.2 s >= max_utterance_s
    ev = s.on_result(request(s, "partial"), result(words))
    [cut] = finals(ev)
    assert (cut.text, cut.utterance, cut.start, cut.end) == ("alpha beta gamma delta", 0, 0.0, 0.8)
    # The rest continues as a new utterance starting at the cut, its pending word still shown as unstable.
    assert ev[-1] == Partial(1, pytest.approx(0.8), "", "epsilon", 1.2)

    s.feed(voiced(0.3))
    req = request(s, "partial")
    assert req.utterance == 1 and req.offset == pytest.approx(0.8)
    assert len(req.audio) == round(0.7 * RATE)
    # Word times are relative to the new offset (0.8 s).
    assert partials(s.on_result(req, result("epsilon zeta"))) == [("epsilon", "zeta")]
    s.stop()
    [rest] = finals(s.on_result(request(s, "final"), result("epsilon zeta eta")))
    assert (rest.text, rest.utterance, rest.start) == ("epsilon zeta eta", 1, pytest.approx(0.8))
    assert s.idle


def test_lag_is_zero_when_idle() -> None:
    s = make_stream()
    assert s.lag_s == 0.0
    s.feed(silence(1.98))
    assert s.lag_s == 0.0 and s.idle
    s.feed(voiced(0.6))  # onset at 2.07 s, pre-roll back to 1.77 s, received 2.58 s
    assert s.lag_s == pytest.approx(0.81)
    s.on_result(request(s, "partial"), result("hello there"))
    assert s.lag_s == pytest.approx(0.0)
    s.stop()
    s.on_result(request(s, "final"), result("hello there"))
    assert s.idle and s.lag_s == 0.0


def test_partials_pause_while_lagging() -> None:
    s = make_stream(max_lag_s=1.0)
    s.feed(voiced(1.2))
    assert s.lag_s > 1.0
    assert not s.wants_partial() and s.next_request() is None


def test_t0_offsets_all_times() -> None:
    s = make_stream(t0=100.0)
    s.feed(voiced(0.3))
    assert s.received_s == pytest.approx(100.3)
    assert s.lag_s == pytest.approx(0.3)
    req = request(s, "partial")
    assert req.offset == pytest.approx(100.0) and req.end == pytest.approx(100.3)
    [p] = s.on_result(req, result("alpha"))
    assert isinstance(p, Partial) and p.start == pytest.approx(100.0) and p.end == pytest.approx(100.3)
    s.stop()
    final_req = request(s, "final")
    assert final_req.speech_end == pytest.approx(100.3)
    [final] = finals(s.on_result(final_req, result("alpha beta", start=0.05)))
    assert final.start == pytest.approx(100.05) and final.end == pytest.approx(100.45)
    assert final.words[0].start == pytest.approx(100.05)


def test_fully_agreed_utterance_is_finalised_without_a_final_decode() -> None:
    s = make_stream(early_final_s=0)
    s.feed(voiced(0.6))
    s.on_result(request(s, "partial"), result("hello there"))
    s.feed(silence(0.27))  # still inside the hangover: the decodes hear the silence after the words
    assert partials(s.on_result(request(s, "partial"), result("hello there"))) == [("hello there", "")]
    events = s.feed(silence(0.1))  # hangover over
    assert [f.text for f in finals(events)] == ["hello there"]
    assert s.next_request() is None


def test_unagreed_tail_still_gets_a_final_decode() -> None:
    s = make_stream(early_final_s=0)
    s.feed(voiced(0.6))
    s.on_result(request(s, "partial"), result("hello there"))
    s.feed(silence(0.27))
    s.on_result(request(s, "partial"), result("hello there friend"))
    assert finals(s.feed(silence(0.1))) == []
    req = request(s, "final")
    assert [f.text for f in finals(s.on_result(req, result("hello there friend")))] == ["hello there friend"]


def paused_after_hello_there() -> tuple[LectureStream, DecodeRequest]:
    """0.6 s of speech decoded as "hello there", then 210 ms of pause: the early final decode is asked for."""
    s = make_stream(early_final_s=0.2)
    s.feed(voiced(0.6))
    s.on_result(request(s, "partial"), result("hello there"))
    s.feed(silence(0.21))
    return s, request(s, "final")


def test_an_early_final_during_the_pause_is_the_final_when_the_pause_ends_the_utterance() -> None:
    s = make_stream(early_final_s=0.2)
    s.feed(voiced(0.6))
    s.on_result(request(s, "partial"), result("hello there"))
    s.feed(silence(0.18))
    assert s.next_request() is None  # a pause shorter than early_final_s: nothing yet
    s.feed(silence(0.03))
    early = request(s, "final")
    assert early.early and early.speech_end == pytest.approx(0.6) and len(early.audio) == round(0.81 * RATE)
    # Back while the hangover still runs: shown as the newest hypothesis, and no partial decodes of the pause.
    assert partials(s.on_result(early, result("hello there friend"))) == [("hello there", "friend")]
    s.feed(silence(0.06))
    assert s.next_request() is None
    [final] = finals(s.feed(silence(0.03)))  # the hangover ends: the final is out without another decode
    assert final.text == "hello there friend" and s.pending_finals == 0 and s.next_request() is None


def test_an_early_final_back_after_the_hangover_is_the_final() -> None:
    s, early = paused_after_hello_there()
    assert finals(s.feed(silence(0.2))) == [] and s.pending_finals == 1  # ended while the decode runs
    [final] = finals(s.on_result(early, result("hello there friend")))
    assert final.text == "hello there friend" and s.pending_finals == 0 and s.next_request() is None


def test_speech_after_an_early_final_makes_it_a_hypothesis_and_the_utterance_goes_on() -> None:
    s, early = paused_after_hello_there()
    s.feed(voiced(0.3))  # the speaker goes on before the decode is back
    assert partials(s.on_result(early, result("hello there friend"))) == [("hello there", "friend")]
    assert request(s, "partial").utterance == 0  # new speech: partials again
    s.feed(silence(0.21))
    second = request(s, "final")  # a new pause: a new early final, which hears the words after the first pause
    assert second.early and second.speech_end == pytest.approx(1.11)
    s.feed(silence(0.1))
    [final] = finals(s.on_result(second, result("hello there friend of mine", step=0.22)))
    assert final.text == "hello there friend of mine"


def test_an_early_final_that_missed_later_speech_is_not_the_final() -> None:
    s, early = paused_after_hello_there()
    s.feed(voiced(0.3) + silence(0.3))  # more speech, then the hangover ends: all while the early decode ran
    assert s.pending_finals == 1
    assert finals(s.on_result(early, result("hello there"))) == []  # it did not hear "friend"
    req = request(s, "final")
    assert not req.early and req.speech_end == pytest.approx(1.11)
    [final] = finals(s.on_result(req, result("hello there friend", step=0.3)))
    assert final.text == "hello there friend"


def test_finals_are_owed_in_utterance_order() -> None:
    s = make_stream()
    s.feed(voiced(0.6))
    s.on_result(request(s, "partial"), result("first one"))
    s.feed(silence(0.4))  # utterance 0 ends unagreed: it owes a final decode
    s.feed(voiced(0.6))
    assert request(s, "final").utterance == 0  # the final comes first; keep it pending while utterance 1 runs
    # no partials for utterance 1 while utterance 0 owes its final: it ends and queues behind it, never before
    s.feed(silence(0.4))
    assert [u.id for u in s._ended] == [0, 1]
