"""Benchmark alignment and metrics on hand-made inputs with known answers (no model, no server)."""

from __future__ import annotations

import pytest

from benchmarks.align import (
    StreamWord,
    TimedWord,
    align,
    final_delays,
    lag_series,
    match_truth,
    schedule_chunks,
    slope,
    stream_words,
    token,
)
from testbed.latency import summary


def test_token_drops_case_and_punctuation_but_keeps_apostrophes() -> None:
    assert token("Hello,") == "hello"
    assert token("don't") == "don't"
    assert token("'quoted'") == "quoted"
    assert token("...") == ""


@pytest.mark.parametrize(("ref", "hyp", "pairs"), [
    ("a b c d", "a b c d", [(0, 0), (1, 1), (2, 2), (3, 3)]),
    ("a b c d", "a x c d", [(0, 0), (2, 2), (3, 3)]),  # substitution: no timing
    ("a b c d", "a c d", [(0, 0), (2, 1), (3, 2)]),  # deletion
    ("a b c", "a q b c", [(0, 0), (1, 2), (2, 3)]),  # insertion
    ("", "a b", []),
    ("a b", "", []),
    ("the cat the dog", "the dog", [(0, 0), (3, 1)]),  # a repeated word is matched where it fits best
    ("x a b c y", "a b c", [(1, 0), (2, 1), (3, 2)]),
])
def test_align_matches_exact_words_on_a_minimum_edit_path(ref: str, hyp: str, pairs: list) -> None:
    got = align(ref.split(), hyp.split())
    assert len(got) == len(pairs)
    assert [(ref.split()[i], hyp.split()[j]) for i, j in got] == [(ref.split()[i], hyp.split()[j]) for i, j in pairs]


def test_align_pairs_are_strictly_increasing() -> None:
    ref = "one two three four five six seven".split()
    hyp = "one three three four six seven eight".split()
    got = align(ref, hyp)
    assert all(a[0] < b[0] and a[1] < b[1] for a, b in zip(got, got[1:], strict=False))
    assert {ref[i] for i, _ in got} == {"one", "three", "four", "six", "seven"}


def partial(t: float, utt: int, committed: str, unstable: str) -> dict:
    return {"type": "partial", "t": t, "utterance": utt, "committed": committed, "unstable": unstable}


def final(t: float, utt: int, words: list[tuple[str, float]]) -> dict:
    return {"type": "final", "t": t, "utterance": utt, "end": words[-1][1],
            "text": " ".join(w for w, _ in words), "words": [{"w": w, "start": e - 0.2, "end": e} for w, e in words]}


EVENTS = [
    partial(1.0, 0, "", "Hello"),
    partial(1.5, 0, "", "Hello word"),  # "word" is not in the final: no credit
    partial(2.0, 0, "Hello", "world, how"),
    partial(2.5, 0, "Hello world,", "how are"),
    final(3.0, 0, [("Hello", 0.5), ("world,", 0.9), ("how", 1.8), ("are", 2.2), ("you?", 2.6)]),
    {"type": "status", "state": "live", "t": 2.0, "audio_s": 2.0, "lag_s": 0.3},
    partial(5.0, 1, "", "Fine"),
    final(6.0, 1, [("Fine.", 4.5)]),
    {"type": "status", "state": "stopped", "t": 7.0, "audio_s": 7.0, "lag_s": 0.0},
]


def test_stream_words_first_seen_and_committed() -> None:
    words = stream_words(EVENTS)
    got = [(w.text, w.first_seen, w.committed) for w in words]
    assert got == [
        ("Hello", 1.0, 2.0),
        ("world,", 2.0, 2.5),  # first seen when aligned exactly, not when "word" was shown
        ("how", 2.0, 3.0),
        ("are", 2.5, 3.0),
        ("you?", 3.0, 3.0),  # only in the final
        ("Fine.", 5.0, 6.0),
    ]
    assert [w.final for w in words] == [3.0] * 5 + [6.0]


def test_match_truth_times_against_truth_ends_and_skips_wrong_words() -> None:
    truth = [TimedWord("hello", 0.2, 0.6), TimedWord("world", 0.6, 1.0), TimedWord("how", 1.5, 1.9),
             TimedWord("are", 1.9, 2.1), TimedWord("you", 2.1, 2.5), TimedWord("fine", 4.0, 4.4)]
    words = stream_words(EVENTS)
    timings = match_truth(words, truth)
    assert [w.text for w in timings] == ["Hello", "world,", "how", "are", "you?", "Fine."]
    assert [round(w.to_commit, 3) for w in timings] == [1.4, 1.5, 1.1, 0.9, 0.5, 1.6]
    assert [round(w.to_first, 3) for w in timings] == [0.4, 1.0, 0.1, 0.4, 0.5, 0.6]
    # At 2x, a word ending at lecture time 4.4 has been sent at wall time 2.2.
    assert round(match_truth(words, truth, speed=2.0)[-1].to_commit, 3) == 3.8
    # End of speech to final: the final's receive time minus its last matched truth word's end.
    assert [round(d, 3) for d in final_delays(EVENTS, timings)] == [0.5, 1.6]
    # A wrong word gets no timing; the others keep theirs.
    wrong = [StreamWord("hollow", 0, 0.5, 1.0, 2.0, 3.0)] + words[1:]
    assert [w.text for w in match_truth(wrong, truth)] == ["world,", "how", "are", "you?", "Fine."]


def test_lag_series_reads_live_status_only() -> None:
    assert lag_series(EVENTS) == [(2.0, 2.0, 0.3)]


def test_slope() -> None:
    assert slope([0, 1, 2, 3], [1, 3, 5, 7]) == pytest.approx(2.0)
    assert slope([0, 1, 2], [4, 4, 4]) == 0.0
    assert slope([1.0], [2.0]) == 0.0


def test_schedule_chunks_waits_for_audio_and_for_the_previous_chunk() -> None:
    # Chunks ready every 2 s; the second takes 3 s so the third queues behind it.
    assert schedule_chunks([2, 4, 6, 8], [1, 3, 1, 0.5]) == [3, 7, 8, 8.5]


def test_summary_has_the_mean_the_papers_report() -> None:
    s = summary([1.0, 2.0, 3.0, 4.0, 10.0])
    assert s["n"] == 5 and s["mean"] == 4.0 and s["median"] == 3.0 and s["max"] == 10.0
    assert s["p90"] == pytest.approx(7.6) and s["p95"] == pytest.approx(8.8)
