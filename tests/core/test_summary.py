"""Offline summary and retrieval on known text; LLM summary checking."""

from __future__ import annotations

import pytest

from realtime.core.protocol import Final
from realtime.notes.index import TranscriptIndex
from realtime.notes.summary import check_summary, extractive_answer, extractive_summary, retrieve

FINALS = [
    Final(0, 0, 1.0, 1.0 + 5, "Today we study enzymes. Enzymes are proteins that speed up chemical reactions."),
    Final(1, 1, 9.5, 9.5 + 5, "An enzyme lowers the activation energy by about 30 percent or more."),
    Final(2, 2, 18.0, 18.0 + 5, "The active site binds the substrate like a lock and a key."),
    Final(3, 3, 70.0, 70.0 + 5, "For next week, read chapter four of the textbook on enzyme kinetics."),
    Final(4, 4, 80.0, 80.0 + 5, "So enzymes make life fast enough to be possible."),
]


def test_extractive_summary_has_every_section():
    md = extractive_summary(FINALS, [], "bio101")
    assert md.startswith("# bio101")
    for section in ("**Core topic:**", "## Main points", "## Important details", "## Further reading",
                    "## Conclusion"):
        assert section in md
    assert "1. **" in md  # numbered "term: explanation" lines
    assert "30 percent" in md.split("## Important details")[1]  # numbers go to the details
    assert "chapter four" in md.split("## Further reading")[1]
    assert check_summary(md)  # our own summary passes the check an LLM summary must pass


def test_llm_summary_without_the_structure_is_refused():
    with pytest.raises(ValueError):
        check_summary("Here is a summary: the lecture was about enzymes.")
    assert check_summary("```markdown\n# T\n## Main points\n1. **a**: b\n## Conclusion\nc\n```").startswith("# T")


def index_of(finals):
    index = TranscriptIndex()
    for i, f in enumerate(finals):
        index.add(i, f.text)
    return index


def test_retrieval_finds_the_grounding_segments():
    index = index_of(FINALS)
    hits = retrieve(index, FINALS, "What does the active site bind?")
    assert hits and hits[0].id == 2
    assert retrieve(index, FINALS, "quantum chromodynamics") == []
    answer = extractive_answer(hits)
    assert "[0:18]" in answer and "substrate" in answer
