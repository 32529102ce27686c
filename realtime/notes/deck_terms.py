"""The course's words from its slides: what the recognizer is told to expect, and what the key-terms panel starts
from (sans-I/O).

Whisper spells a word it has never seen as the nearest words it knows ("cube control", "Hinton" as "hint on").
Told the word in its prompt, it spells it right. The deck has the words; this picks the ones worth the prompt's few
tokens (224 for Whisper, hotwords and prompt together):

- identifiers and CamelCase ("numpy.einsum", "PyTorch", "AdamW", "GPT-4", "kube-proxy"): never in a dictionary;
- names: capitalised words and runs of them not at the start of a line ("Michaelis Menten", "Hinton"), and acronyms;
- rare words: lower-case words rare in general use (Zipf frequency under 3.6 in `wordfreq`: "etcd", "enantiomer");
- pairs of rare words said together on the deck ("gradient descent" ranks by its rarer word).

Common words ("network", "energy") are left out: Whisper spells them already, and each one costs prompt space.
A term's score is its rarity x (1 + log of its uses in the deck), x1.5 on a title. `recognizer_terms` orders them
for the prompt: the current slide's first (a long deck does not fit, and the slide on screen is what is being
said), then the lecturer's glossary, then the neighbouring slides', then the deck's best. Definitions ("Term:
text", "Term – text", "Term is text") seed the key-terms panel with the slide's own wording and number.
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from dataclasses import dataclass

from realtime.core.slides import Deck, Slide
from realtime.notes.extractive import STOPWORDS
from realtime.notes.terms import NOT_TERMS, glossary_terms, rarity, singular

RARE = 2.4  # rarity (6 - Zipf) above which a lower-case word is a term: Zipf under 3.6
MAX_TERM_CHARS = 40
# identifiers: dotted or underscored names, CamelCase, letters with digits, hyphenated code names
_TOKEN = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[._\-+#/][A-Za-z0-9]+)*[+#]*")
_IDENT = re.compile(r"[._]|[a-z][A-Z]|[A-Z]{2,}[a-z]|[A-Za-z]\d|\d[A-Za-z]|^[a-z]+-[a-z]+$")
_DEFINITION = re.compile(r"^\s*(?:[-*•▪◦–]\s*)?(?P<term>[^:–—\n]{2,40}?)\s*(?::|\s[–—-]\s)\s*(?P<text>\S.{8,})$")
_DEFINES = re.compile(r"^\s*(?:[-*•▪◦–]\s*)?(?:an?\s+|the\s+)?(?P<term>[\w .+#-]{2,40}?)\s+(?:is|are|means|refers to|"
                      r"measures|stands for|describes)\s+(?P<text>.{8,})$", re.IGNORECASE)


@dataclass(frozen=True)
class DeckTerms:
    """A deck's terms, ranked: for the whole deck and per slide; with the slides' definitions."""

    ranked: tuple[str, ...]  # best first
    by_slide: tuple[tuple[str, ...], ...]  # index = slide number - 1; each best first
    definitions: dict[str, tuple[str, int]]  # term (lower case) -> (definition, slide number)


def _line_terms(line: str) -> list[tuple[str, float]]:
    """Terms of one line of slide text with their kind's weight, in order."""
    found: list[tuple[str, float]] = []
    tokens = [(m.group(0), m.start()) for m in _TOKEN.finditer(line)]
    run: list[str] = []

    def close_run() -> None:
        if len(run) >= 2:
            found.append((" ".join(run), 1.0))
        run.clear()

    for i, (tok, start) in enumerate(tokens):
        word = tok.strip(".-/")
        low = word.lower()
        if len(word) < 2 or low in STOPWORDS or low in NOT_TERMS:
            close_run()
            continue
        if _IDENT.search(word):
            close_run()
            found.append((word, 1.2))
            continue
        first = i == 0 or not line[:start].strip(" -*•▪◦–\t")  # a line's first word is capitalised anyway
        capital = word[0].isupper() and (not first or rarity(low) >= RARE)
        if capital or (word.isupper() and len(word) >= 2):
            run.append(word)
            if rarity(low) >= 1.5 or word.isupper():
                found.append((word, 1.0))
            continue
        close_run()
        if word.islower() and len(word) >= 3 and rarity(low) >= RARE:
            found.append((word, 1.0))
    close_run()
    return found


