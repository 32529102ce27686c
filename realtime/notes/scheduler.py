"""When to update the notes (sans-I/O): on a cadence or after enough new words, and only when there is new text."""

from __future__ import annotations

from dataclasses import dataclass

from realtime.notes import cjk


@dataclass
class NotesScheduler:
    interval_s: float = 60.0
    min_new_words: int = 150  # update this many committed words after the last one, whatever the clock says
    first_after_words: int = 25  # the first notes come early: a lecture should not show an empty panel for a minute

    def __post_init__(self) -> None:
        self.new_words = 0.0
        self.pending_since: float | None = None  # when the oldest text not yet in the notes arrived
        self.updates = 0

    def add_final(self, text: str, now: float) -> None:
        words = cjk.word_count(text)
        if words and self.pending_since is None:
            self.pending_since = now
        self.new_words += words

    def due(self, now: float) -> bool:
        if self.new_words == 0 or self.pending_since is None:
            return False
        threshold = self.first_after_words if self.updates == 0 else self.min_new_words
        return self.new_words >= threshold or now - self.pending_since >= self.interval_s

    def updated(self) -> None:
        self.new_words = 0
        self.pending_since = None
        self.updates += 1
