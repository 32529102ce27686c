"""The lecture's outline, offline: topic sections with start times, like chapters, by lexical cohesion (TextTiling,
Hearst 1997) over the finals (sans-I/O).

Each gap between two finals is scored by the cosine similarity of the content words of the WINDOW finals before it
and the WINDOW after it; where the talk changes topic, the vocabulary on either side differs and the similarity
dips. A gap's depth is how far it lies below the highest similarity reached climbing to either side; the deepest
gaps, deeper than the mean depth minus half its deviation, become section starts, deepest first, as long as no
section gets shorter than MIN_SECTION_S of lecture time or MIN_FINALS finals. A section's title is its two or
three most distinctive terms (count in the section x idf over the lecture's sections x rarity in general use, as
for the glossary). A section's id
is its first final's id, so a section keeps its id as the outline grows; its title may sharpen as it does.
"""

from __future__ import annotations

import math
from collections import Counter

from realtime.core.protocol import Final
from realtime.notes import cjk
from realtime.notes.terms import rarity, surface, terms_of

WINDOW = 6  # finals on either side of a gap
MIN_FINALS = 6
MIN_SECTION_S = 120.0
MAX_SECTIONS = 40


def _cosine(a: Counter[str], b: Counter[str]) -> float:
    dot = sum(c * b[t] for t, c in a.items() if t in b)
    norm = math.sqrt(sum(c * c for c in a.values())) * math.sqrt(sum(c * c for c in b.values()))
    return dot / norm if norm else 0.0


def gap_scores(docs: list[list[str]], window: int = WINDOW) -> list[float]:
    """Similarity at each gap i (between docs[i - 1] and docs[i]), for i = 1 .. len(docs) - 1."""
    out = []
    for i in range(1, len(docs)):
        left = Counter(t for d in docs[max(0, i - window):i] for t in d)
        right = Counter(t for d in docs[i:i + window] for t in d)
        out.append(_cosine(left, right))
    return out


def depths(scores: list[float]) -> list[float]:
    out = []
    for i, s in enumerate(scores):
        left = right = s
        for j in range(i - 1, -1, -1):  # climb while the similarity rises
            if scores[j] < left:
                break
            left = scores[j]
        for j in range(i + 1, len(scores)):
            if scores[j] < right:
                break
            right = scores[j]
        out.append((left - s) + (right - s))
    return out


def boundaries(finals: list[Final], docs: list[list[str]]) -> list[int]:
    """Indexes of the finals that start a section after the first (see the module docstring)."""
    if len(finals) < 2 * MIN_FINALS:
        return []
    depth = depths(gap_scores(docs))
    mean = sum(depth) / len(depth)
    deviation = math.sqrt(sum((d - mean) ** 2 for d in depth) / len(depth))
    cutoff = max(mean - deviation / 2, 1e-9)
    chosen: list[int] = []
    for gap in sorted(range(len(depth)), key=lambda g: (-depth[g], g)):
        if depth[gap] < cutoff or len(chosen) >= MAX_SECTIONS - 1:
            break
        start = gap + 1
        edges = sorted([0, *chosen, start, len(finals)])
        k = edges.index(start)
        before, after = edges[k - 1], edges[k + 1]
        if start - before < MIN_FINALS or after - start < MIN_FINALS:
            continue
        if finals[start].start - finals[before].start < MIN_SECTION_S or \
                finals[after - 1].end - finals[start].start < MIN_SECTION_S:
            continue
        chosen.append(start)
    return sorted(chosen)


def title(section: list[list[str]], texts: list[str], idf: dict[str, float]) -> str:
    """A section's three most distinctive terms, spelt as the lecture spells them; rarity is capped so that a word
    said once ("frictionless") does not outrank what the section keeps coming back to."""
    counts = Counter(t for d in section for t in d)
    best = sorted(counts, key=lambda t: (-counts[t] * idf.get(t, 1.0) * min(rarity(t), 3.0), t))[:3]
    if not best:
        return "…"
    words = [surface(t, texts) for t in best]
    words[0] = words[0][:1].upper() + words[0][1:]
    return ("、" if any(cjk.has_cjk(t) for t in best) else ", ").join(words)


def offline_outline(finals: list[Final]) -> list[dict]:
    """Sections of the lecture so far (panel `outline`), in lecture order."""
    if not finals:
        return []
    docs = [terms_of(f.text) for f in finals]
    starts = [0, *boundaries(finals, docs)]
    spans = list(zip(starts, [*starts[1:], len(finals)], strict=True))
    sections = [docs[a:b] for a, b in spans]
    df = Counter(t for s in sections for t in {t for d in s for t in d})
    idf = {t: math.log((1 + len(sections)) / (1 + n)) + 1 for t, n in df.items()}
    return [{"id": f"s{finals[a].id}", "title": title(sections[i], [f.text for f in finals[a:b]], idf),
             "refs": [finals[a].id],
             "start": finals[a].start} for i, (a, b) in enumerate(spans)]
