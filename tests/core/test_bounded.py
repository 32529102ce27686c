"""Notes, summary and exports stay cheap on a long lecture, and the faster code computes exactly what the simple code
did: the block-wise TextRank is bounded, sparse key terms equal the dense ones, the JSON export equals
json.dumps(indent=1), and the cue programme's measured layout equals laying every cue out."""

from __future__ import annotations

import json
import random
import re
import tracemalloc
from functools import cache
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.loopstall import lecture_finals
from realtime.core import export
from realtime.core.protocol import Final, Word
from realtime.notes import extractive
from realtime.notes.extractive import BLOCK, extract, key_terms, sentences, tfidf, top_terms
from realtime.notes.summary import extractive_summary


def typed_finals(hours: float, seed: int) -> list[Final]:
    return [Final.from_dict(f) for f in lecture_finals(hours, seed)]


@cache
def six_hours() -> list[Final]:
    return typed_finals(6.0, seed=5)


def peak_mib(fn: Any, *args: Any) -> tuple[Any, float]:
    tracemalloc.start()
    try:
        result = fn(*args)
        return result, tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def test_notes_of_a_six_hour_lecture_are_bounded() -> None:
    finals = six_hours()
    segments = [(f.id, f.text) for f in finals]
    assert len(sentences(segments)) > 15 * BLOCK
    bullets, peak = peak_mib(extract, segments, 40)
    assert peak < 100, f"{peak:.0f} MiB"  # 10 MiB measured; the one-graph ranking needed 1,575 MiB
    assert 10 <= len(bullets) <= 40
    assert all(re.fullmatch(r"x\d+\.\d+", b.id) for b in bullets) and len({b.id for b in bullets}) == len(bullets)
    refs = [b.refs[0] for b in bullets]
    assert refs == sorted(refs) and all(0 <= r < len(finals) for r in refs)
    hours = {int(finals[r].start // 3600) for r in refs}
    assert len(hours) >= 4  # every block has its share of candidates: the notes cover the lecture
    assert extract(segments, 40) == bullets  # deterministic, so bullets keep their ids
    assert len(extract(segments, 5)) <= 5


def test_summary_of_a_six_hour_lecture_is_bounded() -> None:
    finals = six_hours()
    markdown, peak = peak_mib(extractive_summary, finals, [], "long")
    assert peak < 100, f"{peak:.0f} MiB"  # 12 MiB measured; 1,738 MiB before
    assert markdown.startswith("# long: ") and "## Main points" in markdown and "## Conclusion" in markdown


def test_a_lecture_just_over_one_block_is_ranked_nearly_as_one_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    finals = typed_finals(0.35, seed=8)
    segments = [(f.id, f.text) for f in finals]
    assert BLOCK < len(sentences(segments)) < 1.2 * BLOCK
    bullets = extract(segments, 12)
    monkeypatch.setattr(extractive, "BLOCK", 10**6)
    one_graph = extract(segments, 12)
    assert len(bullets) == len(one_graph) == 12
    assert len({b.id for b in bullets} & {b.id for b in one_graph}) >= 9  # 12 of 12 measured


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.sampled_from("cell energy light water carbon oxygen gene loss rate".split()),
                         max_size=12), min_size=1, max_size=60), st.integers(1, 12))
def test_sparse_key_terms_equal_the_dense_ones(docs: list[list[str]], k: int) -> None:
    assert top_terms(docs, k) == key_terms(*tfidf(docs), k)


# ---------------------------------------------------------------- exports

SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=True),
                   st.text(max_size=8))
JSONISH = st.recursive(SCALAR, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner, max_size=4),
    st.lists(st.dictionaries(st.text(max_size=5), SCALAR, max_size=4), max_size=4)), max_leaves=20)


@settings(max_examples=400, deadline=None)
@given(JSONISH, st.integers(0, 5))
def test_indented_json_is_json_dumps_indent_1(value: Any, depth: int) -> None:
    expected = json.dumps(value, ensure_ascii=False, indent=1).replace("\n", "\n" + " " * depth)
    assert export._indented(value, depth) == expected


def test_json_export_of_a_long_lecture_is_json_dumps_indent_1() -> None:
    finals = typed_finals(0.5, seed=2)
    odd = {"id": "n", "text": "é", "refs": [1], "parent": None, "odd": {"nested": [1.5, None, "x\ny"]}}  # not flat
    doc = json.loads(export.to_json("r", "T", finals, [odd], "s"))
    assert export.to_json("r", "T", finals, doc["notes"], "s") == json.dumps(doc, ensure_ascii=False, indent=1) + "\n"


def laid_out_cues(final: Final) -> list[tuple[float, float, list[str]]]:
    """The cue programme as first written: every candidate cue laid out with `_layout`."""
    units = export._units(final)
    n = len(units)
    best: list[tuple[float, int, list[str]]] = [(0.0, 0, [])] + [(float("inf"), 0, [])] * n
    for i in range(n):
        if best[i][0] == float("inf"):
            continue
        for j in range(i + 1, n + 1):
            last = units[j - 1]
            if j - i > 1 and (last.end - units[i].start > export.MAX_CUE_S
                              or last.start - units[j - 2].end >= export.MAX_PAUSE_S):
                break
            lines = export._layout(units[i:j])
            if lines is None:
                break
            slack = max(0, export.MAX_LINES * export.MAX_LINE - sum(map(len, lines)))
            cost = best[i][0] + 10_000 + slack**2 - (3_000 if last.text[-1] in ".?!" else 0)
            if cost < best[j][0]:
                best[j] = (cost, i, lines)
    out, j = [], n
    while j:
        _, i, lines = best[j]
        out.append((units[i].start, units[j - 1].end, lines))
        j = i
    return out[::-1]


@pytest.mark.parametrize("seed", range(6))
def test_measured_cue_layout_equals_laying_out_every_cue(seed: int) -> None:
    rng = random.Random(seed)
    pieces = ["a", "I", "(", ")", ",", ".", "?", "word", "longer-word", "我", "们", "-", "well,", "x" * 41, "y" * 43,
              "z" * 60, "sentence."]
    for _ in range(150):
        t, words = 0.0, []
        for _ in range(rng.randint(1, 50)):
            d = rng.uniform(0, 1.2)
            words.append(Word(rng.choice(pieces), round(t, 2), round(t + d, 2), 0.9))
            t += d + (rng.uniform(1, 3) if rng.random() < 0.05 else 0)
        final = Final(0, 0, 0.0, round(t, 2), "", words=words)
        assert export._final_cues(final) == laid_out_cues(final)
    for final in typed_finals(0.2, seed=seed):
        assert export._final_cues(final) == laid_out_cues(final)