def _slide_scores(slide: Slide) -> Counter[str]:
    scores: Counter[str] = Counter()
    spelled: dict[str, str] = {}
    lines = slide.text.splitlines()
    for n, line in enumerate(lines):
        title = n == 0 and line.strip() == slide.title.strip()
        for term, weight in _line_terms(line):
            if len(term) > MAX_TERM_CHARS:
                continue
            key = term.lower()
            spelled.setdefault(key, term)
            scores[key] += weight * (1.5 if title else 1.0)
    return Counter({spelled[k]: v for k, v in scores.items()})


@functools.lru_cache(maxsize=32)
def deck_terms(deck: Deck) -> DeckTerms:
    """The deck's terms (cached per deck: a deck is immutable, and every decode of a room asks)."""
    per_slide = [_slide_scores(s) for s in deck.slides]
    uses: Counter[str] = Counter()
    spelled: dict[str, str] = {}
    for scores in per_slide:
        for term, count in scores.items():
            uses[term.lower()] += count
            spelled.setdefault(term.lower(), term)
    n = max(1, len(per_slide))
    spread = Counter(t.lower() for scores in per_slide for t in scores)

    def value(key: str) -> float:
        words = key.split()
        rare = max(rarity(w) for w in words) + (0.5 if len(words) > 1 else 0.0)
        # a word on nearly every slide is the course's name in a footer: worth little
        common = 0.3 if n >= 5 and spread[key] > 0.6 * n else 1.0
        return rare * (1 + math.log(1 + uses[key])) * common

    ranked = sorted(uses, key=lambda k: (-value(k), k))
    by_slide = tuple(tuple(spelled[k] for k in sorted({t.lower() for t in s}, key=lambda k: (-value(k), k)))
                     for s in per_slide)
    return DeckTerms(tuple(spelled[k] for k in ranked), by_slide, definitions(deck))


def definitions(deck: Deck) -> dict[str, tuple[str, int]]:
    """Terms the slides define ("Raft: a consensus algorithm …"), first definition kept, with its slide."""
    found: dict[str, tuple[str, int]] = {}
    for slide in deck.slides:
        for line in slide.text.splitlines()[1:] if slide.title else slide.text.splitlines():
            m = _DEFINITION.match(line) or _DEFINES.match(line)
            if not m:
                continue
            term = m.group("term").strip(" *`'\"")
            if not term or len(term.split()) > 4 or term.lower() in STOPWORDS:
                continue
            found.setdefault(term.lower(), (f"{term}: {m.group('text').strip()}"[:200], slide.number))
    return found


def recognizer_terms(deck: Deck | None, current: int | None, glossary: str = "", limit: int = 120) -> list[str]:
    """Terms for the decoder in priority order, without repeats: the current slide's, the glossary's, the
    neighbouring slides', then the deck's best. The decoder keeps as many as fit its prompt."""
    ordered: list[str] = []
    if deck is not None and deck.count:
        terms = deck_terms(deck)
        here = terms.by_slide[current - 1] if current and 1 <= current <= deck.count else ()
        near = [t for k in (current, current - 2) if current and 0 <= k < deck.count for t in terms.by_slide[k]]
        ordered = [*here, *glossary_terms(glossary), *near, *terms.ranked]
    else:
        ordered = glossary_terms(glossary)
    seen: set[str] = set()
    out: list[str] = []
    for term in ordered:
        key = " ".join(singular(w) for w in term.lower().split())
        if key not in seen:  # a word of a name already listed ("Lamport" after "Leslie Lamport") adds nothing
            seen.add(key)
            seen.update(key.split())
            out.append(term)
        if len(out) >= limit:
            break
    return out


def hotwords(terms: list[str]) -> str:
    """The decoder's hint text: the terms as a comma-separated list (the form the prompt budget is cut at)."""
    return ", ".join(terms)


def slide_terms(deck: Deck, number: int) -> list[str]:
    """One slide's terms, best first (the notes' context and the lecturer page's preview)."""
    return list(deck_terms(deck).by_slide[number - 1]) if 1 <= number <= deck.count else []
