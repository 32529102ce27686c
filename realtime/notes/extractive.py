"""Offline notes: TextRank over the sentences of the transcript (numpy only, no model, no network).

Sentences are TF-IDF vectors of their content words; their cosine similarities form a graph whose PageRank scores
say which sentences the lecture keeps coming back to. The best-ranked sentences, near-duplicates removed, become
bullets in lecture order, with the lecture's key terms (highest total TF-IDF) in bold. Bullet ids derive from the
segment and sentence they quote, so a bullet keeps its id from one update to the next.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from realtime.notes.state import MAX_TEXT, Bullet

STOPWORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being below between both
but by can could did do does doing don't down during each even every few for from further had has have having he her
here hers him his how i if in into is it its itself just let like ll me more most much my no nor not now of off on
once one only or other our out over own really re same she should so some such than that the their them then there
these they this those through to too under until up us very was way we well were what when where which while who
whom why will with would yes you your going get got know think thing things okay right see say said also
""".split())
_WORD = re.compile(r"[^\W\d_][\w'-]*", re.UNICODE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class Sentence:
    segment: int
    index: int
    text: str


def sentences(segments: list[tuple[int, str]], min_words: int = 5) -> list[Sentence]:
    out = []
    for seg_id, text in segments:
        for i, part in enumerate(p.strip() for p in _SENTENCE_END.split(text)):
            if len(part.split()) >= min_words:
                out.append(Sentence(seg_id, i, part))
    return out


def content_words(text: str) -> list[str]:
    return [w for w in (m.group(0).lower() for m in _WORD.finditer(text)) if w not in STOPWORDS and len(w) > 2]


def tfidf(docs: list[list[str]]) -> tuple[np.ndarray, list[str]]:
    vocab = sorted({t for d in docs for t in d})
    index = {t: i for i, t in enumerate(vocab)}
    matrix = np.zeros((len(docs), len(vocab)))
    for r, d in enumerate(docs):
        for t in d:
            matrix[r, index[t]] += 1
    df = (matrix > 0).sum(axis=0)
    matrix *= np.log((1 + len(docs)) / (1 + df)) + 1
    return matrix, vocab


def textrank(matrix: np.ndarray, damping: float = 0.85, iterations: int = 100) -> np.ndarray:
    """PageRank scores of the cosine-similarity graph between rows."""
    n = matrix.shape[0]
    if n == 0:
        return np.zeros(0)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    unit = np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)
    sim = unit @ unit.T
    np.fill_diagonal(sim, 0.0)
    out_weight = sim.sum(axis=1, keepdims=True)
    transition = np.divide(sim, out_weight, out=np.full_like(sim, 1.0 / n), where=out_weight > 0)
    scores = np.full(n, 1.0 / n)
    for _ in range(iterations):
        new = (1 - damping) / n + damping * transition.T @ scores
        if np.abs(new - scores).sum() < 1e-9:
            return new
        scores = new
    return scores


def key_terms(matrix: np.ndarray, vocab: list[str], k: int) -> list[str]:
    if not vocab:
        return []
    weight = matrix.sum(axis=0)
    return [vocab[i] for i in np.argsort(-weight, kind="stable")[:k] if weight[i] > 0]


def emphasise(text: str, terms: list[str]) -> str:
    for term in terms:
        text = re.sub(rf"(?<![\w*])({re.escape(term)})(?![\w*])", r"**\1**", text, count=1, flags=re.IGNORECASE)
    return text


def extract(segments: list[tuple[int, str]], max_bullets: int = 12, redundancy: float = 0.5) -> list[Bullet]:
    """Bullets for a transcript given as (final id, text) pairs."""
    sents = sentences(segments)
    if not sents:
        return []
    docs = [content_words(s.text) for s in sents]
    matrix, vocab = tfidf(docs)
    # Ties (sentences sharing no terms, as in a lecture's first minutes) go to the more informative sentence.
    scores = textrank(matrix) * (1 + 0.1 * np.log1p([len(set(d)) for d in docs]))
    k = min(max_bullets, max(1, math.ceil(len(sents) / 3)))
    norms = np.linalg.norm(matrix, axis=1)
    chosen: list[int] = []
    for i in np.argsort(-scores, kind="stable"):
        if len(chosen) == k:
            break
        if norms[i] == 0:
            continue
        sims = [float(matrix[i] @ matrix[j] / (norms[i] * norms[j])) for j in chosen]
        if all(s < redundancy for s in sims):
            chosen.append(int(i))
    terms = key_terms(matrix, vocab, k=max(3, k))
    bullets = []
    for i in sorted(chosen, key=lambda j: (sents[j].segment, sents[j].index)):
        s = sents[i]
        text = s.text[:1].upper() + s.text[1:]
        bullets.append(Bullet(f"x{s.segment}.{s.index}", emphasise(text, terms)[:MAX_TEXT], (s.segment,)))
    return bullets
