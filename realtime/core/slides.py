"""A lecturer's slide deck as the room keeps it, and which slide is on screen (sans-I/O).

The deck is text only: one `Slide` per page of the PDF or PPTX (or per section of a Markdown or text file, see
`realtime.deckfile`), numbered from 1 as the lecturer sees them. It is stored with the room and feeds two readers:
the recognizer's prompt (`realtime.notes.deck_terms`: the course's words, current slide first) and the notes (the
outline and the current slide's text as context).

The current slide is told by the lecturer page (`{"type": "slide", "number": N}` on the speaker socket) or inferred
from what is being said: `SlideTracker` compares the recent finals with each slide's words and moves only on a
clear winner. A slide the lecturer chose holds for `LECTURER_HOLD_S` of lecture time before inference may move it
again, so a lecturer who clicks is never overruled by a guess a second later.
"""

from __future__ import annotations

import math
import re
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

MAX_SLIDES = 500
MAX_SLIDE_CHARS = 4000  # text kept per slide (a slide that holds a whole paper is cut)
MAX_TITLE_CHARS = 120
LECTURER_HOLD_S = 120.0
_WORD = re.compile(r"[^\W\d_][\w'’-]*", re.UNICODE)


@dataclass(frozen=True)
class Slide:
    number: int  # from 1
    title: str
    text: str  # the slide's whole text, title included, lines joined with "\n"


@dataclass(frozen=True)
class Deck:
    name: str  # the uploaded file's name, for the lecturer's page
    slides: tuple[Slide, ...]
    uploaded_at: float = 0.0

    @property
    def count(self) -> int:
        return len(self.slides)

    def slide(self, number: int) -> Slide | None:
        return self.slides[number - 1] if 1 <= number <= len(self.slides) else None

    def outline(self, max_chars: int = 1500) -> str:
        """"N. title" per slide, cut to `max_chars`: the shape of the lecture for the notes' prompt."""
        lines, used = [], 0
        for s in self.slides:
            line = f"{s.number}. {s.title or first_line(s.text)}"[:100]
            if used + len(line) + 1 > max_chars:
                lines.append("…")
                break
            lines.append(line)
            used += len(line) + 1
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "uploaded_at": self.uploaded_at,
                "slides": [{"number": s.number, "title": s.title, "text": s.text} for s in self.slides]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Deck:
        return cls(str(data.get("name", "")), tuple(Slide(int(s["number"]), str(s.get("title", "")),
                                                          str(s.get("text", ""))) for s in data["slides"]),
                   float(data.get("uploaded_at", 0.0)))


def first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def make_deck(name: str, pages: list[tuple[str, str]], uploaded_at: float = 0.0) -> Deck:
    """A deck from (title, text) per page, in order: whitespace tidied, lengths capped, numbered from 1. Empty
    pages keep their number (the lecturer's slide 7 stays 7), with no text."""
    slides = []
    for i, (title, text) in enumerate(pages[:MAX_SLIDES], 1):
        lines = [" ".join(line.split()) for line in text.replace("\r", "\n").splitlines()]
        body = "\n".join(line for line in lines if line)[:MAX_SLIDE_CHARS]
        title = " ".join(title.split())[:MAX_TITLE_CHARS] or first_line(body)[:MAX_TITLE_CHARS]
        slides.append(Slide(i, title, body))
    return Deck(name[:200], tuple(slides), uploaded_at)


def words(text: str) -> list[str]:
    """Lower-cased words of three letters or more, for comparing speech with slides."""
    return [w.casefold().strip("'’-") for w in _WORD.findall(text) if len(w) >= 3]


@dataclass
class SlideTracker:
    """Which slide is current: the lecturer's choice, else the best match of the recent speech.

    Inference scores each slide by the idf-weighted overlap of its words with the last `window` finals' words
    (cosine), and moves to a slide only when it scores at least `min_score` and `margin` times the runner-up, and
    beats the current slide by the same margin. Words on most slides (the course name in every footer) weigh
    nothing.
    """

    deck: Deck
    current: int | None = None
    source: str = ""  # "lecturer" | "inferred" | "" (not known)
    window: int = 4
    min_score: float = 0.12
    margin: float = 1.3
    _held_until: float = -math.inf
    _recent: deque[str] = field(default_factory=deque)
    _vectors: list[dict[str, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        bags = [Counter(words(s.text)) for s in self.deck.slides]
        df = Counter(w for bag in bags for w in bag)
        n = len(bags)
        self._idf = {w: math.log((1 + n) / (1 + c)) for w, c in df.items()}
        self._vectors = [self._unit({w: (1 + math.log(c)) * self._idf[w] for w, c in bag.items()}) for bag in bags]

    @staticmethod
    def _unit(vec: dict[str, float]) -> dict[str, float]:
        norm = math.sqrt(sum(v * v for v in vec.values()))
        return {w: v / norm for w, v in vec.items() if v > 0} if norm > 0 else {}

    def told(self, number: int, t: float) -> bool:
        """The lecturer moved to slide `number` at lecture time `t`. False (and nothing changes) when out of range."""
        if not 1 <= number <= self.deck.count:
            return False
        self.current, self.source, self._held_until = number, "lecturer", t + LECTURER_HOLD_S
        return True

    def scores(self) -> list[float]:
        bag = Counter(w for text in self._recent for w in words(text) if w in self._idf)
        query = self._unit({w: (1 + math.log(c)) * self._idf[w] for w, c in bag.items()})
        return [sum(v * vec.get(w, 0.0) for w, v in query.items()) for vec in self._vectors]

    def heard(self, text: str, t: float) -> int | None:
        """A final's text at lecture time `t`; the new current slide when this moved it, else None."""
        self._recent.append(text)
        while len(self._recent) > self.window:
            self._recent.popleft()
        if t < self._held_until or self.deck.count < 2:
            return None
        scores = self.scores()
        ranked = sorted(range(len(scores)), key=lambda i: -scores[i])
        best, second = scores[ranked[0]], scores[ranked[1]]
        number = ranked[0] + 1
        if best < self.min_score or best < self.margin * second or number == self.current:
            return None
        if self.current is not None and best < self.margin * scores[self.current - 1]:
            return None
        self.current, self.source = number, "inferred"
        return number
