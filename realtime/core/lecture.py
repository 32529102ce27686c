"""One speaker's lecture as a state machine: PCM in, decode requests out, decode results in, caption events out.

Sans-I/O. The engine asks `next_request()` when a decoder is free, runs the model, and hands the words back to
`on_result()`. Ended utterances are queued for a final decode (never dropped, even at end of stream); the open
utterance gets partial decodes on a cadence, committed by LocalAgreement-2; an utterance longer than
`max_utterance_s` is cut at its last committed word so decode work stays bounded.

Early finals: once the speaker has paused for `early_final_s` (the VAD's hangover is under way), the final decode
of the utterance starts instead of waiting for the hangover to end. If the pause becomes the end of the utterance,
that result is its final, out as soon as the hangover ends (a final decode sooner than before); if speech resumes,
it was one more (beam-searched) hypothesis of the audio so far.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from realtime.core.agreement import HypWord, LocalAgreement, join_words
from realtime.core.audio import SAMPLE_RATE, DCBlocker, pcm_to_int16
from realtime.core.hallucination import Segment, clean, has_loop, prompt_words
from realtime.core.protocol import UNNUMBERED, Event, Final, Partial, Start, Word
from realtime.core.vad import Segmenter, SpeechAudio, SpeechEnd, SpeechStart


@dataclass
class StreamConfig:
    partial_interval_s: float = 0.25
    max_utterance_s: float = 12.0
    max_lag_s: float = 4.0
    prompt_chars: int = 0
    early_final_s: float = 0.2  # pause after which the final decode starts (0 = at the end of the hangover)
    commit_min_prob: float = 0.2  # agreed words less probable than this wait (see agreement.LocalAgreement)


@dataclass
class DecodeRequest:
    kind: str  # "partial" | "final"
    utterance: int
    audio: np.ndarray  # int16 samples
    offset: float  # stream time of audio[0]
    prompt: str
    language: str | None
    task: str
    speech_end: float | None  # last voiced time, for phantom filtering
    early: bool = False  # a final decode started during the hangover (see the module docstring)
    hotwords: str = ""  # course terms the decoder should expect (the room's slides and glossary), best first

    @property
    def end(self) -> float:
        return self.offset + len(self.audio) / SAMPLE_RATE


@dataclass
class _Utterance:
    id: int
    offset: float
    chunks: list[np.ndarray] = field(default_factory=list)
    samples: int = 0
    decoded_samples: int = 0
    speech_end: float | None = None
    agreement: LocalAgreement = field(default_factory=LocalAgreement)
    shown: str = ""  # last partial text sent, to skip repeats
    hyp_end: float = 0.0  # stream time up to which the latest applied hypothesis heard the audio
    early_asked: float | None = None  # voiced end at which an early final was requested (once per pause)
    early: tuple[float, list[HypWord]] | None = None  # an early final's voiced end and words

    def early_words(self) -> list[HypWord] | None:
        """The early final's words if it heard all of the ended utterance's speech (no speech after it)."""
        if self.early is None or self.speech_end is None or abs(self.early[0] - self.speech_end) > 1e-6:
            return None
        return self.early[1]

    def audio(self) -> np.ndarray:
        if len(self.chunks) > 1:
            self.chunks = [np.concatenate(self.chunks)]
        return self.chunks[0] if self.chunks else np.zeros(0, np.int16)

    def append(self, samples: np.ndarray) -> None:
        self.chunks.append(samples)
        self.samples += len(samples)

    def trim_before(self, t: float) -> None:
        cut = max(0, min(self.samples, int(round((t - self.offset) * SAMPLE_RATE))))
        audio = self.audio()[cut:]
        self.chunks, self.samples = [audio], len(audio)
        self.offset += cut / SAMPLE_RATE
        self.decoded_samples = max(0, self.decoded_samples - cut)

    @property
    def duration(self) -> float:
        return self.samples / SAMPLE_RATE


class LectureStream:
    def __init__(self, segmenter: Segmenter, options: Start, config: StreamConfig | None = None,
                 t0: float = 0.0):
        self.segmenter = segmenter
        self.options = options
        self.config = config or StreamConfig()
        self.language = options.language
        self.t0 = t0  # lecture time at which this stream's audio begins (a restart after stop continues the clock)
        self.received_s = t0
        self._dc = DCBlocker()
        self.stopped = False
        self._next_utterance = 0
        self._current: _Utterance | None = None
        self._ended: deque[_Utterance] = deque()
        self._history: list[str] = []  # recent final texts, for the prompt
        self.hotwords = ""  # course terms for the decoder, set by the room as its slides change
        self._hint_words: frozenset[str] = frozenset()  # the words of hotwords and prompt, for the echo guard
        self._hint_source = ("", "")
        self._covered = 0.0  # stream time up to which results have been produced
        self.finals = 0
        self.partials = 0

    # ---------------------------------------------------------------- audio in

    def feed(self, pcm: bytes) -> list[Event]:
        self.received_s += len(pcm) / 2 / SAMPLE_RATE
        return self._apply(self.segmenter.feed(self._dc(pcm)))

    def stop(self) -> list[Event]:
        """End of stream: close the open utterance so its audio still gets a final decode."""
        self.stopped = True
        return self._apply(self.segmenter.flush())

    def _apply(self, vad_events: list) -> list[Event]:
        out: list[Event] = []
        for ev in vad_events:
            if isinstance(ev, SpeechStart):
                self._current = self._new_utterance(ev.t + self.t0)
            elif isinstance(ev, SpeechAudio) and self._current is not None:
                self._current.append(pcm_to_int16(ev.pcm))
            elif isinstance(ev, SpeechEnd) and self._current is not None:
                utt, self._current = self._current, None
                utt.speech_end = ev.t + self.t0
                if ev.discarded and not utt.agreement.committed:
                    if utt.shown:
                        out.append(Partial(utt.id, round(utt.offset, 3), "", "", round(ev.t + self.t0, 3)))
                    continue
                agreed = utt.agreement.committed and not utt.agreement.unstable
                if not self._ended and (utt.early_words() is not None
                                        or agreed and utt.hyp_end >= utt.speech_end + 0.1):
                    # An early final heard all of it, or two decodes that heard the whole utterance agreed on all
                    # of it: the final is out now (unless an earlier final is still owed: order first).
                    out += self._finalize(utt, utt.agreement.finish(utt.early_words() or []), self.language)
                    continue
                self._ended.append(utt)
        if self._current is not None:
            utt = self._current
            hard_cap = self.config.max_utterance_s + 8.0
            if utt.duration > hard_cap and not utt.agreement.committed:
                # Nothing agrees for far too long (noise, music): finish it as an utterance of its own.
                utt.speech_end = utt.offset + utt.duration
                self._ended.append(utt)
                self._current = self._new_utterance(utt.offset + utt.duration)
        return out

    def _new_utterance(self, offset: float) -> _Utterance:
        return _Utterance(self._take_id(), offset, agreement=LocalAgreement(self.config.commit_min_prob))

    def _take_id(self) -> int:
        self._next_utterance += 1
        return self._next_utterance - 1

    # ---------------------------------------------------------------- decode scheduling

    @property
    def lag_s(self) -> float:
        """How far results trail the audio received (0 when there is nothing to decode)."""
        if self._current is None and not self._ended:
            return 0.0
        oldest = self._ended[0].offset if self._ended else self._current.offset  # type: ignore[union-attr]
        return max(0.0, self.received_s - max(self._covered, oldest))

    @property
    def pending_finals(self) -> int:
        return len(self._ended)

    @property
    def idle(self) -> bool:
        """Nothing left to decode: after stop(), the lecture's captions are complete."""
        return not self._ended and (self._current is None or self.stopped)

    def wants_final(self) -> bool:
        return bool(self._ended) or self._early_due()

    def _voiced_end(self) -> float:
        return self.segmenter.last_voiced_end + self.t0

    def _early_due(self) -> bool:
        utt = self._current
        return (utt is not None and self.config.early_final_s > 0 and utt.early_asked != self._voiced_end()
                and self.segmenter.trailing_silence_s >= self.config.early_final_s)

    def wants_partial(self) -> bool:
        utt = self._current
        if utt is None or self.stopped or self.lag_s > self.config.max_lag_s:
            return False
        if utt.early_asked == self._voiced_end():
            return False  # nothing voiced since the early final: a partial of the pause would tell nothing new
        new = (utt.samples - utt.decoded_samples) / SAMPLE_RATE
        return new >= self.config.partial_interval_s

    def next_request(self) -> DecodeRequest | None:
        if self._ended:
            utt = self._ended[0]
            return self._request("final", utt)
        if self._early_due():
            utt = self._current
            assert utt is not None
            utt.early_asked = self._voiced_end()
            utt.decoded_samples = utt.samples
            req = self._request("final", utt)
            req.speech_end, req.early = utt.early_asked, True
            return req
        if self.wants_partial():
            utt = self._current
            assert utt is not None
            utt.decoded_samples = utt.samples
            return self._request("partial", utt)
        return None

    def _request(self, kind: str, utt: _Utterance) -> DecodeRequest:
        prompt = " ".join(x for x in (self.options.prompt, self._recent_text()) if x)
        # No copy: the buffer is never written in place (appends and trims make new arrays).
        return DecodeRequest(kind, utt.id, utt.audio(), utt.offset, prompt, self.language, self.options.task,
                             utt.speech_end, hotwords=self.hotwords)

    def hint_words(self, req: DecodeRequest) -> frozenset[str]:
        """The words the decoder was told to expect in `req` (cached while the hints stay the same)."""
        if self._hint_source != (req.hotwords, req.prompt):
            self._hint_source = (req.hotwords, req.prompt)
            self._hint_words = prompt_words(req.hotwords, req.prompt)
        return self._hint_words

    def _recent_text(self) -> str:
        text = " ".join(self._history)
        return text[-self.config.prompt_chars:].lstrip() if self.config.prompt_chars > 0 else ""

    # ---------------------------------------------------------------- results

    def on_result(self, req: DecodeRequest, segments: list[Segment], language: str | None = None) -> list[Event]:
        """Apply one decode. Results for utterances that ended or were dropped meanwhile are ignored."""
        self._covered = max(self._covered, req.end)
        words = [_shift(w, req.offset) for w in clean(segments, _rel(req.speech_end, req.offset),
                                                                  self.hint_words(req))]
        if req.kind == "final" and language and self.options.language is None:
            self.language = language
        if req.early:
            return self._on_early(req, segments, words, language)
        if req.kind == "final":
            if not self._ended or self._ended[0].id != req.utterance:
                return []
            utt = self._ended.popleft()
            return self._finalize(utt, utt.agreement.finish(words), language or self.language) + self._ready()
        return self._on_partial(req, segments, words, language)

    def _on_early(self, req: DecodeRequest, segments: list[Segment], words: list[HypWord],
                  language: str | None) -> list[Event]:
        """An early final: the final of an utterance that has ended since, or a hypothesis of one still open."""
        utt = self._current
        if utt is not None and utt.id == req.utterance:
            out = self._on_partial(req, segments, words, language)
            if utt.id == req.utterance and req.speech_end is not None:  # not cut meanwhile (its words would repeat)
                utt.early = (req.speech_end, words)
            return out
        for ended in self._ended:
            if ended.id == req.utterance:
                ended.early = (req.speech_end or 0.0, words)
        return self._ready()

    def _ready(self) -> list[Event]:
        """Finals owed in order whose early finals heard all of their speech: out without a decode."""
        out: list[Event] = []
        while self._ended and (words := self._ended[0].early_words()) is not None:
            utt = self._ended.popleft()
            out += self._finalize(utt, utt.agreement.finish(words), self.language)
        return out

    def _on_partial(self, req: DecodeRequest, segments: list[Segment], words: list[HypWord],
                    language: str | None) -> list[Event]:
        utt = self._current
        if utt is None or utt.id != req.utterance:
            return []
        if has_loop(segments):
            # A degenerate decode (a repetition loop) says nothing about what is stable: wait for the next one.
            return []
        self.partials += 1
        utt.agreement.update(words)
        utt.hyp_end = req.end
        out: list[Event] = []
        if utt.duration >= self.config.max_utterance_s and utt.agreement.committed:
            committed = utt.agreement.cut()
            out += self._finalize(utt, committed, language or self.language, keep_open=True)
            utt.trim_before(committed[-1].end)
            utt.early = None
        committed, unstable = join_words(utt.agreement.committed), join_words(utt.agreement.unstable)
        shown = committed + "\x00" + unstable if committed or unstable else ""
        if shown != utt.shown:
            utt.shown = shown
            out.append(Partial(utt.id, round(utt.offset, 3), committed, unstable, round(req.end, 3)))
        return out

    def _finalize(self, utt: _Utterance, words: list[HypWord], language: str | None,
                  keep_open: bool = False) -> list[Event]:
        out: list[Event] = []
        if words:
            text = join_words(words)
            self._history.append(text)
            del self._history[:-8]
            self.finals += 1
            out.append(Final(UNNUMBERED, utt.id, round(words[0].start, 3), round(words[-1].end, 3), text, language,
                             [Word(w.text, round(w.start, 3), round(w.end, 3), round(w.prob, 3)) for w in words]))
        elif utt.shown:
            out.append(Partial(utt.id, round(utt.offset, 3), "", "", round(utt.offset + utt.duration, 3)))
            utt.shown = ""
        if keep_open:
            utt.id = self._take_id()
            utt.shown = ""
        return out


def _shift(w: HypWord, offset: float) -> HypWord:
    return HypWord(w.text, w.start + offset, w.end + offset, w.prob)


def _rel(t: float | None, offset: float) -> float | None:
    return None if t is None else t - offset
