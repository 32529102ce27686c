"""Turns and items of the OpenAI Realtime transcription session (the half of `oai_realtime` that follows the audio;
split off to keep modules small). Sans-I/O: fed VAD turns, our partials and finals, the lecture's count of finals
still owed; returns OpenAI server events as dicts.

Why the count: an utterance whose final decode finds no words, or that the VAD drops, produces no final, yet its
item must still complete. The lecture queues ended utterances in order (`LectureStream.pending_finals`), one per
ended turn, so when fewer are owed than turns wait, the oldest waiting turns are done: they complete with the
words already sent (never different ones: a turn without a final committed nothing more).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from difflib import SequenceMatcher
from typing import Any

from realtime.core.audio import SAMPLE_RATE
from realtime.core.protocol import Final, Partial
from realtime.core.vad import Segmenter, SpeechAudio, SpeechEnd, SpeechStart

VadEvent = SpeechStart | SpeechAudio | SpeechEnd


class TurnSegmenter:
    """What `LectureStream` takes as its segmenter: the real VAD (`vad`), or, with turn detection off (None), one
    turn of all audio from the first sample after a commit to the next commit. `on_turn(start: bool, t, discarded)`
    hears of every turn start and end in stream order, before the lecture acts on them. `end_turn` asks for the
    open turn to end at the next `feed` (a commit; `discard`: a clear, whose uncommitted audio is dropped)."""

    def __init__(self, vad: Segmenter | None, on_turn: Callable[[bool, float, bool], None], offset_s: float = 0.0):
        self.vad = vad
        self.on_turn = on_turn
        self.offset = offset_s  # stream time at which this segmenter begins (one replaced mid-stream goes on)
        self._end: bool | None = None  # an end requested: discard?
        self._samples = round(offset_s * SAMPLE_RATE)  # manual mode: stream time in samples
        self._open_at: int | None = None  # manual mode: where the open turn began

    @property
    def in_speech(self) -> bool:
        return self.vad.in_speech if self.vad is not None else self._open_at is not None

    @property
    def open_s(self) -> float:
        """Audio in the open turn so far (0 when none is open)."""
        if self.vad is not None:
            return 1.0 if self.vad.in_speech else 0.0  # a VAD turn holds at least its onset
        return 0.0 if self._open_at is None else (self._samples - self._open_at) / SAMPLE_RATE

    @property
    def last_voiced_end(self) -> float:
        return self.vad.last_voiced_end + self.offset if self.vad is not None else self._samples / SAMPLE_RATE

    @property
    def trailing_silence_s(self) -> float:
        return self.vad.trailing_silence_s if self.vad is not None else 0.0

    def end_turn(self, discard: bool = False) -> None:
        self._end = discard

    def feed(self, pcm: bytes) -> list[VadEvent]:
        events: list[VadEvent] = []
        if self._end is not None:
            discard, self._end = self._end, None
            events += self._tell(self._close(discard), discard)
        if self.vad is not None:
            return events + self._tell(self._shift(self.vad.feed(pcm)))
        if pcm:
            t, new = self._samples / SAMPLE_RATE, []
            if self._open_at is None:
                self._open_at = self._samples
                new.append(SpeechStart(t))
            new.append(SpeechAudio(pcm, t))
            self._samples += len(pcm) // 2
            events += self._tell(new)
        return events

    def flush(self) -> list[VadEvent]:
        return self._tell(self._close(False))

    def _shift(self, events: list[VadEvent]) -> list[VadEvent]:
        return [replace(e, t=e.t + self.offset) for e in events] if self.offset else events

    def _close(self, discard: bool) -> list[VadEvent]:
        if self.vad is not None:
            if not self.vad.in_speech:
                return []
            events = self._shift(self.vad.flush())
            return [replace(e, discarded=True) if discard and isinstance(e, SpeechEnd) else e for e in events]
        if self._open_at is None:
            return []
        voiced = (self._samples - self._open_at) / SAMPLE_RATE
        self._open_at = None
        return [SpeechEnd(self._samples / SAMPLE_RATE, voiced, discard)]

    def _tell(self, events: list[VadEvent], cleared: bool = False) -> list[VadEvent]:
        """Report turn starts and ends; `cleared`: this end is a client's clear (the VAD's own discards of clicks
        and coughs are ordinary ends to the client: the item completes empty)."""
        for e in events:
            if isinstance(e, SpeechStart):
                self.on_turn(True, e.t, False)
            elif isinstance(e, SpeechEnd):
                self.on_turn(False, e.t, cleared)
        return events


@dataclass
class Turn:
    """One item: a VAD turn (or the audio between commits) and the words it has sent."""

    item_id: str
    previous: str | None
    start: float  # lecture time
    ended: bool = False
    base: str = ""  # the finals of cut-off parts of this turn, joined
    committed: str = ""  # the committed words of its open utterance
    sent: str = ""  # the deltas sent, joined
    end: float | None = None
    utterances: set[int] = field(default_factory=set)

    def text(self, tail: str) -> str:
        return f"{self.base} {tail}" if self.base and tail else self.base or tail


class Transcription:
    """Items of one session. `t0`: the lecture time at which the session's audio begins (the room's clock), so turn
    times (session audio) and our events' times (lecture) can be matched."""

    def __init__(self, prefix: str, t0: float = 0.0, logprobs: bool = False):
        self.prefix = prefix
        self.t0 = t0
        self.logprobs = logprobs
        self.turns: list[Turn] = []  # not yet completed, in order
        self._items = 0
        self._events = 0
        self._last_item: str | None = None
        self._by_utt: dict[int, Turn] = {}
        self.completed = 0

    def event_id(self) -> str:
        self._events += 1
        return f"event_{self.prefix}{self._events:06d}"

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        return {"type": kind, "event_id": self.event_id(), **fields}

    def turn_start(self, t: float) -> list[dict[str, Any]]:
        self._items += 1
        turn = Turn(f"item_{self.prefix}{self._items:04d}", self._last_item, t + self.t0)
        self._last_item = turn.item_id
        self.turns.append(turn)
        return [self._event("input_audio_buffer.speech_started", audio_start_ms=int(round(t * 1000)),
                            item_id=turn.item_id)]

    def turn_end(self, t: float) -> list[dict[str, Any]]:
        open_turns = [x for x in self.turns if not x.ended]
        if not open_turns:
            return []
        turn = open_turns[-1]
        turn.ended, turn.end = True, t + self.t0
        return [self._event("input_audio_buffer.speech_stopped", audio_end_ms=int(round(t * 1000)),
                            item_id=turn.item_id),
                self._event("input_audio_buffer.committed", item_id=turn.item_id, previous_item_id=turn.previous)]

    def turn_cleared(self, t: float) -> list[dict[str, Any]]:
        """A client's clear: an open turn that sent no words disappears (it was never committed); one that did is
        ended as usual, since its committed words will still come as its final."""
        open_turns = [x for x in self.turns if not x.ended]
        if open_turns and not open_turns[-1].sent:
            self.turns.remove(open_turns[-1])
            self._last_item = open_turns[-1].previous
            return []
        return self.turn_end(t)

    def _turn_of(self, utterance: int, start: float, end: float) -> Turn | None:
        """The turn an utterance belongs to: the one its time span overlaps most. Not simply the last turn begun
        before its start: Whisper may time a first word a little before the VAD's onset, and a short turn's final
        would then go to the turn before (already completed) and be lost."""
        turn = self._by_utt.get(utterance)
        if turn is None:
            end = max(end, start)
            begun = [x for x in self.turns if x.start <= end + 1e-3]
            if begun:
                def overlap(x: Turn) -> float:
                    return min(end, x.end if x.end is not None else math.inf) - max(start, x.start)
                turn = max(reversed(begun), key=overlap)  # ties: the latest
            else:
                turn = self.turns[0] if self.turns else None
            if turn is not None:
                turn.utterances.add(utterance)
                self._by_utt[utterance] = turn
        return turn

    def _delta(self, turn: Turn, text: str, words: list | None = None, final: bool = False) -> list[dict[str, Any]]:
        delta = extension(turn.sent, text, final)
        if not delta:
            return []
        turn.sent += delta
        event = self._event("conversation.item.input_audio_transcription.delta", item_id=turn.item_id,
                            content_index=0, delta=delta)
        if self.logprobs and words is not None:
            event["logprobs"] = words
        return [event]

    def partial(self, p: Partial) -> list[dict[str, Any]]:
        turn = self._turn_of(p.utterance, p.start, p.end)
        if turn is None or turn not in self.turns or not p.committed:
            return []
        turn.committed = p.committed
        return self._delta(turn, turn.text(p.committed))

    def final(self, f: Final) -> list[dict[str, Any]]:
        """A final: the end of its turn once the turn has ended, else a cut-off part of it (a long turn)."""
        turn = self._turn_of(f.utterance, f.start, f.end)
        if turn is None or turn not in self.turns:
            return []  # its item completed already (a stray: documented as not expected)
        out: list[dict[str, Any]] = []
        if turn.ended and f.utterance == max(turn.utterances):
            index = self.turns.index(turn)
            for older in self.turns[:index]:
                if older.ended:
                    out += self._complete(older, older.text(older.committed), [])
            out += self._complete(turn, turn.text(f.text), f.words)
            return out
        turn.base, turn.committed = turn.text(f.text), ""
        return self._delta(turn, turn.base)

    def settle(self, owed: int) -> list[dict[str, Any]]:
        """`owed`: finals the lecture still owes. Ended turns beyond that many never get one: complete them."""
        ended = [x for x in self.turns if x.ended]
        out: list[dict[str, Any]] = []
        for turn in ended[:max(0, len(ended) - owed)]:
            out += self._complete(turn, turn.text(turn.committed), [])
        return out

    def fail_open(self, code: str, message: str) -> list[dict[str, Any]]:
        """Every item not completed gets `failed` (the stream ended abnormally: server full, lecture too long)."""
        out = [self._event("conversation.item.input_audio_transcription.failed", item_id=t.item_id,
                           content_index=0, error={"type": "server_error", "code": code, "message": message,
                                                   "param": None}) for t in self.turns]
        self.turns.clear()
        return out

    def _complete(self, turn: Turn, text: str, words: list) -> list[dict[str, Any]]:
        # Append-only: what was sent stays; a final that does not extend it (LocalAgreement rules it out) keeps
        # the streamed words, so deltas joined == transcript always.
        out = self._delta(turn, text, _logprobs(words[len(turn.sent.split()):]) if words else [], final=True)
        transcript = turn.sent
        seconds = max(0.0, (turn.end or turn.start) - turn.start)
        event = self._event("conversation.item.input_audio_transcription.completed", item_id=turn.item_id,
                            content_index=0, transcript=transcript,
                            usage={"type": "duration", "seconds": round(seconds, 3)})
        if self.logprobs:
            event["logprobs"] = _logprobs(words)
        self.turns.remove(turn)
        self.completed += 1
        return out + [event]


