"""Align streamed caption words to word-timing truth and turn the alignment into latency and lag figures.

Pure functions over recorded events (sans-I/O), so the alignment and every metric is unit-tested on hand-made
inputs (tests/core/test_bench_align.py) and the harness only does I/O around them.

Why a truth alignment and not the finals' own word times: a streaming system that reports late word end times would
look faster than it is. The truth is an independent offline pass with word timestamps (benchmarks/truth.py); each
streamed word that the alignment matches exactly to a truth word gets that word's end time. Substituted or inserted
words count in the WER but carry no latency: there is no spoken word to time them against.

Times: events carry `t`, the client's receive time in seconds since the first audio was sent. At `speed` x real
time a word that ends at lecture time `end` has been fully sent at wall time `end / speed`, so its latency is
`t - end / speed`. That is the computation-aware latency of whisper_streaming's paper: the decoder's own compute
time is inside it, because audio is replayed at its real pace while the server works.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from testbed.latency import summary

_NON_WORD = re.compile(r"[^\w']+")


def token(word: str) -> str:
    """A word reduced for matching: lower case, punctuation removed (apostrophes kept inside words)."""
    return _NON_WORD.sub("", word.lower()).strip("'")


def tokens(text: str) -> list[str]:
    return [t for t in (token(w) for w in text.split()) if t]


def align(ref: Sequence[str], hyp: Sequence[str]) -> list[tuple[int, int]]:
    """Index pairs (i, j) with ref[i] == hyp[j] on a minimum-edit-distance alignment, in order.

    Plain Levenshtein DP with a backtrace that prefers matches; O(len(ref) * len(hyp)), about a second for the
    1,700 words of the 10-minute lecture. Common prefixes and suffixes are matched first to keep it cheap.
    """
    n, m = len(ref), len(hyp)
    head = 0
    while head < min(n, m) and ref[head] == hyp[head]:
        head += 1
    tail = 0
    while tail < min(n, m) - head and ref[n - 1 - tail] == hyp[m - 1 - tail]:
        tail += 1
    pairs = [(i, i) for i in range(head)]
    r, h = ref[head:n - tail], hyp[head:m - tail]
    rows, cols = len(r), len(h)
    if rows and cols:
        # back[i][j]: 0 = diagonal, 1 = up (deletion from ref), 2 = left (insertion in hyp)
        back = [bytearray(cols + 1) for _ in range(rows + 1)]
        prev = list(range(cols + 1))
        for j in range(1, cols + 1):
            back[0][j] = 2
        for i in range(1, rows + 1):
            cur = [i] + [0] * cols
            row, ri = back[i], r[i - 1]
            row[0] = 1
            for j in range(1, cols + 1):
                diag = prev[j - 1] + (ri != h[j - 1])
                up, left = prev[j] + 1, cur[j - 1] + 1
                if diag <= up and diag <= left:
                    cur[j] = diag
                elif up <= left:
                    cur[j], row[j] = up, 1
                else:
                    cur[j], row[j] = left, 2
            prev = cur
        i, j, mid = rows, cols, []
        while i > 0 and j > 0:
            op = back[i][j]
            if op == 0:
                if r[i - 1] == h[j - 1]:
                    mid.append((head + i - 1, head + j - 1))
                i, j = i - 1, j - 1
            elif op == 1:
                i -= 1
            else:
                j -= 1
        pairs += reversed(mid)
    pairs += [(n - tail + k, m - tail + k) for k in range(tail)]
    return pairs


@dataclass(frozen=True)
class TimedWord:
    """A word with lecture times in seconds (truth words, or words of a baseline)."""

    text: str
    start: float
    end: float


@dataclass(frozen=True)
class StreamWord:
    """One word of a final with the receive times at which the stream first showed it."""

    text: str
    utterance: int
    end: float  # the final's own word end (lecture time), kept for comparison with the truth
    first_seen: float  # first partial that showed it (committed or not), else the final
    committed: float  # first partial that showed it as committed text, else the final
    final: float  # receive time of its final


def stream_words(events: Iterable[dict[str, Any]]) -> list[StreamWord]:
    """Every word of every final, with first-seen and committed receive times.

    Committed words of an utterance are a prefix of its final (protocol guarantee), so the k-th committed word is
    the final's k-th word. Unstable text moves around, so a word counts as seen in a partial when aligning that
    partial's words to the final matches it exactly.
    """
    partials: dict[int, list[tuple[float, list[str], int]]] = {}
    out: list[StreamWord] = []
    for ev in events:
        if ev.get("type") == "partial":
            shown = tokens(ev["committed"] + " " + ev["unstable"])
            partials.setdefault(ev["utterance"], []).append((ev["t"], shown, len(ev["committed"].split())))
        elif ev.get("type") == "final":
            words = ev.get("words") or []
            final_tokens = [token(w["w"]) for w in words]
            first = [ev["t"]] * len(words)
            commit = [ev["t"]] * len(words)
            for t, shown, n_committed in partials.pop(ev["utterance"], []):
                for k in range(min(n_committed, len(words))):
                    commit[k] = min(commit[k], t)
                for i, _ in align(final_tokens, shown):
                    first[i] = min(first[i], t)
            out += [StreamWord(w["w"], ev["utterance"], w["end"], min(f, c), c, ev["t"])
                    for w, f, c in zip(words, first, commit, strict=True)]
    return out


@dataclass(frozen=True)
class WordTiming:
    """A streamed word matched to a truth word: its latencies in seconds."""

    text: str
    utterance: int
    truth_end: float  # wall time (s since the first audio) at which the spoken word had been sent
    first_seen: float
    committed: float

    @property
    def to_first(self) -> float:
        return self.first_seen - self.truth_end

    @property
    def to_commit(self) -> float:
        return self.committed - self.truth_end


def match_truth(words: Sequence[StreamWord], truth: Sequence[TimedWord], speed: float = 1.0) -> list[WordTiming]:
    """Streamed words matched exactly to truth words, timed against the truth word's end."""
    pace = speed if speed > 0 else 1.0
    pairs = align([token(w.text) for w in truth], [token(w.text) for w in words])
    return [WordTiming(words[j].text, words[j].utterance, truth[i].end / pace, words[j].first_seen,
                       words[j].committed) for i, j in pairs]


