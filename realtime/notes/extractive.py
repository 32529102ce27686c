"""Offline notes: TextRank over the sentences of the transcript (numpy only, no model, no network).

Sentences are TF-IDF vectors of their content words; their cosine similarities form a graph whose PageRank scores
say which sentences the lecture keeps coming back to. The best-ranked sentences, near-duplicates removed, become
bullets in lecture order, with the lecture's key terms (highest total TF-IDF) in bold. Bullet ids derive from the
segment and sentence they quote, so a bullet keeps its id from one update to the next.

Bounded whatever the length of the lecture. The graph of all sentences is quadratic: on a 6-hour lecture (7,500
sentences) it took 13.4 s and 1.57 GiB. So a transcript of more than BLOCK sentences is ranked in two rounds:

1. It is cut into blocks of BLOCK consecutive sentences (fixed boundaries from the start, so that earlier blocks
   keep their ranking as the lecture grows), and each block is ranked by TextRank on its own graph. Each block puts
   forward its best sentences as candidates, in proportion to its length (BLOCK candidates in all: a block's share
   is the rounding of its span of the lecture scaled to BLOCK), so every part of the lecture is represented.
2. The candidates, at most BLOCK, are ranked by TextRank among themselves, which favours what recurs across the
   whole lecture among what mattered locally; near-duplicates are removed as for a short lecture.

Both rounds weight terms by their idf over the whole lecture; key terms come from sparse counts over all
sentences (`top_terms`, the same weights as the dense matrix without building it). Cost: O(n * BLOCK) time and
O(BLOCK^2 + n) memory. Just over BLOCK sentences nearly every sentence is a candidate, so the result is close to
the one-graph ranking; up to BLOCK sentences it is exactly that ranking, unchanged.

Measured on the synthetic 6-hour lecture of `benchmarks.loopstall` (5,404 finals, 7,514 sentences, 2,600 content
words; 2-core Intel Xeon, numpy 2.4, Python 3.11), time / tracemalloc peak, one graph -> blocks:

    extract(segments, 40)                    13.4 s / 1,575 MiB   ->  0.22-0.31 s / 10 MiB
    extractive_summary(finals, [], room)     10.8 s / 1,738 MiB   ->  0.29-0.32 s / 12 MiB  (extract(..., 8) inside)
    extractive_summary(finals, notes, room)  0.15 s /   186 MiB   ->  0.08 s / 4.7 MiB      (key terms only)

Agreement with the one-graph ranking (bullets in common, of 12): 12 at 428 sentences, 8 at 506, 10 at 740, 7 at
1,233, 8 at 2,517: the proportional shares trade some lecture-wide centrality for coverage of every part of it.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

import numpy as np

from realtime.notes import cjk
from realtime.notes.state import MAX_TEXT, Bullet

STOPWORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being below between both
but by can could did do does doing don't down during each even every few for from further had has have having he her
here hers him his how i if in into is it its itself just let like ll me more most much my no nor not now of off on
once one only or other our out over own really re same she should so some such than that the their them then there
these they this those through to too under until up us very was way we well were what when where which while who
whom why will with would yes you your going get got know think thing things okay right see say said also
""".split())
BLOCK = 400  # most sentences in one TextRank graph (a 400 x 400 graph: about 5 MB of float64 matrices)
_WORD = re.compile(r"[^\W\d_][\w'-]*", re.UNICODE)
_SENTENCE_END = re.compile(rf"(?<=[.!?])\s+|(?<=[{cjk.SENTENCE_MARKS}])\s*")


@dataclass(frozen=True)
class Sentence:
    segment: int
    index: int
    text: str


def sentences(segments: list[tuple[int, str]], min_words: int = 5) -> list[Sentence]:
    out = []
    for seg_id, text in segments:
        for i, part in enumerate(p.strip() for p in _SENTENCE_END.split(text)):
            if cjk.long_enough(part, min_words):
                out.append(Sentence(seg_id, i, part))
    return out


def content_words(text: str) -> list[str]:
    """The terms of a text: its words of three letters or more that are not stopwords, and the bigrams of its CJK
    runs, cut into words (`cjk`)."""
    words = [w for w in (m.group(0).lower() for m in _WORD.finditer(cjk.RUN.sub(" ", text)))
             if w not in STOPWORDS and len(w) > 2]
    for run in cjk.RUN.findall(text):
        words += cjk.words(run)
    return words


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


def idf(docs: list[list[str]]) -> dict[str, float]:
    """Each term's idf over the documents, as `tfidf` weights it (smoothed: ln((1 + n) / (1 + df)) + 1)."""
    df = Counter(t for d in docs for t in set(d))
    vocab = sorted(df)
    weights = np.log((1 + len(docs)) / (1 + np.array([df[t] for t in vocab], dtype=np.int64))) + 1
    return dict(zip(vocab, weights.tolist(), strict=True))


