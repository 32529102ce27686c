"""The incremental BM25 index behind questions: same ranking however it was built, lecture order, k, no false hits."""

from __future__ import annotations

import math
import random
import threading
from collections import Counter

import pytest

from realtime.core.protocol import Final
from realtime.notes.extractive import content_words
from realtime.notes.index import TranscriptIndex
from realtime.notes.summary import retrieve

WORDS = ("enzyme substrate protein membrane energy light chloroplast carbon oxygen water gradient loss function "
         "learning rate network layer neuron market price demand supply empire treaty").split()


def texts(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS[: rng.randint(3, len(WORDS))]) for _ in range(rng.randint(0, 14)))
            for _ in range(n)]


def built(docs: list[str], positions: list[int] | None = None) -> TranscriptIndex:
    index = TranscriptIndex()
    for p, text in zip(positions or range(len(docs)), docs, strict=True):
        index.add(p, text)
    return index


def brute_force(docs: list[str], question: str, k: int) -> list[int]:
    """BM25 scored over every document, from its definition."""
    bags = [Counter(content_words(d)) for d in docs]
    n, avg = len(docs), sum(sum(b.values()) for b in bags) / len(docs)
    scores = []
    for b in bags:
        length, score = sum(b.values()), 0.0
        for w in dict.fromkeys(content_words(question)):
            df = sum(1 for other in bags if w in other)
            if b[w]:
                idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
                score += idf * b[w] * 2.2 / (b[w] + 1.2 * (0.25 + 0.75 * length / avg))
        scores.append(score)
    best = sorted(range(n), key=lambda i: (-scores[i], i))[:k]
    return sorted(i for i in best if scores[i] > 0)


def test_incremental_adds_rank_like_an_index_built_at_once() -> None:
    docs = texts(1, 300)
    questions = [" ".join(random.Random(q).sample(WORDS, 3)) for q in range(40)]
    grown = TranscriptIndex()
    for i, text in enumerate(docs):
        grown.add(i, text)
        if i % 50 == 0:
            grown.search(questions[i % len(questions)])  # searching while the lecture goes on changes nothing
    at_once = built(docs)
    assert len(grown) == len(at_once) == len(docs)
    for q in questions:
        assert grown.search(q, 5) == at_once.search(q, 5) == brute_force(docs, q, 5)


def test_unknown_words_and_stopwords_find_nothing() -> None:
    index = built(texts(2, 50))
    assert index.search("quantum chromodynamics") == []
    assert index.search("what is the") == []  # stopwords only
    assert index.search("") == []
    assert TranscriptIndex().search("enzyme") == []


def test_positions_come_in_lecture_order_and_k_is_respected() -> None:
    docs = ["the enzyme binds its substrate", "parking closed next week", "enzyme enzyme enzyme kinetics",
            "the substrate of an enzyme", "an enzyme", "enzyme and energy"]
    positions = [0, 3, 4, 9, 10, 12]  # finals without content words need not be added
    index = built(docs, positions)
    for k in range(0, 7):
        hits = index.search("enzyme substrate", k)
        assert len(hits) <= k and hits == sorted(hits) and set(hits) <= {0, 4, 9, 10, 12}
    assert index.search("enzyme substrate", 2) == [0, 9]  # the two that have both words
    assert index.search("parking", 4) == [3]  # only positive scores, however large k


def test_positions_must_increase() -> None:
    index = built(["one enzyme", "two enzymes"])
    with pytest.raises(ValueError):
        index.add(1, "again")
    assert len(index) == 2


def test_retrieve_returns_the_finals() -> None:
    finals = [Final(i, i, 4.0 * i, 4.0 * i + 3, t) for i, t in enumerate(texts(3, 40))]
    index = built([f.text for f in finals])
    hits = retrieve(index, finals, "enzyme substrate", k=3)
    assert hits == [finals[i] for i in index.search("enzyme substrate", 3)] and 0 < len(hits) <= 3
    assert retrieve(index, finals[:0], "enzyme") == []  # finals not (yet) given are never returned


def test_searching_while_another_thread_adds() -> None:
    docs = texts(4, 3000)
    index, errors = built(docs[:100]), []

    def add() -> None:
        try:
            for i in range(100, len(docs)):
                index.add(i, docs[i])
        except Exception as exc:  # pragma: no cover - the failure being tested for
            errors.append(exc)

    thread = threading.Thread(target=add)
    thread.start()
    while thread.is_alive():
        hits = index.search("enzyme gradient price", 4)
        assert hits == sorted(hits) and len(hits) <= 4
    thread.join()
    assert not errors and len(index) == len(docs)
    assert index.search("enzyme gradient price", 4) == built(docs).search("enzyme gradient price", 4)
