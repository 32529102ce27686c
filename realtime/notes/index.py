"""An incremental BM25 index over a room's finals, for grounded answers to questions (sans-I/O, numpy only).

Each final is added once, in order, as it is published (`add`); the index keeps an inverted index from each content
word (`extractive.content_words`) to its postings: the positions of the finals that contain it, the word's count in
each and each final's length. A question (`search`) then costs the postings of its own words, not the transcript:
on the 6-hour lecture of `benchmarks.loopstall` (5,404 finals) a question takes 0.04 ms and 15 KiB where scoring
every final with a dense TF-IDF matrix took 0.14 s and 221 MiB (the worst question, 1,000 characters of the
lecture's 136 most frequent words, 3 ms); adding costs about 10-15 us a final (all 5,404:
0.05-0.08 s). On questions made of three content words of one final, that final is among the 4 found 285 times in
292 (TF-IDF cosine: 281).

Scoring is Okapi BM25 (k1 = 1.2, b = 0.75) with the non-negative idf ln(1 + (N - df + 0.5) / (df + 0.5)); each
distinct word of the question counts once. The corpus statistics (N, average length) are read at query time, so an
index built final by final ranks exactly like one built at once.

Postings are `array('i')` (12 bytes a posting) copied into numpy at query time. `add` and `search` may run in
different threads (publishing on the event loop, a question in an executor): a search sees each final either
entirely or not at all for any one word, and never raises because of a concurrent add.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter

import numpy as np

from realtime.notes.extractive import content_words

K1 = 1.2
B = 0.75


class TranscriptIndex:
    def __init__(self) -> None:
        # word -> (positions, counts, lengths): the finals that contain it, its count there, their lengths
        self._postings: dict[str, tuple[array, array, array]] = {}
        self._count = 0
        self._total_length = 0
        self._last = -1

    def __len__(self) -> int:
        return self._count

    def add(self, position: int, text: str) -> None:
        """Index the final at `position` (its index in the room's finals); positions must increase."""
        if position <= self._last:
            raise ValueError(f"final {position} added after final {self._last}")
        words = Counter(content_words(text))
        length = sum(words.values())
        for word, count in words.items():
            postings = self._postings.get(word)
            if postings is None:
                postings = self._postings[word] = (array("i"), array("i"), array("i"))
            positions, counts, lengths = postings
            positions.append(position)
            counts.append(count)
            lengths.append(length)
        self._last = position
        self._total_length += length
        self._count += 1

    def search(self, question: str, k: int = 4) -> list[int]:
        """Positions of the (at most) k finals that best match the question, in lecture order; only finals with a
        positive score (sharing a content word with the question). Ties go to the earlier final."""
        n, total = self._count, self._total_length
        if k <= 0 or n == 0 or total == 0:
            return []
        avg = total / n
        positions_parts, scores_parts = [], []
        for word in dict.fromkeys(content_words(question)):
            postings = self._postings.get(word)
            if postings is None:
                continue
            # Copied in the reverse of the order `add` appends them, so that a concurrent add can only have made
            # the later copies longer: cut them to the first one's length. Each is sliced first (one C call under
            # the GIL) and numpy reads the copy: numpy reading the live array would export its buffer, and an
            # append in the other thread meanwhile raises BufferError.
            lengths = _floats(postings[2])
            m = len(lengths)
            counts = _floats(postings[1])[:m]
            positions = np.frombuffer(postings[0][:], dtype=np.intc)[:m].astype(np.int64)
            idf = math.log(1 + (n - m + 0.5) / (m + 0.5))
            positions_parts.append(positions)
            scores_parts.append(idf * counts * (K1 + 1) / (counts + K1 * (1 - B + B * lengths / avg)))
        if not positions_parts:
            return []
        found, inverse = np.unique(np.concatenate(positions_parts), return_inverse=True)
        scores = np.bincount(inverse, weights=np.concatenate(scores_parts), minlength=len(found))
        order = np.lexsort((found, -scores))[:k]  # best first; ties: the earlier final
        return sorted(int(found[i]) for i in order if scores[i] > 0)


def _floats(values: array) -> np.ndarray:
    return np.frombuffer(values[:], dtype=np.intc).astype(np.float64)