def top_terms(docs: list[list[str]], k: int) -> list[str]:
    """`key_terms(*tfidf(docs), k)` from sparse counts: the k terms of highest total TF-IDF, ties in alphabetical
    order. Each term's weight is summed row by row in document order, as the dense column sum is, so the two agree
    to the last bit (tested)."""
    weights = idf(docs)
    if not weights:
        return []
    total = dict.fromkeys(weights, 0.0)  # alphabetical, as the dense matrix's columns
    for d in docs:
        for t, c in Counter(d).items():
            total[t] += c * weights[t]
    vocab = list(total)
    weight = np.array(list(total.values()))
    return [vocab[i] for i in np.argsort(-weight, kind="stable")[:k] if weight[i] > 0]


def weighted(docs: list[list[str]], weights: dict[str, float]) -> np.ndarray:
    """TF-IDF rows of `docs` over their own terms only, with given idf `weights` (those of the whole lecture)."""
    vocab = sorted({t for d in docs for t in d})
    column = {t: i for i, t in enumerate(vocab)}
    matrix = np.zeros((len(docs), len(vocab)))
    for r, d in enumerate(docs):
        for t in d:
            matrix[r, column[t]] += 1
    return matrix * np.array([weights[t] for t in vocab])


def _informed(matrix: np.ndarray, docs: list[list[str]]) -> np.ndarray:
    """TextRank scores; ties (sentences sharing no terms, as in a lecture's first minutes) go to the more
    informative sentence."""
    return textrank(matrix) * (1 + 0.1 * np.log1p([len(set(d)) for d in docs]))


def shortlist(docs: list[list[str]], weights: dict[str, float], size: int = BLOCK) -> list[int]:
    """About `size` candidate sentences (indices, in lecture order): each block of BLOCK consecutive sentences,
    ranked by TextRank on its own, puts forward its best in proportion to its length."""
    n, out = len(docs), []
    for start in range(0, n, BLOCK):
        block = docs[start:start + BLOCK]
        quota = round(min(n, start + BLOCK) * size / n) - round(start * size / n)
        if quota <= 0:
            continue
        matrix = weighted(block, weights)
        norms = np.linalg.norm(matrix, axis=1)
        best = [int(i) for i in np.argsort(-_informed(matrix, block), kind="stable") if norms[i] > 0]
        out += sorted(start + i for i in best[:quota])
    return out


def emphasise(text: str, terms: list[str]) -> str:
    for term in terms:
        edge = r"\*" if cjk.has_cjk(term) else r"[\w*]"  # a CJK term sits inside a run of characters
        text = re.sub(rf"(?<!{edge})({re.escape(term)})(?!{edge})", r"**\1**", text, count=1, flags=re.IGNORECASE)
    return text


def extract(segments: list[tuple[int, str]], max_bullets: int = 12, redundancy: float = 0.5) -> list[Bullet]:
    """Bullets for a transcript given as (final id, text) pairs. Bounded: see the module docstring."""
    sents = sentences(segments)
    if not sents:
        return []
    docs = [content_words(s.text) for s in sents]
    if len(sents) <= BLOCK:  # one graph of every sentence
        pool = list(range(len(sents)))
        matrix, _ = tfidf(docs)
    else:  # candidates from each block, then one graph of the candidates
        weights = idf(docs)
        pool = shortlist(docs, weights)
        matrix = weighted([docs[i] for i in pool], weights)
    scores = _informed(matrix, [docs[i] for i in pool])
    k = min(max_bullets, max(1, math.ceil(len(sents) / 3)))
    norms = np.linalg.norm(matrix, axis=1)
    chosen: list[int] = []
    for i in np.argsort(-scores, kind="stable"):
        if len(chosen) == k:
            break
        if norms[i] == 0 or not cjk.bulletable(sents[pool[i]].text):
            continue
        sims = [float(matrix[i] @ matrix[j] / (norms[i] * norms[j])) for j in chosen]
        if all(s < redundancy for s in sims):
            chosen.append(int(i))
    terms = top_terms(docs, k=max(3, k))
    bullets = []
    for i in sorted((pool[j] for j in chosen), key=lambda j: (sents[j].segment, sents[j].index)):
        s = sents[i]
        text = s.text[:1].upper() + s.text[1:]
        bullets.append(Bullet(f"x{s.segment}.{s.index}", emphasise(text, terms)[:MAX_TEXT], (s.segment,)))
    return bullets
