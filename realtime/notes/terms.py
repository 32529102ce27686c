"""The running glossary, offline: the lecture's terms by TF-IDF, each with the sentence that defines it (or first uses
it) and a link to its first mention (sans-I/O).

A term is a content word (`extractive.content_words`: three letters or more and no stopword, or a jieba word of a
CJK run) or two adjacent content words said together at least twice ("second law", "heat engine"); a pair takes
the place of its words when it covers most of their uses. Terms are ranked by count x idf over the lecture's
sentences x rarity in general use (6 minus the term's Zipf frequency in `wordfreq`, at least 0.2), so "two",
"back" and "equals", said often in any lecture, rank below "entropy" and "Carnot", which this lecture is about.
The lecturer's glossary field seeds the list: its terms come first once the lecture has said them. Each entry's
text is the first sentence that defines the term ("X is ...", "X means ...", "called X", "X 是 ...", "称为 X"),
else the first that uses it, cut to ~160 characters; the list is in order of first mention, so new terms arrive at
the end.
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter

from realtime.core.protocol import Final
from realtime.notes import cjk
from realtime.notes.extractive import STOPWORDS, Sentence, content_words, sentences

MAX_TERMS = 30
EXPLANATION_CHARS = 160
_DEFINES_AFTER = r"\s+(?:is|are|was|means|refers to|describes|measures|stands for|is called|is defined as)\b"
_DEFINES_BEFORE = r"\b(?:called|known as|termed|named|defined as)\s+(?:an?\s+|the\s+)?"
_ZH_AFTER = "(?:是|指|就是|叫做|称为|表示|即)"
_ZH_BEFORE = "(?:叫做|叫|称为|称作|所谓的?)"


# Words of a lecture's arithmetic, rare enough in general use to rank, and never what a glossary is for.
NOT_TERMS = frozenset("equals minus plus times per zero half number total percent 等于 乘以 减去 加上 除以 零点 分之一"
                      .split())


def singular(word: str) -> str:
    """One key for a word's forms: "engines" and "engine's" are "engine" ("class", "gas", "analysis" stay)."""
    if word.endswith("'s"):
        return word[:-2]
    if not word.isascii() or len(word) <= 3 or not word.endswith("s") or \
            word.endswith(("ss", "us", "is", "ics", "ies", "ices", "ways")):
        return word
    return word[:-2] if word.endswith(("sses", "shes", "ches", "xes", "zes", "oes")) else word[:-1]


def terms_of(text: str) -> list[str]:
    """A sentence's candidate single terms, in singular form, minus NOT_TERMS."""
    return [w for w in (singular(w) for w in content_words(text)) if w not in NOT_TERMS]


def glossary_terms(glossary: str) -> list[str]:
    """The lecturer's glossary field as terms: split on commas, semicolons, newlines and their CJK forms."""
    return [t.strip() for t in re.split(r"[,;\n，；、]+", glossary) if 1 < len(t.strip()) <= 60][:100]


def candidates(sents: list[Sentence]) -> Counter[str]:
    """Each term's count x idf over the sentences (pairs included; see the module docstring)."""
    docs = [terms_of(s.text) for s in sents]
    pairs = [_pairs(s.text) for s in sents]
    counts = Counter(t for d in docs for t in d)
    pair_counts = Counter(p for ps in pairs for p in ps)
    df = Counter(t for d, ps in zip(docs, pairs, strict=True) for t in set(d) | set(ps))
    n = len(sents)
    score: Counter[str] = Counter()
    for term, count in counts.items():
        score[term] = count * (math.log((1 + n) / (1 + df[term])) + 1) * rarity(term)
    for pair, count in pair_counts.items():
        if count < 2:
            continue
        a, b = pair.split(" ")
        score[pair] = count * (math.log((1 + n) / (1 + df[pair])) + 1) * rarity(pair)
        for word in (a, b):  # the pair covers most uses of its word: the word alone adds nothing
            if word in score and count >= 0.6 * counts[word]:
                del score[word]
    return score