_PUNCT = re.compile(r"[^\w\s]+$")
_TRAILING = ",.;:!?…。，、；：！？\"')]}»”’"
_SENTENCE_END = re.compile(r"^[.!?。！？]+")


def _skeleton(text: str) -> str:
    return "".join(c for c in text.casefold() if c.isalnum())


def extension(sent: str, text: str, final: bool) -> str:
    """What `text` (an utterance's committed words so far, or its final when `final`) adds to the deltas `sent`,
    append-only, or "" when it adds nothing or does not extend them.

    Punctuation is where committed words and finals disagree: a word committed from one hypothesis keeps that
    hypothesis's "behind." even once the sentence went on ("behind. by 25 years"), and a final may differ from
    the committed words in case or punctuation only. So the two are compared on letters and digits alone, the
    punctuation after the last word is held back until the next word (or the final) shows it, and a sentence end
    followed by a lower-case word is dropped. A final that differs from the sent words in a word or two (the
    beam-5 decode against the committed greedy words) is aligned to them, and what it has after their last shared
    word is appended, so the utterance's last words are not lost."""
    rest = _after_prefix(sent, text)
    if rest is None and final:
        rest = _after_alignment(sent, text)  # the final differs in a word: go on after the words it shares
    if rest is None:
        return _closing(sent, text) if final else ""  # not an extension: the streamed words stand
    if not final:
        rest = _PUNCT.sub("", rest)
    lead = rest[:len(rest) - len(rest.lstrip(",.;:!?…。，、；：！？ "))]
    body = rest[len(lead):]
    if body[:1].islower() and _SENTENCE_END.match(lead) and "." not in sent.rsplit(" ", 1)[-1]:
        lead = " " + lead.lstrip(".!?。！？").lstrip()
    if not sent:
        lead = lead.lstrip()
    return lead + body if body or final else ""


