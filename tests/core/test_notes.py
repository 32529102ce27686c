"""Notes core: scheduling, versioned changes, validation, and TextRank extraction on known text."""

from __future__ import annotations

import pytest

from realtime.notes.extractive import extract, sentences, textrank, tfidf
from realtime.notes.scheduler import NotesScheduler
from realtime.notes.state import Bullet, InvalidNotes, NotesState

LECTURE = [
    (0, "Today we talk about photosynthesis in plants. Photosynthesis turns light into chemical energy."),
    (1, "The chloroplast is where photosynthesis happens. Inside the chloroplast, chlorophyll absorbs light."),
    (2, "By the way, the parking lot will be closed next week."),
    (3, "The light reactions produce ATP and NADPH from light energy. The Calvin cycle uses ATP to fix carbon."),
    (4, "So photosynthesis needs light, water and carbon dioxide, and it releases oxygen as a product."),
]


def test_scheduler_waits_for_text_then_cadence_or_words() -> None:
    s = NotesScheduler(interval_s=45, min_new_words=100, first_after_words=20)
    assert not s.due(1000.0)  # no text, no update, however long
    s.add_final("a few words only", now=10.0)
    assert not s.due(20.0)
    assert s.due(55.0)  # the cadence
    s.updated()
    s.add_final("word " * 99, now=60.0)
    assert not s.due(61.0)
    s.add_final("more", now=62.0)
    assert s.due(62.0)  # enough new words
    s.updated()
    assert not s.due(500.0)


def test_first_notes_come_after_a_few_words() -> None:
    s = NotesScheduler(first_after_words=20)
    s.add_final("one two three four five six seven eight nine ten " * 2, now=3.0)
    assert s.due(3.0)


def test_state_reports_only_real_changes() -> None:
    state = NotesState()
    a, b = Bullet("a", "first", (0,)), Bullet("b", "second", (1,))
    change = state.apply([a, b], "extractive", known_segments=2)
    assert change and change.version == 1 and change.added == ["a", "b"]
    assert state.apply([a, b], "extractive", known_segments=2) is None  # unchanged: no new version
    change = state.apply([a, Bullet("b", "second, corrected", (1,)), Bullet("c", "third", (1,), parent="a")],
                         "llm", known_segments=2)
    assert change and (change.version, change.added, change.changed, change.removed) == (2, ["c"], ["b"], [])
    change = state.apply([a], "llm", known_segments=2)
    assert change and change.removed == ["b", "c"]


@pytest.mark.parametrize("bad", [
    [Bullet("a", "x"), Bullet("a", "y")],  # duplicate id
    [Bullet("a", "  ")],  # empty
    [Bullet("a", "x" * 1000)],  # too long
    [Bullet("a", "x", parent="zz")],  # unknown parent
    [Bullet("a", "x", refs=(7,))],  # cites a segment that does not exist
])
def test_invalid_proposals_leave_the_notes_alone(bad: list[Bullet]) -> None:
    state = NotesState()
    state.apply([Bullet("keep", "kept", (0,))], "extractive", known_segments=1)
    with pytest.raises(InvalidNotes):
        state.apply(bad, "llm", known_segments=1)
    assert [b.id for b in state.bullets] == ["keep"] and state.version == 1


def test_textrank_prefers_the_central_sentence() -> None:
    docs = [["cell", "energy", "light"], ["cell", "energy"], ["light", "energy"], ["parking", "closed"]]
    matrix, _ = tfidf(docs)
    scores = textrank(matrix)
    assert scores.argmax() == 0 and scores.argmin() == 3
    assert abs(scores.sum() - 1.0) < 1e-6


def test_extract_picks_topical_sentences_in_order_with_stable_ids() -> None:
    bullets = extract(LECTURE, max_bullets=3)
    assert 1 <= len(bullets) <= 3
    texts = " ".join(b.text for b in bullets).lower()
    assert "parking" not in texts
    assert "**photosynthesis**" in texts  # the key term is emphasised
    assert [b.refs[0] for b in bullets] == sorted(b.refs[0] for b in bullets)
    assert len({b.id for b in bullets}) == len(bullets)
    assert extract(LECTURE, max_bullets=3) == bullets  # deterministic: same ids next time
    assert all(b.refs and 0 <= b.refs[0] < len(LECTURE) for b in bullets)


def test_extract_handles_too_little_text() -> None:
    assert extract([]) == []
    assert extract([(0, "Hello.")]) == []
    assert len(sentences([(0, "One two three four five. Six.")])) == 1
