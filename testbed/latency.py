"""Caption latency from a recorded event stream (sans-I/O; used by tests and benchmarks).

Events must carry `t`, the receive time in seconds since the first audio was sent (the client adds it). At 1.0x the
sender's clock and the lecture clock coincide, so a word that ends at lecture time `end` and first shows up as
committed at receive time `t` has latency `t - end`. Committed words of an utterance are a prefix of its final, so
the k-th committed word is the final's k-th word, whose `end` comes from the model's word alignment.

`percentile` and `summary` are the one implementation of the statistics that the caption latency figures of the
tests and the benchmarks go through (benchmarks/loopstall.py keeps its nearest-rank ping percentiles in ms, which
its recorded results depend on). benchmarks/align.py times words differently on purpose, against an independent
word-timing truth and with words matched by alignment rather than by position, so its StreamWord/WordTiming and
its truth-based `final_delays` give other numbers and stay there; it reports through `summary` from here.
(It lived in the realtime package until nothing there used it.)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class WordLatency:
    word: str
    end: float  # lecture time the word ends
    first_seen: float  # receive time it first appeared (partial, committed or not)
    committed: float  # receive time it first appeared as committed text (or in the final)

    @property
    def to_commit(self) -> float:
        return self.committed - self.end

    @property
    def to_first(self) -> float:
        return self.first_seen - self.end


def word_latencies(events: Iterable[dict[str, Any]], speed: float = 1.0) -> list[WordLatency]:
    commit_t: dict[int, list[float]] = {}  # utterance -> receive time at which word k was first committed
    seen_t: dict[int, list[float]] = {}
    out: list[WordLatency] = []
    for ev in events:
        utt = ev.get("utterance")
        if ev["type"] == "partial":
            _extend(commit_t.setdefault(utt, []), len(ev["committed"].split()), ev["t"])
            _extend(seen_t.setdefault(utt, []), len((ev["committed"] + " " + ev["unstable"]).split()), ev["t"])
        elif ev["type"] == "final":
            commits, seen = commit_t.get(utt, []), seen_t.get(utt, [])
            for k, w in enumerate(ev.get("words", [])):
                c = commits[k] if k < len(commits) else ev["t"]
                s = min(seen[k] if k < len(seen) else ev["t"], c)
                out.append(WordLatency(w["w"], w["end"] / speed, s, c))
    return out


def _extend(times: list[float], n: int, t: float) -> None:
    while len(times) < n:
        times.append(t)


def final_delays(events: Iterable[dict[str, Any]], speed: float = 1.0) -> list[float]:
    """Receive time of each final minus the end of its last word."""
    finals = [e for e in events if e["type"] == "final"]
    return [f["t"] - f["end"] / speed for f in finals]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary(values: list[float]) -> dict[str, float]:
    """Count, mean, median, p90, p95 and max, rounded to ms (the mean is what whisper_streaming's paper reports)."""
    return {"n": len(values), "mean": round(sum(values) / len(values), 3) if values else float("nan"),
            "median": round(percentile(values, 50), 3), "p90": round(percentile(values, 90), 3),
            "p95": round(percentile(values, 95), 3), "max": round(max(values), 3) if values else float("nan")}