def final_delays(events: Iterable[dict[str, Any]], timings: Sequence[WordTiming]) -> list[float]:
    """End of speech to final: each final's receive time minus the truth end of its last matched word."""
    last_end: dict[int, float] = {}
    for w in timings:
        last_end[w.utterance] = max(last_end.get(w.utterance, 0.0), w.truth_end)
    return [ev["t"] - last_end[ev["utterance"]] for ev in events
            if ev.get("type") == "final" and ev["utterance"] in last_end]


def lag_series(events: Iterable[dict[str, Any]]) -> list[tuple[float, float, float]]:
    """(receive time, audio received, decode lag) of every `live` status: the server's own lag report."""
    return [(ev["t"], ev["audio_s"], ev["lag_s"]) for ev in events
            if ev.get("type") == "status" and ev.get("state") == "live"]


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ys over xs (0 for fewer than two points): does latency drift over a long stream?"""
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    return 0.0 if var == 0 else sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var


def schedule_chunks(ready: Sequence[float], cost: Sequence[float]) -> list[float]:
    """When each chunk's words come out of a one-worker decoder that takes chunks in order: a chunk starts when its
    audio is complete and the previous chunk is done. Used to time the naive fixed-chunk baseline from measured
    decode costs, the same computation-aware way the live stream is timed."""
    done, out = 0.0, []
    for r, c in zip(ready, cost, strict=True):
        done = max(done, r) + c
        out.append(done)
    return out


def latency_report(timings: Sequence[WordTiming], delays: Sequence[float], n_truth: int) -> dict[str, Any]:
    """The latency block of a result: percentiles of word-to-first-seen, word-to-commit and speech-end-to-final."""
    return {
        "matched_words": len(timings), "truth_words": n_truth,
        "first_seen": summary([w.to_first for w in timings]),
        "committed": summary([w.to_commit for w in timings]),
        "final_delay": summary(list(delays)),
    }
