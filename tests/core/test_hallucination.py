"""Hallucination guards: phantom phrases, repetition loops, stutters, non-speech segments, leading phantom words."""

from __future__ import annotations

import pytest

from realtime.core.agreement import HypWord
from realtime.core.hallucination import Segment, clean, cut_repetitions, is_phantom


def words(text: str, start: float = 0.0, step: float = 0.3, prob: float = 0.9) -> list[HypWord]:
    return [HypWord(w, start + i * step, start + (i + 1) * step, prob) for i, w in enumerate(text.split())]


def seg(text: str, start: float = 0.0, **kw: float) -> Segment:
    return Segment(words(text, start), **kw)


def texts(ws: list[HypWord]) -> str:
    return " ".join(w.text for w in ws)


@pytest.mark.parametrize(
    "text",
    [
        "Thanks for watching!",
        "Thank you for watching.",
        "字幕由Amara.org社群提供",
        "Untertitel der Amara.org-Community",
        "Sous-titres réalisés para la communauté d'Amara.org",
        "Subtitles by the Amara.org community",
        "Visit www.example.com",
    ],
)
def test_phantom_phrase_alone_over_silence_is_dropped(text: str) -> None:
    assert is_phantom(words(text))
    assert clean([seg(text)]) == []


@pytest.mark.parametrize(
    "text",
    [
        "Good communication is the key to teamwork.",
        "I want to thank you all for coming today.",
        "The community around the project is large.",
        "So today we look at subtitles and captions.",
    ],
)
def test_real_sentences_are_kept(text: str) -> None:
    assert not is_phantom(words(text))
    assert texts(clean([seg(text)])) == text


def test_phantom_after_the_end_of_speech_is_dropped() -> None:
    real = seg("This concludes the proof.", 0.0)  # ends at 1.2 s
    phantom = seg("Thanks for watching!", 2.0)
    assert texts(clean([real, phantom], speech_end=1.3)) == "This concludes the proof."


def test_confident_sign_off_inside_speech_is_kept() -> None:
    real = seg("Any questions?", 0.0)
    thanks = seg("Thank you.", 0.6)
    assert texts(clean([real, thanks], speech_end=3.0)) == "Any questions? Thank you."


def test_doubtful_sign_off_is_dropped_even_inside_speech() -> None:
    real = seg("Any questions?", 0.0)
    thanks = seg("Thank you.", 0.6, no_speech_prob=0.4)
    assert texts(clean([real, thanks], speech_end=3.0)) == "Any questions?"


def test_phantom_fragment_is_dropped_even_when_confident() -> None:
    real = seg("We start with lemma two.", 0.0)
    credit = seg("字幕由Amara.org社群提供", 1.5)
    assert texts(clean([real, credit], speech_end=5.0)) == "We start with lemma two."


def test_segment_flagged_as_non_speech_is_dropped() -> None:
    noise = seg("the the rain falls", 0.0, no_speech_prob=0.7, avg_logprob=-1.2)
    real = seg("Now the theorem.", 1.5)
    assert texts(clean([noise, real])) == "Now the theorem."


@pytest.mark.parametrize(("no_speech_prob", "avg_logprob"), [(0.7, -0.5), (0.5, -1.2), (0.0, -1.4)])
def test_segment_with_only_one_bad_sign_is_kept(no_speech_prob: float, avg_logprob: float) -> None:
    assert texts(clean([seg("Now the theorem.", no_speech_prob=no_speech_prob, avg_logprob=avg_logprob)])) == (
        "Now the theorem.")


def test_very_low_logprob_segment_is_dropped() -> None:
    assert clean([seg("Now the theorem.", avg_logprob=-1.6)]) == []


def test_ngram_repeated_three_times_is_cut_to_one() -> None:
    loop = words("and then we go and then we go and then we go and then")
    assert texts(cut_repetitions(loop)) == "and then we go"


def test_ngram_repeated_twice_is_kept() -> None:
    text = "we go and then we go and then stop"
    assert texts(cut_repetitions(words(text))) == text


def test_repetition_is_cut_after_real_text() -> None:
    ws = words("the limit is one one one one one")
    assert texts(cut_repetitions(ws)) == "the limit is one"


def test_single_word_three_times_is_kept() -> None:
    assert texts(cut_repetitions(words("no no no stop"))) == "no no no stop"


def test_loop_is_cut_through_clean() -> None:
    assert texts(clean([seg("I think I think I think I think")])) == "I think"


def test_stutter_with_near_simultaneous_onsets_is_dropped() -> None:
    ws = [HypWord("the", 0.0, 0.1), HypWord("the", 0.1, 0.3), HypWord("proof", 0.3, 0.7)]
    assert texts(cut_repetitions(ws)) == "the proof"


def test_deliberate_repeat_is_kept() -> None:
    ws = [HypWord("that", 0.0, 0.2), HypWord("that", 0.3, 0.5), HypWord("works", 0.5, 0.9)]
    assert texts(cut_repetitions(ws)) == "that that works"


def test_leading_near_zero_probability_words_are_dropped() -> None:
    ws = [HypWord("continued", 0.0, 0.1, 0.001), HypWord("prompt", 0.1, 0.2, 0.01),
          HypWord("Today", 0.2, 0.5, 0.9), HypWord("maybe", 0.5, 0.8, 0.01)]
    # Only the leading run goes; a low-probability word later in the text stays.
    assert texts(clean([Segment(ws)])) == "Today maybe"


def test_empty_segments_are_ignored() -> None:
    assert clean([Segment([]), seg("Hello there.")]) == words("Hello there.")


def test_timeless_words_after_the_speech_are_dropped() -> None:
    echo = [HypWord("However,", 0.87, 1.31, 0.72), HypWord("however,", 1.69, 1.69, 0.69)]
    assert texts(clean([Segment(echo)], speech_end=1.56)) == "However,"
    assert texts(clean([Segment(echo)])) == "However, however,"  # no speech end known (a partial): kept
    spoken = [HypWord("However,", 0.87, 1.31, 0.72), HypWord("now", 1.5, 1.7, 0.69)]  # a real word, if late
    assert texts(clean([Segment(spoken)], speech_end=1.4)) == "However, now"


def test_a_repeat_of_the_last_word_after_the_speech_is_dropped() -> None:
    """The 8 kHz-upsampled clip: the utterance ends 0.1 s into the next word, which base hears as the last again."""
    echo = [HypWord("However,", 0.9, 1.32, 0.8), HypWord("however,", 1.62, 2.0, 0.5)]
    assert texts(clean([Segment(echo)], speech_end=1.5)) == "However,"
    said_twice = [HypWord("very,", 0.9, 1.2, 0.8), HypWord("very", 1.3, 1.5, 0.8), HypWord("good", 1.5, 1.8, 0.9)]
    assert texts(clean([Segment(said_twice)], speech_end=1.85)) == "very, very good"  # heard: kept
    assert texts(clean([Segment(echo)], speech_end=1.7)) == "However, however,"  # inside the speech: kept