@functools.lru_cache(maxsize=20_000)
def rarity(term: str) -> float:
    """How rare a term is in general use: 6 - its Zipf frequency (the log10 of its uses per billion words), at
    least 0.2; "the" 7.7 -> 0.2, "heat" 4.9 -> 1.1, "entropy" 3.3 -> 2.7, a word wordfreq never saw -> 6."""
    from wordfreq import zipf_frequency  # its word lists load on first use

    return max(0.2, 6.0 - zipf_frequency(term, "zh" if cjk.has_cjk(term) else "en"))


def _pairs(text: str) -> list[str]:
    """Adjacent content words of a sentence, lower-cased ("second law"); none across punctuation, a stopword or a
    number."""
    tokens = re.findall(r"[^\W\d_][\w'-]*|[^\w\s]|\d+", cjk.RUN.sub(" , ", text).lower())
    return [f"{a} {singular(b)}" for a, b in zip(tokens, tokens[1:], strict=False) if _content(a) and _content(b)]


def _content(word: str) -> bool:
    return len(word) > 2 and word not in STOPWORDS and word not in NOT_TERMS and word[0].isalpha()


def _mentions(term: str, text: str) -> bool:
    if cjk.has_cjk(term):
        return term in text
    return re.search(rf"(?<![\w-]){re.escape(term)}(?:s|es|'s)?(?![\w-])", text, re.IGNORECASE) is not None


def surface(term: str, texts: list[str]) -> str:
    """The term as the lecture spells it: "Carnot" and "BFS" keep their capitals where the lecture says them
    mid-sentence, or always capitalised and rare in general use; a common word capitalised only as a sentence's
    first is written in lower case."""
    if cjk.has_cjk(term):
        return term
    found = [m for text in texts
             for m in re.finditer(rf"(?<![\w-]){re.escape(term)}(?![\w-])", text, re.IGNORECASE)]
    for m in found:
        if m.start() > 0 and m.group(0) != m.group(0).lower():
            return m.group(0)
    if found and all(m.group(0) != m.group(0).lower() for m in found) and rarity(term) > 2.5:
        return found[0].group(0)
    return term


def _defines(term: str, text: str) -> bool:
    t = re.escape(term)
    if cjk.has_cjk(term):
        return re.search(f"{t}{_ZH_AFTER}|{_ZH_BEFORE}{t}", text) is not None
    return re.search(rf"(?<![\w-]){t}{_DEFINES_AFTER}|{_DEFINES_BEFORE}{t}(?![\w-])", text, re.IGNORECASE) is not None


def _cut(text: str) -> str:
    return text if len(text) <= EXPLANATION_CHARS else text[:EXPLANATION_CHARS - 1].rstrip() + "…"


def offline_terms(finals: list[Final], glossary: str = "", max_terms: int = MAX_TERMS) -> list[dict]:
    """Glossary entries for the lecture so far (panel `terms`), in order of first mention."""
    sents = sentences([(f.id, f.text) for f in finals], min_words=3)
    if not sents:
        return []
    start = {f.id: f.start for f in finals}
    ranked = [t for t, _ in sorted(candidates(sents).items(), key=lambda kv: (-kv[1], kv[0]))]
    seeded = [t for t in glossary_terms(glossary) if any(_mentions(t, s.text) for s in sents)]
    budget = max(3, min(max_terms, 3 + len(sents) // 4))  # a few terms early on, more as the lecture grows
    chosen: list[str] = []
    for term in seeded + ranked:
        if len(chosen) >= max(budget, len(seeded)):
            break
        if not any(term.lower() == c.lower() or _mentions(term, c) or _mentions(c, term) for c in chosen):
            chosen.append(term)
    entries = []
    for term in chosen:
        uses = [s for s in sents if _mentions(term, s.text)]
        if not uses:
            continue
        definition = next((s for s in uses if _defines(term, s.text)), uses[0])
        refs = list(dict.fromkeys([uses[0].segment, definition.segment]))
        entries.append({"id": "t:" + term.lower(), "term": surface(term, [s.text for s in uses]),
                        "text": _cut(definition.text), "refs": refs, "start": start[uses[0].segment]})
    return sorted(entries, key=lambda e: (e["start"], e["id"]))