def _after_prefix(sent: str, text: str) -> str | None:
    """The rest of `text` after `sent`, compared on letters and digits; None when `sent` is not its prefix, or
    ends inside one of its words ("behind" against "behindhand")."""
    skeleton = _skeleton(sent)
    at, seen = 0, 0
    while seen < len(skeleton) and at < len(text):
        if text[at].isalnum():
            if text[at].casefold()[0] != skeleton[seen]:
                return None
            seen += len(text[at].casefold())
        at += 1
    if seen < len(skeleton):
        return None
    rest = text[at:]
    if rest[:1].isalnum() and sent[-1:].isalnum() and " " in text:
        return None
    return rest


def _after_alignment(sent: str, text: str) -> str | None:
    """The rest of `text` after the part that `sent` covers, by aligning their words (characters in scripts
    written without spaces); None when they share less than half of `sent`."""
    spaced = " " in text.strip() or " " in sent.strip()
    pattern = r"\S+" if spaced else r"\w"
    units = [(m.end() - len(m.group()) + len(m.group().rstrip(_TRAILING)), _skeleton(m.group()))
             for m in re.finditer(pattern, text)]  # each unit's end before its trailing punctuation
    units = [(end, u) for end, u in units if u]
    mine = [u for u in (_skeleton(m.group()) for m in re.finditer(pattern, sent)) if u]
    if not mine:
        return None
    matcher = SequenceMatcher(None, mine, [u for _, u in units], autojunk=False)
    blocks = [b for b in matcher.get_matching_blocks() if b.size]
    if sum(b.size for b in blocks) * 2 < len(mine):
        return None
    last = blocks[-1]
    skip = last.b + last.size + (len(mine) - last.a - last.size)  # as many units as `sent` has past the match
    return text[units[min(skip, len(units)) - 1][0]:] if skip else text


def _closing(sent: str, text: str) -> str:
    """A final that does not extend the streamed words still closes their sentence with its last punctuation."""
    end = _PUNCT.search(text.rstrip())
    return end.group(0) if end and sent and not _PUNCT.search(sent) else ""


def _logprobs(words: list) -> list[dict[str, Any]]:
    """Word-level log probabilities (faster-whisper's word probabilities; Whisper's per-token ones are not kept by
    our decoder): one entry per word, `token` the word as it appears in the transcript."""
    out = []
    for i, w in enumerate(words):
        token = w.w if i == 0 else " " + w.w
        out.append({"token": token, "bytes": list(token.encode()), "logprob": round(math.log(max(w.p, 1e-6)), 4)})
    return out
